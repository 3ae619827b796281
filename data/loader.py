"""Collate, the training data stream and DataLoader construction.

Training data is one stream per run, counted in iterations (facts §6): one epoch is
``len(dataset) // (batch_size * world_size)`` iterations and the last partial batch is dropped. Everything random in
it is a pure function of ``(seed, iteration)``: :class:`ResumableBatchSampler` draws each epoch's permutation from
``(seed, epoch)`` and tags every sample with its epoch, and :class:`EpochSamples` augments sample ``i`` of epoch ``e``
with ``numpy.random.default_rng((dataset seed, e, i))`` (:meth:`data.dataset.DetectionDataset.sample`). A run resumed
at iteration ``k`` therefore sees exactly the batches the uninterrupted run saw, with any number of workers or
processes, and no epoch counter is shared with the workers.
"""
from __future__ import annotations

import atexit
import functools
import multiprocessing
import os
import signal
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing import resource_tracker
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler, default_collate

from data.errors import data_warnings_shown, one_line_data_warnings, relay_worker_lines, show_worker_lines
from utils.integers import as_int
from utils.messages import SharedLines, SharedSeen, counted


def detection_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor, int]],
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """``[(image [3, S, S], target [n_i, 5], index), ...]`` ->
    ``(images [B, 3, S, S], [target [n_i, 5], ...], indices int64 [B])``.

    Images are stacked by ``default_collate``, which in a worker writes straight into shared memory (one copy fewer).
    """
    images, targets, indices = zip(*batch)
    return default_collate(list(images)), list(targets), torch.tensor(indices, dtype=torch.int64)


def iterations_per_epoch(num_images: int, batch_size: int, world_size: int = 1) -> int:
    """``num_images // (batch_size * world_size)``; at least one full global batch is required."""
    epoch_size = num_images // (batch_size * world_size)
    if epoch_size == 0:
        raise ValueError(
            f"the training set has {counted(num_images, 'image')}, fewer than one global batch of "
            f"{batch_size * world_size} (--batch_size {batch_size} x {counted(world_size, 'process')}); "
            "lower --batch_size"
        )
    return epoch_size


class ResumableBatchSampler(Sampler):
    """Batches for iterations ``start_iter .. max_iter - 1`` of a seeded, epoch-wise shuffled stream.

    Iteration ``it`` belongs to epoch ``it // epoch_size``; the epoch's permutation is drawn from ``(seed, epoch)``.
    Its step ``s`` takes the global batch ``perm[s*B*W : (s+1)*B*W]`` and this process (rank ``r``) takes every
    ``W``-th item from position ``r``. Each item is ``(dataset index, epoch)``, for :class:`EpochSamples`.

    With ``max_iter=None`` each pass yields one epoch, for loops over epochs: epoch ``start_iter // epoch_size`` first
    (``start_iter`` must then begin an epoch), each later pass the next one, unless :meth:`set_epoch` picks one.
    """

    def __init__(
        self,
        num_images: int,
        batch_size: int,
        seed: int,
        start_iter: int,
        max_iter: int | None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_images = num_images
        self.batch_size = batch_size
        self.seed = seed
        self.start_iter = start_iter
        self.max_iter = max_iter
        self.rank = rank
        self.world_size = world_size
        self.epoch_size = iterations_per_epoch(num_images, batch_size, world_size)
        if max_iter is None and start_iter % self.epoch_size:
            raise ValueError(f"start_iter {start_iter} is inside epoch {start_iter // self.epoch_size} of "
                             f"{self.epoch_size} iterations: without max_iter each pass is a whole epoch; give "
                             "max_iter to start mid-epoch")
        self._next_epoch = start_iter // self.epoch_size

    def set_epoch(self, epoch: int) -> None:
        """With ``max_iter=None``: the next pass yields epoch ``epoch``."""
        if self.max_iter is not None:
            raise ValueError("set_epoch: this sampler yields iterations start_iter..max_iter-1; build it without "
                             "max_iter to pass over it one epoch at a time")
        self._next_epoch = epoch

    def __len__(self) -> int:
        return self.epoch_size if self.max_iter is None else max(self.max_iter - self.start_iter, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.max_iter is None:
            epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
            return self._batches(epoch * self.epoch_size, (epoch + 1) * self.epoch_size)
        return self._batches(self.start_iter, self.max_iter)

    def _batches(self, first: int, stop: int) -> Iterator[list[tuple[int, int]]]:
        global_batch = self.batch_size * self.world_size
        epoch, permutation = -1, None
        for iteration in range(first, stop):
            step = iteration % self.epoch_size
            if iteration // self.epoch_size != epoch:
                epoch = iteration // self.epoch_size
                permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_images)
            positions = range(step * global_batch + self.rank, (step + 1) * global_batch, self.world_size)
            yield [(int(permutation[p]), epoch) for p in positions]


class ShardSampler(Sampler):
    """Process ``rank``'s shard of ``num_images`` test images, ``rank, rank + world_size, ...`` in order: every image
    in one shard alone (a ``DistributedSampler`` pads the shards to one length with repeated images, which the
    evaluation would run, and count, twice). Shards may differ in length by one; the evaluation runs the plain
    model, which holds no collective per batch."""

    def __init__(self, num_images: int, rank: int, world_size: int) -> None:
        self.num_images, self.rank, self.world_size = num_images, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_images, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_images, self.world_size))


