"""DataLoader worker processes that fail the way containers and clusters make them (killed by the out-of-memory
killer, a bus error from a full /dev/shm, no file descriptor left): PyTorch's RuntimeError turned into one line naming
the cause and the fix (:func:`utils.run_exit.worker_failure`), in main.py and in a training run."""
import multiprocessing
import os
import signal

import pytest
from torch.utils.data import DataLoader, Dataset

import main as cli
from data import checks
from data import loader as loader_module
from data.loader import WorkerLoader
from tests.test_coco_skip_unknown_classes import instances
from tests.test_data_coco import write_coco
from utils.run_exit import worker_failure


class _DyingDataset(Dataset):
    """Items 0..3, ints (no tensor, whose file descriptor this process would take from the worker); the worker that
    loads item 2 sends itself ``signum``."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        if index == 2:
            os.kill(os.getpid(), self.signum)
        return index


def _error_of_a_dying_worker(signum: int) -> RuntimeError:
    """The error that iterating a one-worker loader of :class:`_DyingDataset` raises."""
    loader = DataLoader(_DyingDataset(signum), batch_size=1, num_workers=1, collate_fn=list,
                        multiprocessing_context="fork")  # the Linux default: no re-import of torch
    batches = iter(loader)
    try:
        with pytest.raises(RuntimeError) as caught:
            for _ in batches:
                pass
    finally:  # PyTorch's SIGCHLD handler would raise it again, later, for the dead worker it still watches
        batches._shutdown_workers()
    return caught.value


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
@pytest.mark.parametrize("signal_name, line", [
    ("SIGKILL", "a DataLoader worker process was killed (SIGKILL), most often by the system's out-of-memory killer or "
                "a container's memory limit: lower --workers (3 here; 0 loads the data in this process)"),
    ("SIGBUS", "a DataLoader worker process died of a bus error: the shared memory (/dev/shm) through which the "
               "workers hand over their batches is full; give the container more (docker run --shm-size 8g, or "
               "--ipc=host) or lower --workers (3 here; 0 loads the data in this process)"),
    ("SIGUSR1", "a DataLoader worker process died of a signal (User defined signal 1): run with --workers 0 to see "
                "where, in this process"),
])
def test_a_worker_killed_by_a_signal_is_named_with_its_fix(signal_name, line):
    assert worker_failure(_error_of_a_dying_worker(getattr(signal, signal_name)), workers=3) == line


def test_a_worker_killed_while_its_batch_is_taken_is_named_with_its_fix():
    """The batch a worker sent before it was killed holds file descriptors that this process takes from the worker
    through a socket (``multiprocessing/resource_sharer.py``): a ConnectionError, an OSError of no file, when PyTorch
    still saw the worker alive."""
    def taken_from_a_dead_worker() -> ConnectionError:
        with pytest.raises(ConnectionError) as caught:  # raised where the standard library raises it
            exec(compile("raise ConnectionRefusedError(111, 'Connection refused')",
                         os.path.join("lib", "multiprocessing", "resource_sharer.py"), "exec"))
        return caught.value

    assert worker_failure(taken_from_a_dead_worker(), workers=2) == (
        "a DataLoader worker process ended while it handed over a batch (killed, often by the out-of-memory killer or "
        "a container's memory limit): lower --workers (2 here; 0 loads the data in this process)")
    assert worker_failure(ConnectionResetError(104, "Connection reset by peer"), workers=2) is None  # not a worker's


# PyTorch's messages, as a full /dev/shm or a low `ulimit -n` make them (the second one met with `ulimit -n 32`);
# a MemoryError raised in a worker is re-raised by PyTorch as one
_SHM_FULL = RuntimeError("Caught RuntimeError in DataLoader worker process 1.\nOriginal Traceback (most recent call "
                         "last):\n  File \"x.py\", line 1, in f\nRuntimeError: unable to write to file "
                         "</torch_18692_1954506624>: No space left on device (28)\n")
_NO_DESCRIPTOR = RuntimeError("unable to open shared memory object </torch_8182_3567019908_2> in read-write mode: Too "
                              "many open files (24)")


@pytest.mark.parametrize("error, line", [
    (_SHM_FULL, "the DataLoader workers ran out of shared memory (/dev/shm: RuntimeError: unable to write to file "
                "</torch_18692_1954506624>: No space left on device (28)); give the container more (docker run "
                "--shm-size 8g, or --ipc=host) or lower --workers (4 here; 0 loads the data in this process)"),
    (_NO_DESCRIPTOR, "no file descriptor left for the batches the DataLoader workers hand over (each tensor holds one "
                     "until this process takes it): raise the limit (ulimit -n 65536 in the shell that starts main.py) "
                     "or lower --workers (4 here; 0 loads the data in this process)"),
    (MemoryError("Caught MemoryError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"),
     "a DataLoader worker process ran out of memory: lower --workers (4 here; 0 loads the data in this process)"),
    (RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly"),
     "a DataLoader worker process exited unexpectedly (killed, often by the out-of-memory killer, or ended by an "
     "error): lower --workers (4 here; 0 loads the data in this process); --workers 0 shows an error where it happens"),
])
def test_shared_memory_descriptors_and_memory_of_the_workers_are_named_with_their_fix(error, line):
    assert worker_failure(error, workers=4) == line


@pytest.mark.parametrize("error, workers", [
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), 4),  # not the workers': its traceback tells more
    (MemoryError(), 4),  # this process's own: main.py's out-of-memory line
    (RuntimeError("unable to mmap 44 bytes from file <weights/best.pth>: Cannot allocate memory (12)"), 4),
    (_NO_DESCRIPTOR, 0),  # no workers
])
def test_other_errors_are_not_taken_for_the_workers(error, workers):
    assert worker_failure(error, workers) is None


class _StuckDataset(Dataset):
    """Items 0..3; the worker that loads item 1 waits for ``released`` (a file system that stalled)."""

    def __init__(self, released) -> None:
        self.released = released

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        if index == 1:
            self.released.wait(30)
        return index


@pytest.mark.skipif(not hasattr(signal, "SIGCHLD"), reason="POSIX: fork, and a timeout")
def test_a_worker_that_hangs_stops_the_loader_with_a_line_naming_it(monkeypatch):
    """A worker that never hands its batch over held the run forever (PyTorch waits without a timeout by default):
    the loader now stops after ``WORKER_TIMEOUT_S`` without a batch (here 1 s)."""
    assert WorkerLoader(_StuckDataset(None), num_workers=2).timeout == loader_module.WORKER_TIMEOUT_S == 600
    assert WorkerLoader(_StuckDataset(None), num_workers=0).timeout == 0  # no worker to wait for
    monkeypatch.setattr(loader_module, "WORKER_TIMEOUT_S", 1)
    context = multiprocessing.get_context("fork")
    released = context.Event()
    batches = iter(WorkerLoader(_StuckDataset(released), batch_size=1, num_workers=1, collate_fn=list,
                                multiprocessing_context=context))
    try:
        assert next(batches) == [0]
        with pytest.raises(RuntimeError) as caught:
            next(batches)
    finally:
        released.set()
        batches._shutdown_workers()
    assert worker_failure(caught.value, workers=1) == (
        "no batch came from the DataLoader workers in 1 s: one is stuck (reading from a stalled file system, say) or "
        "lost its batch (its error above says why); fix what holds it, or lower --workers (1 here; 0 loads the data "
        "in this process)")


def test_check_data_with_no_worker_reads_the_images_in_this_process(tmp_path, monkeypatch, capsys):
    """``--check_data --workers 0`` decoded the images in one worker process all the same (``max(workers, 1)``): a
    worker killed there (the out-of-memory killer) ended in PyTorch's traceback, as no worker had been asked for,
    and a worker's line advised the --workers 0 that was given. 0 now checks them here, as it loads them in training."""
    write_coco(tmp_path, "train", instances())
    write_coco(tmp_path, "val", instances())
    readers = set()
    read = checks._ImageProblems.__getitem__

    def reading(self, index):
        readers.add(os.getpid())
        return read(self, index)

    monkeypatch.setattr(checks._ImageProblems, "__getitem__", reading)
    with pytest.warns(Warning):
        assert cli.main(cli.get_args_parser().parse_args(
            ["--check_data", "--dataset", "custom", "--data_root", str(tmp_path), "--classes", "circle,square",
             "--skip_unknown_classes", "--workers", "0"])) == 0
    assert readers == {os.getpid()}
    assert "--check_data found no problem" in capsys.readouterr().out
