"""DataLoader workers started by 'spawn' (macOS, Windows) or 'forkserver' (Linux from Python 3.14) instead of 'fork':
they inherit nothing of the main process's Python state (its warning display, its signal handlers)."""
import multiprocessing
import os
import signal
import warnings
from contextlib import contextmanager

import pytest

from data import build_loader
from main import one_line_data_warnings
from tests.test_data_checks import corrupt_the_middle, make_dataset, write_jpeg


@contextmanager
def default_start_method(method: str):
    """Make ``method`` the start method of the loaders built inside the block (Python's default, as on 3.14)."""
    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method(method, force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(previous, force=True)


def test_a_spawned_worker_shows_a_corrupt_jpeg_on_one_line_as_the_main_process_does(tmp_path, capfd):
    """Without main.py's display, the worker printed Python's warning: file, line number and source excerpt."""
    root, dataset = make_dataset(tmp_path)
    bad = root / "JPEGImages" / "b.jpg"
    write_jpeg(bad, 40, 50)
    corrupt_the_middle(bad)
    capfd.readouterr()
    with warnings.catch_warnings(), default_start_method("spawn"):
        warnings.showwarning = one_line_data_warnings(warnings.showwarning)
        indices = [index for _, _, batch in build_loader(dataset, 1, train=False, workers=1) for index in batch]
    assert indices == [0, 1, 2]
    assert capfd.readouterr().err == (f"warning: {bad}: corrupt JPEG data (libjpeg: Corrupt JPEG data: premature end "
                                      "of data segment); it decodes with damaged pixels: re-download or re-encode the "
                                      "file\n")


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
