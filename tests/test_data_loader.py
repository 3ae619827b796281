"""Collate, the training stream (sampler, per-epoch augmentation) and DataLoader construction: shapes, determinism,
resuming mid-run, sharding, empty targets, errors from workers."""
import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from data import DataError, build_dataset, build_loader, detection_collate
from data.loader import EpochSamples, ResumableBatchSampler, WorkerLoader, iterations_per_epoch
from tests.test_data_voc import write_voc_folder

NUM_IMAGES = 10


@pytest.fixture
def voc_root(tmp_path):
    samples = {f"{i:03d}": [("cat", (2 + i, 3, 30 + i, 40), 0), ("dog", (5, 6, 50, 44), 0)][: i % 3]
               for i in range(NUM_IMAGES)}
    held_out = {f"t{name}": objects for name, objects in samples.items()}  # the same objects, other images
    return write_voc_folder(tmp_path, samples | held_out, {"trainval": list(samples), "test": list(held_out)})


def train_set(root, seed=0):
    return build_dataset("voc", "train", 64, data_root=str(root), classes=["cat", "dog"], seed=seed)


def batches(loader):
    return [(images, list(targets), indices) for images, targets, indices in loader]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (images_a, targets_a, indices_a), (images_b, targets_b, indices_b) in zip(a, b):
        assert torch.equal(indices_a, indices_b) and torch.equal(images_a, images_b)
        assert all(torch.equal(x, y) for x, y in zip(targets_a, targets_b))


def test_collate_stacks_images_and_keeps_targets_as_a_list():
    batch = [(torch.zeros(3, 8, 8), torch.ones(2, 5), 4), (torch.ones(3, 8, 8), torch.zeros(0, 5), 1)]
    images, targets, indices = detection_collate(batch)
    assert images.shape == (2, 3, 8, 8) and images[1].sum() == 3 * 64
    assert [t.shape for t in targets] == [(2, 5), (0, 5)]
    assert indices.dtype == torch.int64 and indices.tolist() == [4, 1]


def test_iterations_per_epoch_drops_the_partial_batch_and_rejects_tiny_sets():
    assert iterations_per_epoch(16551, 32) == 517  # VOC07+12 (facts §6)
    assert iterations_per_epoch(100, 8, world_size=2) == 6
    with pytest.raises(ValueError, match="lower --batch_size"):
        iterations_per_epoch(20, 32)
    # counts in the singular where they are 1 ("1 images", "x 1 processes" before)
    with pytest.raises(ValueError, match=r"^the training set has 1 image, fewer than one global batch of 2 "
                                         r"\(--batch_size 2 x 1 process\); lower --batch_size$"):
        iterations_per_epoch(1, 2)
    with pytest.raises(ValueError, match=r"^the training set has 3 images, fewer than one global batch of 4 "
                                         r"\(--batch_size 2 x 2 processes\); lower --batch_size$"):
        iterations_per_epoch(3, 2, world_size=2)


def test_sampler_epochs_are_permutations_without_the_remainder():
    batches = list(ResumableBatchSampler(10, 3, seed=0, start_iter=0, max_iter=6))
    assert len(batches) == 6 and all(len(b) == 3 for b in batches)
    for epoch in range(2):
        items = [item for batch in batches[3 * epoch: 3 * epoch + 3] for item in batch]
        indices = [index for index, _ in items]
        assert len(set(indices)) == 9 and set(indices) <= set(range(10))
        assert {e for _, e in items} == {epoch}
        assert indices == np.random.default_rng([0, epoch]).permutation(10)[:9].tolist()
    assert ([i for i, _ in batches[0]] != [i for i, _ in batches[3]]
            or [i for i, _ in batches[1]] != [i for i, _ in batches[4]])


def test_sampler_resumed_mid_epoch_replays_the_same_tail():
    full = list(ResumableBatchSampler(23, 4, seed=5, start_iter=0, max_iter=13))
    resumed = list(ResumableBatchSampler(23, 4, seed=5, start_iter=7, max_iter=13))
    assert resumed == full[7:]
    assert list(ResumableBatchSampler(23, 4, seed=6, start_iter=0, max_iter=13)) != full


