"""A two-process gloo group on the CPU: the reduction helpers of ``utils.distributed``, and
``MultiBoxLoss(sync_positives=True)``, whose update equals one process's on the whole batch.

Each process takes half of a batch whose halves hold very different object counts, computes the criterion, and
backpropagates. DistributedDataParallel would average the gradients over the processes; the test does that average
by hand and compares it, and the mean of the logged losses, with the criterion run on the whole batch in one process.
"""
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from utils.box import PriorBox
from utils.distributed import (
    DistributedContext,
    StoppedByAnotherProcess,
    all_reduce_max,
    all_reduce_mean,
    any_process,
    raise_if_any_process_failed,
    resolve_device,
)
from utils.loss import MultiBoxLoss

WORLD_SIZE = 2
NUM_CLASSES = 3
OBJECTS_PER_IMAGE = (1, 2, 9, 0)  # process 0: images 0-1 (3 objects), process 1: images 2-3 (9 objects)


def make_batch(num_anchors: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``loc [4, A, 4]``, ``conf [4, A, 3]`` and targets (x1, y1, x2, y2 normalised, class), fixed by a seed."""
    generator = torch.Generator().manual_seed(7)
    loc = 0.3 * torch.randn(len(OBJECTS_PER_IMAGE), num_anchors, 4, generator=generator)
    conf = torch.randn(len(OBJECTS_PER_IMAGE), num_anchors, NUM_CLASSES, generator=generator) - 2.0
    targets = []
    for count in OBJECTS_PER_IMAGE:
        corner = 0.6 * torch.rand(count, 2, generator=generator)
        extent = 0.1 + 0.3 * torch.rand(count, 2, generator=generator)
        labels = torch.randint(0, NUM_CLASSES, (count, 1), generator=generator).float()
        targets.append(torch.cat([corner, corner + extent, labels], dim=1))
    return loc, conf, targets


def criterion_and_gradients(loss_fn: MultiBoxLoss, loc, conf, targets, priors):
    """``(loss_l, loss_c, d(loss_l + loss_c)/d loc, d(...)/d conf)`` for the given images."""
    loc, conf = loc.clone().requires_grad_(), conf.clone().requires_grad_()
    loss_l, loss_c = loss_fn((loc, conf), priors, targets)
    (loss_l + loss_c).backward()
    return loss_l.detach(), loss_c.detach(), loc.grad, conf.grad


def run_process(rank: int, init_file: str, out_dir: str, mutual_guide: bool) -> None:
    """Criterion and gradients of this process's two images, with and without ``sync_positives``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        priors = PriorBox(size=128).forward()
        loc, conf, targets = make_batch(priors.shape[0])
        mine = slice(2 * rank, 2 * rank + 2)
        for sync_positives in (True, False):
            loss_fn = MultiBoxLoss(NUM_CLASSES, mutual_guide=mutual_guide, sync_positives=sync_positives)
            result = criterion_and_gradients(loss_fn, loc[mine], conf[mine], targets[mine], priors)
            torch.save(result, Path(out_dir) / f"sync{int(sync_positives)}_rank{rank}.pt")
        ctx = DistributedContext(rank=rank, world_size=WORLD_SIZE)
        mean = all_reduce_mean(torch.tensor([rank + 1.0, 10.0 * rank]), ctx)
        largest = all_reduce_max(torch.tensor([rank, 5 - rank]), ctx)
        torch.save((mean, largest), Path(out_dir) / f"reduced_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("mutual_guide", [False, True], ids=["iou", "mg"])
def test_two_processes_update_like_one_process_holding_the_whole_batch(tmp_path, mutual_guide):
    mp.spawn(run_process, args=(str(tmp_path / "init"), str(tmp_path), mutual_guide), nprocs=WORLD_SIZE, join=True)

    def per_process(sync_positives: bool) -> list[tuple[torch.Tensor, ...]]:
        names = [f"sync{int(sync_positives)}_rank{rank}.pt" for rank in range(WORLD_SIZE)]
        return [torch.load(tmp_path / name, weights_only=True) for name in names]

    priors = PriorBox(size=128).forward()
    loc, conf, targets = make_batch(priors.shape[0])
    whole = criterion_and_gradients(MultiBoxLoss(NUM_CLASSES, mutual_guide=mutual_guide), loc, conf, targets, priors)

    def as_ddp(results):
        """What DDP logs and applies: the losses and the gradients averaged over the processes, images in order."""
        losses = [sum(r[i] for r in results) / WORLD_SIZE for i in (0, 1)]
        grads = [torch.cat([r[i] for r in results]) / WORLD_SIZE for i in (2, 3)]
        return losses + grads

    for rank in range(WORLD_SIZE):  # logged losses are means over the processes; the stop flag is their maximum
        mean, largest = torch.load(tmp_path / f"reduced_rank{rank}.pt", weights_only=True)
        assert mean.tolist() == [1.5, 5.0] and largest.tolist() == [1, 5]

    synced = as_ddp(per_process(sync_positives=True))
    for got, expected in zip(synced, whole):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-9)

    local = as_ddp(per_process(sync_positives=False))  # each process by its own positives: another update
    assert not torch.allclose(local[1], whole[1], rtol=1e-2)
    assert not torch.allclose(local[3], whole[3], rtol=1e-2)


def test_without_a_process_group_sync_positives_changes_nothing():
    priors = PriorBox(size=128).forward()
    loc, conf, targets = make_batch(priors.shape[0])
    for mutual_guide in (False, True):
        plain = MultiBoxLoss(NUM_CLASSES, mutual_guide=mutual_guide)((loc, conf), priors, targets)
        synced = MultiBoxLoss(NUM_CLASSES, mutual_guide=mutual_guide, sync_positives=True)((loc, conf), priors, targets)
        assert torch.equal(plain[0], synced[0]) and torch.equal(plain[1], synced[1])


def test_synced_counts_are_clamped_at_one_like_a_single_process(tmp_path):
    """In a one-process group the synced criterion is the plain one, also where the global batch has no positive (the
    counts are clamped at 1: a zero box loss and the plain background sum, not 0/0) or exactly one (the forced anchor
    of a 0.02 x 0.02 object)."""
    priors = PriorBox(size=128).forward()
    loc, conf, _ = make_batch(priors.shape[0])
    batches = [[torch.zeros(0, 5)] * 4,
               [torch.tensor([[0.31, 0.52, 0.33, 0.54, 1.0]])] + [torch.zeros(0, 5)] * 3]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        for targets, positives in zip(batches, (0, 1)):
            plain = MultiBoxLoss(NUM_CLASSES)((loc, conf), priors, targets, with_stats=True)
            synced = MultiBoxLoss(NUM_CLASSES, sync_positives=True)((loc, conf), priors, targets)
            assert plain[2]["num_pos_cls"].item() == plain[2]["num_pos_reg"].item() == positives
            assert torch.equal(plain[0], synced[0]) and torch.equal(plain[1], synced[1])
            assert (synced[0].item() == 0.0) == (positives == 0) and torch.isfinite(synced[1])
    finally:
        dist.destroy_process_group()


def test_any_process_agrees_on_a_flag_and_a_lost_process_is_one_line(monkeypatch):
    """Without a process group the flag is its own answer; with one, the all-reduce's maximum; a peer that has gone
    (gloo raises RuntimeError on the closed connection) becomes StoppedByAnotherProcess, which main.py prints."""
    assert any_process(True, DistributedContext()) is True and any_process(False, DistributedContext()) is False
    two = DistributedContext(rank=0, world_size=2)

    def peer_says_yes(tensor, op, group):
        assert op == dist.ReduceOp.MAX and tensor.device.type == "cpu"  # a host integer: no GPU sync
        tensor.fill_(1)

    monkeypatch.setattr(dist, "all_reduce", peer_says_yes)
    assert any_process(False, two) is True

    def connection_closed(tensor, op, group):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer")

    monkeypatch.setattr(dist, "all_reduce", connection_closed)
    with pytest.raises(StoppedByAnotherProcess, match=r"^another process stopped \(its message, or torchrun's summary"):
        any_process(False, two)


def test_a_failure_on_any_process_is_raised_on_every_process(monkeypatch):
    """Each process raises its own failure; one whose share went well raises ``elsewhere()`` when a peer failed, and
    returns when none did (the all-reduce says whether any process failed)."""
    own, elsewhere = ValueError("my image"), (lambda: RuntimeError("a peer's image"))
    alone = DistributedContext()
    assert raise_if_any_process_failed(None, alone, elsewhere) is None
    with pytest.raises(ValueError, match="my image"):
        raise_if_any_process_failed(own, alone, elsewhere)
    two = DistributedContext(rank=1, world_size=2)
    peer_failed = [0]
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op, group: tensor.clamp_(min=peer_failed[0]))
    assert raise_if_any_process_failed(None, two, elsewhere) is None
    with pytest.raises(ValueError, match="my image"):
        raise_if_any_process_failed(own, two, elsewhere)
    peer_failed[0] = 1
    with pytest.raises(RuntimeError, match="a peer's image"):
        raise_if_any_process_failed(None, two, elsewhere)


