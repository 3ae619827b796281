"""DataLoader workers started by 'spawn' (macOS, Windows) or 'forkserver' (Linux from Python 3.14) instead of 'fork':
they inherit nothing of the main process's Python state (its warning display, its signal handlers)."""
import multiprocessing
import warnings
from contextlib import contextmanager

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