def test_sampler_ranks_split_the_single_process_global_batch():
    single = list(ResumableBatchSampler(40, 4, seed=1, start_iter=0, max_iter=12))
    rank0 = list(ResumableBatchSampler(40, 2, seed=1, start_iter=0, max_iter=12, rank=0, world_size=2))
    rank1 = list(ResumableBatchSampler(40, 2, seed=1, start_iter=0, max_iter=12, rank=1, world_size=2))
    for whole, part0, part1 in zip(single, rank0, rank1):
        assert part0 == whole[0::2] and part1 == whole[1::2]


def test_epoch_samples_augment_with_the_dataset_seed_the_epoch_and_the_index(voc_root):
    dataset = train_set(voc_root, seed=3)
    image, target, index = EpochSamples(dataset)[(2, 1)]
    boxes, labels, _ = dataset.annotation(2)
    expected_image, expected_target = dataset.transform(dataset.load_image(2), boxes, labels,
                                                        np.random.default_rng((3, 1, 2)))
    assert index == 2
    assert torch.equal(image, torch.from_numpy(expected_image))
    assert torch.equal(target, torch.from_numpy(expected_target))
    assert not torch.equal(EpochSamples(dataset)[(2, 0)][0], image)  # another epoch, another augmentation
    assert torch.equal(dataset[2][0], EpochSamples(dataset)[(2, 0)][0])  # dataset[i] is epoch 0


def test_train_loader_drops_the_last_partial_batch_and_keeps_empty_images(voc_root):
    loader = build_loader(train_set(voc_root), 4, train=True, workers=0)
    epoch = list(loader)
    assert len(loader) == NUM_IMAGES // 4 == len(epoch)  # one epoch by default
    seen = torch.cat([indices for _, _, indices in epoch])
    assert len(set(seen.tolist())) == 8
    for images, targets, indices in epoch:
        assert images.shape == (4, 3, 64, 64)
        for target, index in zip(targets, indices.tolist()):
            if index % 3 == 0:  # written without objects
                assert target.shape == (0, 5)


def test_test_loader_keeps_order_and_every_image(voc_root):
    """Every image once, in order, unaugmented: targets are the XML boxes (image i holds i % 3 of cat (2 + i, 3,
    30 + i, 40) and dog (5, 6, 50, 44) in a 64 x 48 image) in the continuous frame, normalised."""
    dataset = build_dataset("voc", "test", 64, data_root=str(voc_root), classes=["cat", "dog"])
    loader = build_loader(dataset, 4, train=False, workers=0)
    batches = list(loader)
    assert [len(indices) for _, _, indices in batches] == [4, 4, 2]  # the last partial batch is kept
    assert torch.cat([indices for _, _, indices in batches]).tolist() == list(range(NUM_IMAGES))
    for images, targets, indices in batches:
        for image, target, index in zip(images, targets, indices.tolist()):
            assert torch.equal(image, dataset[index][0])
            xml = np.array([(2 + index, 3, 30 + index, 40, 0), (5, 6, 50, 44, 1)][: index % 3], np.float64)
            expected = (xml - [1, 1, 0, 0, 0]) / [64, 48, 64, 48, 1] if len(xml) else np.zeros((0, 5))
            np.testing.assert_allclose(target.numpy(), expected.reshape(-1, 5), rtol=1e-6)


def test_same_seed_same_batches_and_epochs_differ(voc_root):
    first = batches(build_loader(train_set(voc_root), 4, train=True, workers=0, seed=3, max_iter=4))
    second = batches(build_loader(train_set(voc_root), 4, train=True, workers=0, seed=3, max_iter=4))
    assert len(first) == 4
    assert_same_batches(first, second)
    epoch_0, epoch_1 = first[:2], first[2:]
    assert not torch.equal(torch.cat([b[2] for b in epoch_0]), torch.cat([b[2] for b in epoch_1]))
    other_seed = batches(build_loader(train_set(voc_root), 4, train=True, workers=0, seed=4, max_iter=4))
    assert not torch.equal(first[0][0], other_seed[0][0])


def test_workers_give_the_same_batches_as_the_main_process(voc_root):
    in_process = batches(build_loader(train_set(voc_root), 4, train=True, workers=0, seed=1, max_iter=4))
    loader = build_loader(train_set(voc_root), 4, train=True, workers=2, seed=1, max_iter=4)
    assert loader.num_workers == 2 and loader.pin_memory == torch.cuda.is_available()
    assert_same_batches(in_process, batches(loader))


