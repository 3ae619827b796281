"""Collate and DataLoader construction.

Reproducibility: the augmentation of sample ``i`` is drawn from ``(seed, epoch, i)`` (see ``DetectionDataset``), and the
train samplers below tell the dataset the epoch when an epoch starts; so two runs with the same seeds see identical
batches whatever the number of workers, and a run resumed at epoch ``e`` sees what the uninterrupted run saw.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler, default_collate


def detection_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor, int]],
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """``[(image [3, S, S], target [n_i, 5], index), ...]`` ->
    ``(images [B, 3, S, S], [target [n_i, 5], ...], indices int64 [B])``.

    Images are stacked by ``default_collate``, which in a worker writes straight into shared memory (one copy fewer).
    """
    images, targets, indices = zip(*batch)
    return default_collate(list(images)), list(targets), torch.tensor(indices, dtype=torch.int64)


def _derived_seed(*values: int) -> int:
    return int(np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _announce_epoch(dataset: Dataset, epoch: int) -> None:
    set_epoch = getattr(dataset, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation per epoch, drawn from ``(seed, epoch)``. The epoch advances by one on each pass unless
    :meth:`set_epoch` chose it; the dataset is told the epoch (its augmentation stream) when a pass starts."""

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        _announce_epoch(self.dataset, epoch)
        generator = torch.Generator().manual_seed(_derived_seed(self.seed, epoch))
        yield from torch.randperm(len(self.dataset), generator=generator).tolist()


class EpochDistributedSampler(DistributedSampler):
    """``DistributedSampler`` (the caller calls ``set_epoch``) that also tells the dataset the epoch."""

    def __iter__(self) -> Iterator[int]:
        _announce_epoch(self.dataset, self.epoch)
        return super().__iter__()


def single_thread_opencv() -> None:
    """Run OpenCV single-threaded in this process: call it in the main process before DataLoader workers fork.

    Each worker is one core's worth of augmentation, so OpenCV's own thread pool only oversubscribes the CPU; and a
    pool inherited through ``fork`` can deadlock when a worker reconfigures it (``cv2.setNumThreads`` inside a worker
    hung in ``pthread_cond_destroy`` in our tests), so the pool is shut down before forking, never inside a worker.
    """
    cv2.setNumThreads(0)


def default_workers() -> int:
    """DataLoader workers when ``--workers`` is not given: the cores this process may use, shared among the
    processes of the node (``LOCAL_WORLD_SIZE`` under torchrun), less one for the training process, from 2 to 12.

    On a 16-core H200 machine the paper's augmentation at 320 yields about 90 images/s per worker (12 workers:
    1,057 images/s, docs/benchmarks.md), so a fast GPU needs many more than the 4 of the authors' default.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(2, min(12, per_process - 1))


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seeds the Python and NumPy global RNGs from the worker's torch seed (the
    loader's seed, the epoch's draw and ``worker_id``) for any code that uses them. The augmentation itself draws
    from ``(seed, epoch, index)`` per sample (see ``DetectionDataset``), so it does not depend on the worker."""
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    workers: int,
    distributed: bool = False,
    seed: int = 0,
    drop_last: bool | None = None,
) -> DataLoader:
    """DataLoader yielding ``detection_collate`` batches.

    Train: shuffled per epoch from ``(seed, epoch)``, ``drop_last=True`` by default (an epoch is
    ``len(dataset) // batch_size`` steps, as the paper). Test: dataset order. ``distributed``: a
    ``DistributedSampler`` per rank (call ``loader.sampler.set_epoch(epoch)`` each epoch; at test time it pads the
    last ranks with repeated images). Persistent workers when ``workers > 0`` (and OpenCV is made single-threaded in
    this process first, see :func:`single_thread_opencv`); pinned memory when CUDA is available.
    """
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    drop_last = train if drop_last is None else drop_last
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"the dataset has {len(dataset)} images, fewer than one batch of {batch_size}: lower --batch_size"
        )
    if workers > 0:
        single_thread_opencv()
    if distributed:
        sampler: Sampler[int] = EpochDistributedSampler(dataset, shuffle=train, seed=seed, drop_last=False)
    elif train:
        sampler = EpochShuffleSampler(dataset, seed=seed)
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=detection_collate,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=workers > 0,
        worker_init_fn=seed_worker if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )
