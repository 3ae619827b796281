import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.distributed import DistributedContext
from utils.engine import (
    NonFiniteGuard,
    NonFiniteLossError,
    ResumableBatchSampler,
    SeededSamples,
    StopSignal,
    iterations_per_epoch,
)


def test_iterations_per_epoch_drops_the_partial_batch_and_rejects_tiny_sets():
    assert iterations_per_epoch(16551, 32) == 517  # VOC07+12 (facts §6)
    assert iterations_per_epoch(100, 8, world_size=2) == 6
    with pytest.raises(ValueError, match="lower --batch_size"):
        iterations_per_epoch(20, 32)


def test_sampler_epochs_are_permutations_without_the_remainder():
    batches = list(ResumableBatchSampler(10, 3, seed=0, start_iter=0, max_iter=6))
    assert len(batches) == 6 and all(len(b) == 3 for b in batches)
    for epoch in range(2):
        items = [item for batch in batches[3 * epoch: 3 * epoch + 3] for item in batch]
        indices = [index for index, _ in items]
        assert len(set(indices)) == 9 and set(indices) <= set(range(10))
        assert {e for _, e in items} == {epoch}
    assert [i for i, _ in batches[0]] != [i for i, _ in batches[3]] or [i for i, _ in batches[1]] != [i for i, _ in batches[4]]


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


class _FakeDetectionDataset:
    """Implements the three public methods SeededSamples uses; the 'augmentation' is one random draw."""

    def __len__(self):
        return 4

    def annotation(self, index):
        return np.array([[1.0, 2.0, 3.0, 4.0]], np.float32), np.array([index]), np.array([False])

    def load_image(self, index):
        return np.full((2, 2, 3), index, np.uint8)

    def transform(self, image, boxes, labels, rng):
        image = image.astype(np.float32).transpose(2, 0, 1) + rng.random()
        return image, np.concatenate([boxes, labels[:, None].astype(np.float32)], axis=1)


def test_seeded_samples_depend_only_on_seed_epoch_and_index():
    samples = SeededSamples(_FakeDetectionDataset(), seed=3)
    image, target, index = samples[(2, 1)]
    expected_shift = np.random.default_rng((3, 1, 2)).random()
    assert index == 2
    assert torch.allclose(image, torch.full((3, 2, 2), 2.0 + expected_shift))
    assert target.tolist() == [[1.0, 2.0, 3.0, 4.0, 2.0]]
    assert torch.equal(samples[(2, 1)][0], image)
    assert not torch.equal(samples[(2, 0)][0], image)


def test_non_finite_guard_names_the_first_bad_iteration():
    guard = NonFiniteGuard(torch.device("cpu"))
    ctx = DistributedContext()
    guard.update(torch.tensor(1.5), 0)
    guard.check(ctx)
    guard.update(torch.tensor(float("inf")), 1)
    guard.update(torch.tensor(float("nan")), 2)
    guard.update(torch.tensor(0.5), 3)
    with pytest.raises(NonFiniteLossError, match="at iteration 1") as info:
        guard.check(ctx)
    assert info.value.iteration == 1


def test_stop_signal_turns_sigint_and_sigterm_into_a_flag_and_restores_handlers():
    previous = signal.getsignal(signal.SIGINT)
    with StopSignal() as stop:
        assert stop.received is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second signal stops at once
    assert signal.getsignal(signal.SIGINT) is previous


WORKER_ERROR_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from torch.utils.data import Dataset
from data.errors import DataError
from utils.distributed import DistributedContext
from utils.engine import build_train_loader

class Unreadable(Dataset):
    def __len__(self):
        return 64

    def annotation(self, index):
        raise DataError(f"image {{index}}: cannot be read")

def first_batch():
    loader = build_train_loader(Unreadable(), 4, 0, 0, 10, 2, lambda batch: batch, DistributedContext())
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