def test_an_epoch_loop_over_a_loader_without_max_iter_sees_the_next_epoch_at_each_pass(voc_root):
    """``for epoch in range(E): for batch in loader`` (the usual PyTorch loop) walks the same stream as one loader of
    E epochs; ``batch_sampler.set_epoch`` picks an epoch; a start inside an epoch needs ``max_iter``."""
    whole_run = batches(build_loader(train_set(voc_root), 4, train=True, workers=0, seed=5, max_iter=6))  # 3 epochs
    per_epoch = build_loader(train_set(voc_root), 4, train=True, workers=0, seed=5)
    assert len(per_epoch) == 2
    assert_same_batches(whole_run, [batch for _ in range(3) for batch in batches(per_epoch)])
    per_epoch.batch_sampler.set_epoch(1)
    assert_same_batches(whole_run[2:4], batches(per_epoch))
    assert_same_batches(whole_run[4:6], batches(per_epoch))  # and on from there
    from_epoch_1 = build_loader(train_set(voc_root), 4, train=True, workers=0, seed=5, start_iter=2)
    assert_same_batches(whole_run[2:6], batches(from_epoch_1) + batches(from_epoch_1))
    with pytest.raises(ValueError, match="start_iter 3 is inside epoch 1 of 2 iterations: .* give max_iter"):
        build_loader(train_set(voc_root), 4, train=True, workers=0, start_iter=3)
    with pytest.raises(ValueError, match="set_epoch: this sampler yields iterations start_iter..max_iter-1"):
        build_loader(train_set(voc_root), 4, train=True, workers=0, max_iter=6).batch_sampler.set_epoch(1)
    assert build_loader(train_set(voc_root), 4, train=True, workers=1).persistent_workers  # kept between epochs


def test_a_loader_started_mid_run_replays_the_same_batches(voc_root):
    full = batches(build_loader(train_set(voc_root), 4, train=True, workers=0, seed=2, max_iter=6))
    resumed = build_loader(train_set(voc_root), 4, train=True, workers=0, seed=2, start_iter=3, max_iter=6)
    assert_same_batches(full[3:], batches(resumed))  # from the middle of epoch 1


def test_a_distributed_train_loader_takes_its_rank_share_of_the_global_batch(voc_root, monkeypatch):
    single = batches(build_loader(train_set(voc_root), 4, train=True, workers=0, seed=0, max_iter=2))
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    rank1 = batches(build_loader(train_set(voc_root), 2, train=True, workers=0, distributed=True, seed=0, max_iter=2))
    for (_, _, whole), (_, _, share) in zip(single, rank1):
        assert share.tolist() == whole[1::2].tolist()


def test_the_distributed_test_loaders_run_every_image_once_over_the_processes(voc_root, monkeypatch):
    """10 test images on 3 processes: shards of 4, 3 and 3 images, each image in one, in order within a shard. A
    DistributedSampler padded them to 4 each, running images 0 and 1 a second time: the evaluation's count of images
    the largest pre-NMS top-k left inexact, summed over the processes, counted those twice (under torchrun, "6 of 5
    test images" for 5 inexact images on 2 processes), and a data error in image 0 was reported by two processes."""
    dataset = build_dataset("voc", "test", 64, data_root=str(voc_root), classes=["cat", "dog"])
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 3)
    shards = []
    for rank in range(3):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda: rank)
        loader = build_loader(dataset, 2, train=False, workers=0, distributed=True)
        shards.append(torch.cat([indices for _, _, indices in loader]).tolist())
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def test_a_corrupt_image_in_a_worker_is_reported_with_its_file(voc_root):
    dataset = train_set(voc_root)
    path = voc_root / "JPEGImages" / "004.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated after the dataset was built
    loader = build_loader(dataset, 2, train=False, workers=1)
    with pytest.raises(DataError, match=r"004\.jpg: truncated JPEG"):
        list(loader)


def test_too_small_dataset_for_one_batch(voc_root):
    with pytest.raises(ValueError, match="fewer than one global batch of 32"):
        build_loader(train_set(voc_root), 32, train=True, workers=0)