class EpochSamples(Dataset):
    """A dataset indexed by ``(index, epoch)`` instead of ``index``: item ``(i, e)`` is ``dataset.sample(i, e)``,
    sample ``i`` with epoch ``e``'s augmentation. The epoch travels with the sample, so no shared epoch counter can
    race with workers that prefetch across an epoch boundary."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, epoch = item
        return self.dataset.sample(index, epoch)


def _init_worker(shown: SharedSeen | None, lines: SharedLines | None, worker_id: int) -> None:
    """Set up a DataLoader worker process (see :func:`worker_init_fn`)."""
    if shown is not None and data_warnings_shown() is None:
        warnings.showwarning = one_line_data_warnings(warnings.showwarning, shown)
    if lines is not None:
        relay_worker_lines(lines)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def worker_init_fn(lines: SharedLines | None = None) -> functools.partial:
    """The ``worker_init_fn`` of :class:`WorkerLoader`, made in the main process.

    Data warnings: where this process shows them on one line (``main.py``, :func:`data.errors.one_line_data_warnings`),
    the workers do too. Forked workers inherit the display; workers started by ``spawn`` (macOS, Windows) or
    ``forkserver`` (Linux from Python 3.14) install their own with the main process's record of the lines shown,
    which this function carries to them: a corrupt image is shown once per run whatever the start method. With
    ``lines``, the workers hand their warning lines to the main process through it (:func:`data.errors.
    relay_worker_lines`) instead of printing them. Workers ignore Ctrl-C/SIGTERM (see :class:`WorkerLoader`).
    """
    return functools.partial(_init_worker, data_warnings_shown(), lines)


@contextmanager
def _stop_signals_blocked(start_method: str) -> Iterator[None]:
    """Inside the block SIGINT/SIGTERM wait (blocked) in this thread; the processes it starts by ``start_method``
    inherit the block.

    Another thread of the process (tqdm's monitor, torch's) still receives them, and Python then runs their handler
    in the main thread at once: in the main thread the block also holds their handlers, and a signal received meanwhile
    is raised again as the block ends. Its handler raised KeyboardInterrupt inside the DataLoader's half-built
    iterator, whose clean-up then failed with an AttributeError traceback.

    Processes started by ``spawn``/``forkserver`` need multiprocessing's resource tracker, whose first start unblocks
    the two signals in this thread as it ends: it is started before the block, not inside it.
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    if start_method != "fork":
        resource_tracker.ensure_running()
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    received: list[int] = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():  # where Python runs handlers, and may replace them
        handlers = {signum: signal.signal(signum, lambda held, frame: received.append(held)) for signum in stop_signals}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(stop_signals))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for signum in received:  # to the handlers of the block's caller (a KeyboardInterrupt, training's stop)
            signal.raise_signal(signum)


# Seconds the main process waits for a batch from its workers before it stops with an error: PyTorch waits forever by
# default, and a worker that hangs (on a stalled network file system, or whose batch was lost) held the run without a
# word. Where SIGCHLD exists PyTorch still reports a dead worker at once; on Windows a timeout would delay that, as its
# only check of the workers runs between waits: none there.
WORKER_TIMEOUT_S = 600 if hasattr(signal, "SIGCHLD") else 0


class WorkerLoader(DataLoader):
    """A DataLoader whose worker processes leave Ctrl-C/SIGTERM to the main process, from their start.

    Ctrl-C reaches every process of the terminal's group; the main process stops the run (training saves a
    checkpoint and exits, ``main.py``), and a worker that died of it would make the main process fail with "DataLoader
    worker exited unexpectedly" instead. Workers are started with the two signals blocked (a worker started by
    ``spawn`` runs its ``worker_init_fn`` only seconds later, once it has imported torch), then ignore them
    (:func:`worker_init_fn`); a signal that arrives while they start waits for the main process. Workers still exit
    with the main process: PyTorch's worker loop watches its parent. Its ``worker_init_fn`` is :func:`worker_init_fn`.

    Where data warnings are shown on one line (``main.py``), the workers hand their warning lines to this process,
    which prints them through tqdm as the batches come (:func:`_showing_worker_lines`): a worker printing to stderr
    itself continued the line of a progress bar drawn here.

    With workers, a batch that takes more than :data:`WORKER_TIMEOUT_S` to come raises PyTorch's RuntimeError
    "DataLoader timed out" (unless ``timeout`` is given).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", WORKER_TIMEOUT_S if kwargs.get("num_workers", 0) > 0 else 0)
        # where main.py shows data warnings on one line, the workers' lines are printed by this process (__iter__)
        shows_lines = data_warnings_shown() is not None and kwargs.get("num_workers", 0) > 0
        self._worker_lines = SharedLines() if shows_lines else None
        super().__init__(*args, worker_init_fn=worker_init_fn(self._worker_lines), **kwargs)

    def __iter__(self) -> Iterator:
        if self.num_workers == 0:
            return super().__iter__()
        context = self.multiprocessing_context or multiprocessing
        with _stop_signals_blocked(context.get_start_method()):
            batches = super().__iter__()  # starts the workers (when not persistent ones already started)
        return batches if self._worker_lines is None else _showing_worker_lines(batches, self._worker_lines)


def _showing_worker_lines(batches: Iterator, lines: SharedLines) -> Iterator:
    """``batches``, each after the warning lines that the workers handed over in ``lines`` until it came, printed
    through tqdm (:func:`data.errors.show_worker_lines`): a worker hands a sample's lines over before the batch, so
    they come before it; so do those before a worker's error, and after the last batch those left."""
    try:
        for batch in batches:
            show_worker_lines(lines)
            yield batch
    except Exception:
        show_worker_lines(lines)
        raise
    show_worker_lines(lines)