@pytest.mark.parametrize("requested", ["auto", "cuda"])
def test_more_torchrun_processes_than_gpus_is_refused_naming_nproc_per_node(monkeypatch, requested):
    """torchrun --nproc_per_node 2 on a one-GPU machine: process 1 takes cuda:1, which is not there. The refusal said
    '--device cuda: this machine has 1 CUDA device(s), numbered from cuda:0' (also for --device auto, which the user
    never wrote as cuda), not that the machine runs more processes than it has GPUs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    assert resolve_device(requested, local_rank=0) == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"^torchrun started process LOCAL_RANK 1 on this machine, which has 1 CUDA "
                                         r"device\(s\): each process takes the GPU of its LOCAL_RANK, so start at most "
                                         r"1 process per machine \(--nproc_per_node 1\)$"):
        resolve_device(requested, local_rank=1)
    with pytest.raises(ValueError, match=r"^--device cuda:1: this machine has 1 CUDA device\(s\), numbered from "
                                         r"cuda:0$"):
        resolve_device("cuda:1", local_rank=0)  # an index given: the flag's own


def test_one_gpu_named_for_several_torchrun_processes_of_a_machine_is_refused(monkeypatch):
    """--device cuda:0 under torchrun --nproc_per_node 2 put both processes on cuda:0, which NCCL refuses at the first
    collective with a traceback ('Duplicate GPU detected'); one process per machine may name its GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    with pytest.raises(ValueError, match=r"^--device cuda:0 would put the 2 torchrun processes of this machine on one "
                                         r"GPU; use --device cuda \(or auto\): each process takes the GPU of its "
                                         r"LOCAL_RANK$"):
        resolve_device("cuda:0", local_rank=1, local_world_size=2)
    assert resolve_device("cuda:1", local_rank=0, local_world_size=1) == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=1, local_world_size=2) == torch.device("cuda", 1)
