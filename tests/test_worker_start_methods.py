"""DataLoader workers started by 'spawn' (macOS, Windows) or 'forkserver' (Linux from Python 3.14) instead of 'fork':
they inherit nothing of the main process's Python state (its warning display, its signal handlers)."""
import multiprocessing
import os
import signal
import warnings
from contextlib import contextmanager

import pytest

from data import build_loader
from data.loader import WorkerLoader
from main import one_line_data_warnings
from tests.test_data_checks import corrupt_the_middle, make_dataset, write_jpeg
from utils.messages import SharedSeen


@contextmanager
def default_start_method(method: str):
    """Make ``method`` the start method of the loaders built inside the block (Python's default, as on 3.14)."""
    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method(method, force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(previous, force=True)


@pytest.mark.parametrize("method", [method for method in ("spawn", "forkserver")
                                    if method in multiprocessing.get_all_start_methods()])
def test_workers_that_do_not_fork_name_a_corrupt_jpeg_on_one_line_once_per_run(tmp_path, capfd, method):
    """Without main.py's display, a spawned worker printed Python's warning: file, line number and source excerpt.
    With it, each worker made its own record of the lines shown: every worker that read the file printed the line
    again (and every evaluation's new workers again)."""
    root, dataset = make_dataset(tmp_path)
    bad = root / "JPEGImages" / "b.jpg"
    write_jpeg(bad, 40, 50)
    corrupt_the_middle(bad)
    capfd.readouterr()
    with warnings.catch_warnings(), default_start_method(method):
        warnings.simplefilter("always")
        warnings.showwarning = one_line_data_warnings(warnings.showwarning)
        loader = WorkerLoader(dataset, batch_size=1, sampler=[1, 1, 1, 1], num_workers=2, collate_fn=list)
        assert [batch[0][2] for batch in loader] == [1, 1, 1, 1]  # both workers read it, twice each
        assert capfd.readouterr().err == (f"warning: {bad}: corrupt JPEG data (libjpeg: Corrupt JPEG data: "
                                          "premature end of data segment); it decodes with damaged pixels: "
                                          "re-download or re-encode the file\n")
        assert dataset.load_image(1).shape == (40, 50, 3)  # the workers recorded it in the main process's record,
        assert capfd.readouterr().err == ""  # which the next evaluation's workers get as these did


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork here")
def test_a_record_made_while_the_start_method_was_fork_reaches_a_spawned_process():
    """A lock made for fork has no name a spawned process could open: the record's pickling raised "A SemLock created
    in a fork context is being shared with a process in a spawn context" and the process did not start."""
    with default_start_method("fork"):
        seen = SharedSeen()
    process = multiprocessing.get_context("spawn").Process(target=seen.first, args=("b.jpg: corrupt JPEG data",))
    process.start()
    process.join()
    assert process.exitcode == 0
    assert not seen.first("b.jpg: corrupt JPEG data")  # the spawned process recorded it in this one's table


@pytest.mark.parametrize("train", [True, False])
def test_a_spawned_worker_leaves_ctrl_c_to_the_main_process_from_its_start(tmp_path, capfd, train):
    """Ctrl-C reaches every process of the terminal's group. A spawned training worker ignored it only once its
    worker_init_fn ran, seconds after it started (importing torch), and an evaluation worker not at all: Ctrl-C killed
    it with a KeyboardInterrupt traceback and the run failed with "DataLoader worker exited unexpectedly" instead of
    stopping cleanly (saving a checkpoint)."""
    _, dataset = make_dataset(tmp_path)
    with default_start_method("spawn"):
        loader = build_loader(dataset, 1, train=train, workers=1, max_iter=3 if train else None)
        before = set(multiprocessing.active_children())
        batches = iter(loader)
        workers = set(multiprocessing.active_children()) - before
        assert len(workers) == 1
        os.kill(workers.pop().pid, signal.SIGINT)  # while the worker starts up
        assert len(list(batches)) == 3
    err = capfd.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