def _kill_daemon_children() -> None:
    """At exit, SIGKILL the worker processes still alive.

    An error raised in a worker and re-raised by the loader keeps the loader alive through its traceback, so its
    workers are never told to stop; multiprocessing's own exit handler then sends them SIGTERM, which training
    workers ignore, and waits for them forever. Registered after multiprocessing's handler, this one runs first.
    PyTorch's SIGCHLD handler, which reports a killed worker as an error, is reset first: the process is exiting.
    """
    children = [child for child in multiprocessing.active_children() if child.daemon]
    if children and hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        child.kill()


atexit.register(_kill_daemon_children)


def single_thread_opencv() -> None:
    """Run OpenCV single-threaded in this process: call it in the main process before DataLoader workers fork.

    Each worker is one core's worth of augmentation, so OpenCV's own thread pool only oversubscribes the CPU; and a
    pool inherited through ``fork`` can deadlock when a worker reconfigures it (``cv2.setNumThreads`` inside a worker
    hung in ``pthread_cond_destroy`` in our tests), so the pool is shut down before forking, never inside a worker.
    """
    cv2.setNumThreads(0)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the system has one, else the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2


def default_workers() -> int:
    """DataLoader workers when ``--workers`` is not given: the cores this process may use, shared among the
    processes of the node (``LOCAL_WORLD_SIZE`` under torchrun), less one for the training process, from 2 to 12.

    On a 16-core H200 machine the paper's augmentation at 320 yields about 90 images/s per worker (12 workers:
    1,057 images/s, docs/benchmarks.md), so a fast GPU needs many more than the 4 of the authors' default.
    """
    per_process = usable_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(2, min(12, per_process - 1))


def _count(name: str, value: object, least: int, alternative: str = "") -> int:
    """``value`` of :func:`build_loader`'s argument ``name`` as an int (:func:`utils.integers.as_int`); a ValueError
    naming the argument when it is not an int of at least ``least``."""
    number = as_int(value)
    if number is None or number < least:
        raise ValueError(f"build_loader: {name}={value!r} must be an int >= {least}{alternative}")
    return number


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    workers: int,
    distributed: bool = False,
    seed: int = 0,
    start_iter: int = 0,
    max_iter: int | None = None,
    pin_memory: bool | None = None,
) -> DataLoader:
    """DataLoader yielding ``detection_collate`` batches.

    Train: one loader for the whole run, the batches of iterations ``start_iter .. max_iter - 1`` of the stream in the
    module docstring, order from ``seed``, augmentation from the dataset's seed; without ``max_iter``, one epoch per
    pass over the loader, the next epoch at each pass (``for epoch in range(E): for batch in loader`` sees epoch
    ``e``'s order and augmentation; ``loader.batch_sampler.set_epoch(e)`` picks one; persistent workers); with
    ``distributed``, this process's share of each global batch (``batch_size`` per process; rank and world size from
    the initialised ``torch.distributed`` group).
    Test: every image in dataset order; ``distributed``: this process's :class:`ShardSampler` shard (every image in
    one process's shard), with persistent workers.
    Workers leave Ctrl-C/SIGTERM to the main process (:class:`WorkerLoader`).

    ``workers > 0`` makes OpenCV single-threaded in this process first (:func:`single_thread_opencv`);
    ``pin_memory`` defaults to whether CUDA is available.
    """
    batch_size, workers = _count("batch_size", batch_size, 1), _count("workers", workers, 0)
    start_iter = _count("start_iter", start_iter, 0)
    max_iter = None if max_iter is None else _count("max_iter", max_iter, 0, " or None")
    if workers > 0:
        single_thread_opencv()
    pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
    if train:
        rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        return WorkerLoader(
            EpochSamples(dataset),
            batch_sampler=ResumableBatchSampler(len(dataset), batch_size, seed, start_iter, max_iter, rank, world_size),
            num_workers=workers,
            collate_fn=detection_collate,
            pin_memory=pin_memory,
            persistent_workers=workers > 0 and max_iter is None,  # one pass per epoch: keep the workers between
            generator=torch.Generator().manual_seed(seed),
        )
    sampler = ShardSampler(len(dataset), dist.get_rank(), dist.get_world_size()) if distributed else \
        SequentialSampler(dataset)
    return WorkerLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=detection_collate,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
