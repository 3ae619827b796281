"""Helpers for single-process and ``torchrun`` (DistributedDataParallel) runs.

``torchrun --nproc_per_node=N main.py ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; every process then
trains on its own ``--batch_size`` images (the global batch is ``N * --batch_size``). CUDA runs use NCCL, CPU runs gloo.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from utils.messages import counted


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job; ``world_size == 1`` for a plain ``python main.py`` run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # the group of host-side flags (:func:`any_process`): None, the default group, under gloo; a gloo side group
    # under NCCL, so that agreeing on a flag never waits for the GPU
    host_group: Any = field(default=None, compare=False)

    @property
    def is_distributed(self) -> bool:
        """Whether this process is one of several (``torchrun`` with more than one process)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that logs and writes checkpoints."""
        return self.rank == 0


class StoppedByAnotherProcess(Exception):
    """Another process met an error that stops the run and reports it; this one stops too (one line, prefixed with its
    rank, that points to that message)."""


# what gloo's TCP transport says in a collective when another process has gone (killed, crashed): its socket closed
LOST_PROCESS_ERRORS = ("Connection closed by peer", "Connection reset by peer")
LOST_PROCESS = ("another process has gone (its connection closed): its line says why, or, if it was killed, torchrun's "
                "summary gives its exit code (-9: SIGKILL, which the out-of-memory killer sends)")


def lost_another_process(error: BaseException) -> bool:
    """Whether ``error`` is gloo's report, in a collective of this process (DDP's gradient all-reduce, an agreement
    on a flag, the evaluation's gather), that another process has gone (it stopped on an error of its own, or was
    killed): :data:`LOST_PROCESS`."""
    return isinstance(error, RuntimeError) and any(text in str(error) for text in LOST_PROCESS_ERRORS)


def resolve_device(requested: str, local_rank: int = 0, local_world_size: int = 1) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``cuda`` -> ``cuda:<local_rank>``;
    ``cuda:N`` for one process per machine (``local_world_size``: torchrun's processes on this machine). A
    ``ValueError`` names the flag, or, for a ``local_rank`` past the machine's GPUs, torchrun's ``--nproc_per_node``."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index not in (None, 0)):
        raise ValueError(f"--device {requested} is not a device this program runs on; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and local_world_size > 1:  # NCCL refuses two processes on one GPU
            raise ValueError(f"--device {requested} would put the {local_world_size} torchrun processes of this "
                             "machine on one GPU; use --device cuda (or auto): each process takes the GPU of its "
                             "LOCAL_RANK")
        if device.index is None:
            device = torch.device("cuda", local_rank)
            if local_rank >= (count := torch.cuda.device_count()):
                raise ValueError(f"torchrun started process LOCAL_RANK {local_rank} on this machine, which has {count} "
                                 "CUDA device(s): each process takes the GPU of its LOCAL_RANK, so start at most "
                                 f"{counted(count, 'process')} per machine (--nproc_per_node {count})")
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from cuda:0")
        torch.cuda.set_device(device)
    return device


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group described by the ``torchrun`` environment (a no-op without it)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    host_group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None  # every process creates it
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank_from_env(),
                              host_group=host_group)


def launch_context() -> DistributedContext:
    """Where ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) places this process, before it joins
    the process group (no collective may use it): it tells which process prints the messages of a start, such as a
    refused flag, that every process meets alike. A plain ``python main.py`` run: rank 0 of 1."""
    return DistributedContext(rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ.get("WORLD_SIZE", "1")),
                              local_rank=local_rank_from_env())


# how long a process other than rank 0 waits before saying why its start was refused (see say_start_refusal)
START_REFUSAL_WAIT_S = 10.0


def say_start_refusal(message: str) -> None:
    """Print ``message``, why this process's start is refused before the processes join their group, on stderr.

    Every ``torchrun`` process reads the same flags and files and meets the same refusal, so rank 0 alone says it at
    once. The others wait :data:`START_REFUSAL_WAIT_S` first: torchrun stops every process as soon as one exits, and a
    process exiting before rank 0 has printed would make torchrun stop rank 0 before it says anything. Once rank 0
    has refused alike and exited, torchrun ends the wait; a process still running after it met a refusal of its own,
    and says it, naming its rank."""
    ctx = launch_context()
    if ctx.is_main:
        print(message, file=sys.stderr, flush=True)
        return
    time.sleep(START_REFUSAL_WAIT_S)
    print(f"[rank {ctx.rank}] {message}", file=sys.stderr, flush=True)


def local_world_size_from_env() -> int:
    """``LOCAL_WORLD_SIZE`` set by ``torchrun``, its processes on this machine (1 otherwise)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def local_rank_from_env() -> int:
    """``LOCAL_RANK`` set by ``torchrun`` (0 otherwise); needed to pick the GPU before joining the group."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def joined_group() -> bool:
    """Whether this process has joined a ``torch.distributed`` process group (under ``torchrun``, after
    :func:`init_distributed`)."""
    return dist.is_available() and dist.is_initialized()


def cleanup_distributed() -> None:
    """Leave the process group, if one was joined."""
    if joined_group():
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    """Wait until every process reaches this point (a no-op when not distributed)."""
    if ctx.is_distributed:
        dist.barrier()


def all_reduce_max(tensor: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Elementwise maximum over all processes (in place, also returned)."""
    if ctx.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_reduce_sum(tensor: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Elementwise sum over all processes (in place, also returned)."""
    if ctx.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Mean over all processes (in place, also returned); used for logged losses."""
    if ctx.is_distributed:
        all_reduce_sum(tensor, ctx)
        tensor /= ctx.world_size
    return tensor


def raise_if_any_process_failed(failure: BaseException | None, ctx: DistributedContext,
                                elsewhere: Callable[[], BaseException]) -> None:
    """Every process calls this with its own ``failure`` (``None`` when it had none), so that none goes on alone into
    a collective the others left: when any process failed, each raises its own failure, or ``elsewhere()`` when only
    another process failed. Returns when none did."""
    if any_process(failure is not None, ctx):
        raise failure if failure is not None else elsewhere()


def any_process(flag: bool, ctx: DistributedContext) -> bool:
    """Whether ``flag`` is true on any process (``flag`` itself when not distributed): an all-reduce of one CPU integer
    in ``ctx.host_group``, which costs no GPU sync, so the training loop can agree on a flag every iteration. Raises
    :class:`StoppedByAnotherProcess` when a process has already stopped (gloo reports its closed connection)."""
    if not ctx.is_distributed:
        return flag
    tensor = torch.tensor([int(flag)])
    try:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=ctx.host_group)
    except RuntimeError as error:
        raise StoppedByAnotherProcess("another process stopped (its message, or torchrun's summary, says why)") \
            from error
    return bool(tensor.item())