def test_a_negative_index_counts_from_the_end_as_for_a_list(voc_root):
    """dataset[-1] failed in NumPy ("expected non-negative integer", the augmentation seed); out of range is an
    IndexError naming the size (which also ends a plain ``for item in dataset`` loop)."""
    dataset = build_dataset("voc", "test", 64, data_root=str(voc_root), classes=["cat", "dog"])
    image, target, index = dataset[-1]
    assert index == NUM_IMAGES - 1 and type(index) is int
    assert torch.equal(image, dataset[NUM_IMAGES - 1][0]) and torch.equal(target, dataset[NUM_IMAGES - 1][1])
    assert dataset[np.int64(2)][2] == 2 and dataset[torch.tensor(2)][2] == 2
    for bad in (NUM_IMAGES, -NUM_IMAGES - 1):
        with pytest.raises(IndexError, match=rf"index {bad} is out of range for a dataset of {NUM_IMAGES} images"):
            dataset[bad]
    with pytest.raises(TypeError, match=r"dataset indices are ints, got 1.0"):
        dataset[1.0]
    assert len(list(dataset)) == NUM_IMAGES


@pytest.mark.parametrize("size", [0, -64, 64.0, "64"])
def test_an_image_size_that_is_not_a_positive_int_is_refused_when_the_dataset_is_built(voc_root, size):
    """size 0 or 64.0 built the dataset and failed at its first item, inside OpenCV's resize (in a worker)."""
    with pytest.raises(ValueError, match=rf"build_dataset: size={size!r} must be a positive int"):
        build_dataset("voc", "test", size, data_root=str(voc_root), classes=["cat", "dog"])


@pytest.mark.parametrize("arguments, message", [
    ({"batch_size": 2.5}, r"batch_size=2.5 must be an int >= 1"),  # was NumPy's "seed must be integer"
    ({"workers": 1.5}, r"workers=1.5 must be an int >= 0"),  # was accepted
    ({"start_iter": -1}, r"start_iter=-1 must be an int >= 0"),  # was "'NoneType' object is not subscriptable"
    ({"max_iter": 2.0}, r"max_iter=2.0 must be an int >= 0 or None"),
])
def test_build_loader_refuses_counts_that_are_not_ints_in_range(voc_root, arguments, message):
    options = {"batch_size": 2, "workers": 0, "start_iter": 0, "max_iter": 4} | arguments
    with pytest.raises(ValueError, match=f"build_loader: {message}"):
        build_loader(train_set(voc_root), options.pop("batch_size"), train=True, **options)


WORKER_ERROR_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from torch.utils.data import Dataset
from data import build_loader
from data.errors import DataError

class Unreadable(Dataset):
    def __len__(self):
        return 64

    def sample(self, index, epoch):
        raise DataError(f"image {{index}}: cannot be read")

def first_batch():
    loader = build_loader(Unreadable(), 4, train=True, workers=2, max_iter=10)
    iterator = iter(loader)  # kept alive by the traceback of the error it re-raises
    next(iterator)

first_batch()
"""


def test_an_error_from_a_training_worker_does_not_hang_the_exit():
    # Training workers ignore SIGTERM; without the exit hook, multiprocessing would wait for them forever.
    script = WORKER_ERROR_SCRIPT.format(root=str(Path(__file__).resolve().parents[1]))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "DataError: image" in result.stderr and "cannot be read" in result.stderr
    assert "killed by signal" not in result.stderr


class _CtrlCAsWorkersStart(type(multiprocessing.get_context("fork"))):
    """The fork context, but Ctrl-C arrives while the DataLoader's iterator is being built, before its workers
    start; the handler has run when the iterator goes on."""

    def Queue(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        return super().Queue(*args, **kwargs)


def test_ctrl_c_while_the_workers_start_stops_after_the_loader_is_whole(monkeypatch):
    """The main thread blocks Ctrl-C while the workers start, but another thread of the process (tqdm's monitor,
    torch's) received it, and the main thread's handler raised KeyboardInterrupt inside the half-built iterator:
    its clean-up then printed 'Exception ignored ... AttributeError: ... no attribute _shutdown' after the run's
    interrupt line. The signal now waits for the iterator to be whole, then stops the run as before."""
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    other_thread_runs = threading.Event()
    other_thread = threading.Thread(target=other_thread_runs.wait)
    other_thread.start()
    try:
        loader = WorkerLoader(list(range(8)), batch_size=2, num_workers=2,
                              multiprocessing_context=_CtrlCAsWorkersStart())
        with pytest.raises(KeyboardInterrupt):
            iter(loader)
        gc.collect()
    finally:
        other_thread_runs.set()
        other_thread.join()
    assert [repr(hook.exc_value) for hook in unraisable] == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