def broadcast_object(obj: Any, ctx: DistributedContext) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not ctx.is_distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_gather_objects(obj: Any, ctx: DistributedContext) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order, on every process (``[obj]`` when not distributed): a
    gather in ``ctx.host_group``, which moves it on the CPU, also under NCCL. Every process must call it at the same
    point; a ``RuntimeError`` when another process has gone (:func:`lost_another_process`) or does not come within
    the group's timeout."""
    if not ctx.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj, group=ctx.host_group)
    return gathered


def refused_on_main(check: Callable[[], None], ctx: DistributedContext) -> None:
    """Run ``check`` on rank 0 alone (a check of what rank 0 alone writes or holds: its output folders, its run
    locks) and raise the ``ValueError`` it raises on every process, so that none goes on alone into a collective
    that rank 0 has left (main.py prints the refusal once, from rank 0)."""
    refusal = None
    if ctx.is_main:
        try:
            check()
        except ValueError as error:
            refusal = str(error)
    refusal = broadcast_object(refusal, ctx)
    if refusal is not None:
        raise ValueError(refusal)


def broadcast_buffers(model: nn.Module, ctx: DistributedContext) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every process, as DDP's next forward makes them: after a
    step each process holds the statistics of its own share of the batch, and the checkpoint holds rank 0's. An
    evaluation during training calls it so that every shard is scored with the model that is saved."""
    if ctx.is_distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def wrap_model(model: nn.Module, device: torch.device, ctx: DistributedContext, sync_bn: bool) -> nn.Module:
    """DistributedDataParallel around ``model`` (optionally with SyncBatchNorm); ``model`` itself when not
    distributed."""
    if not ctx.is_distributed:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile``, DistributedDataParallel and DataParallel wrappers, in any nesting
    (``torch.compile(DDP(model))``, ``DDP(torch.compile(model))``)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model
