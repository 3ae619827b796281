"""DataLoader workers started by 'spawn' (macOS, Windows) or 'forkserver' (Linux from Python 3.14) instead of 'fork':
they inherit nothing of the main process's Python state (its warning display, its signal handlers)."""
import multiprocessing
import os
import subprocess
import sys
import warnings
from contextlib import contextmanager

import pytest
import torch
from tqdm import tqdm

from data.loader import WorkerLoader
from main import one_line_data_warnings
from tests.conftest import ROOT
from tests.test_data_checks import corrupt_the_middle, make_dataset, write_jpeg
from utils.messages import SharedLines, SharedSeen


def dataset_with_a_corrupt_jpeg(tmp_path) -> tuple:
    """The VOC-layout test set of tests/test_data_checks.py with its image 1, b.jpg, cut short in the middle:
    (dataset, the path of b.jpg)."""
    root, dataset = make_dataset(tmp_path)
    bad = root / "JPEGImages" / "b.jpg"
    write_jpeg(bad, 40, 50)
    corrupt_the_middle(bad)
    return dataset, bad


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
    dataset, bad = dataset_with_a_corrupt_jpeg(tmp_path)
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


def test_a_full_record_answers_first_rather_than_lose_a_line():
    """Two slots: two texts fill the table; a text met before is still known, a third text (no slot left) is shown,
    again and again, rather than never (a line repeated, none lost)."""
    seen = SharedSeen(slots=2)
    assert seen.first("a.jpg") and seen.first("b.jpg")
    assert not seen.first("a.jpg") and not seen.first("b.jpg")
    assert seen.first("c.jpg") and seen.first("c.jpg")


def test_a_kind_of_text_is_numbered_up_to_its_limit_and_takes_no_slot_past_it():
    """first_of_kind numbers a kind's new texts 1, 2, ... up to the limit, each kind on its own count, and answers 0
    for a text met before or past the limit, which is not recorded: a set of thousands of warned images leaves the
    table's slots to the other lines."""
    seen = SharedSeen(slots=4, kinds=2)
    assert [seen.first_of_kind(text, 0, 2) for text in ("a.png", "a.png", "b.png", "c.png", "d.png")] == [1, 0, 2, 0, 0]
    assert seen.first_of_kind("c.png", 1, 2) == 1  # another kind's count
    assert seen.first("e") and not seen.first("e")  # a, b, c and e: d took no slot
    assert seen.first("f") and seen.first("f")  # now the table is full


def test_a_kind_counts_its_texts_past_the_limit_once_each_in_a_table_of_their_own():
    """Past the limit a kind's texts were neither recorded nor counted, so a run could not say how many images of a
    kind warned: they are now counted once each (a named text met again is not counted again), in a table of their
    own that leaves the named table's slots to the other lines; a kind with a text that found that table full has a
    count that is a lower bound (complete: False)."""
    seen = SharedSeen(slots=4, kinds=2, unnamed_slots=3)
    for text in ("a.png", "b.png", "a.png", "c.png", "c.png", "b.png", "d.png"):
        seen.first_of_kind(text, 0, 2)
    assert seen.kind_total(0) == (4, True) and seen.kind_count(0) == 2
    assert seen.first("e") and seen.first("f") and not seen.first("f")  # a, b, e, f: c and d took no named slot
    assert [seen.first_of_kind(text, 1, 0) for text in ("x.png", "y.png", "x.png", "z.png")] == [0, 0, 0, 0]
    assert seen.kind_total(1) == (1, False)  # c, d, x fill the table: y and z found no slot
    assert seen.kind_total(0) == (4, True)


def test_a_kinds_hashes_are_those_of_its_texts_named_and_past_the_limit():
    """kind_hashes hands over a kind's texts, named and past the limit, apart from another kind's and from first()'s
    lines, so that the records of several processes join into one count; a text met twice is there once, and a kind
    whose texts found the table past the limit full says that its hashes are not all."""
    seen = SharedSeen(slots=8, kinds=2, unnamed_slots=3)
    for text in ("a.png", "b.png", "a.png", "c.png", "c.png"):
        seen.first_of_kind(text, 0, 2)
    seen.first_of_kind("x.png", 1, 5)
    assert seen.first("a line")
    key = SharedSeen._key
    assert seen.kind_hashes(0) == ({key("a.png"), key("b.png")}, {key("c.png")}, True)
    assert seen.kind_hashes(1) == ({key("x.png")}, set(), True)
    for text in ("d.png", "e.png", "f.png"):  # d and e fill the table past the limit (c holds a slot): f is lost
        seen.first_of_kind(text, 0, 2)
    assert seen.kind_hashes(0) == ({key("a.png"), key("b.png")}, {key(t) for t in ("c.png", "d.png", "e.png")}, False)


def test_lines_handed_over_come_out_in_order_and_a_line_that_does_not_fit_is_refused():
    """Each line takes 4 bytes plus its UTF-8 bytes; a line too long for the room left is refused (its process prints
    it) and a taken mailbox has its room again. Several lines and a path's undecodable bytes (lone surrogates) come
    out as they went in."""
    lines = SharedLines(capacity=44)
    assert lines.take() == []
    assert lines.put("a\udcff.jpg: bad\n  detail") and lines.put("é")  # 4 + 22 bytes (a surrogate: 3), 4 + 2 bytes
    assert not lines.put("x" * 9)  # 32 + 13 > 44
    assert lines.put("x" * 8)  # 32 + 12 = 44
    assert lines.take() == ["a\udcff.jpg: bad\n  detail", "é", "x" * 8]
    assert lines.take() == [] and lines.put("x" * 40) and lines.take() == ["x" * 40]


CTRL_C_AT_THE_FIRST_WORKERS_START = """
import multiprocessing, os, signal, sys
multiprocessing.set_start_method(sys.argv[1])
from data import build_dataset, build_loader
dataset = build_dataset("voc", "train", 64, data_root=sys.argv[2], classes=["cat", "dog", "bird"])
train = sys.argv[3] == "train"
batches = iter(build_loader(dataset, 1, train=train, workers=1, max_iter=3 if train else None))
(worker,) = multiprocessing.active_children()
os.kill(worker.pid, signal.SIGINT)
print(len(list(batches)))
"""


@pytest.mark.parametrize("method, part", [("spawn", "train"), ("forkserver", "test")])
def test_the_first_workers_of_a_run_leave_ctrl_c_to_the_main_process_from_their_start(tmp_path, method, part):
    """Ctrl-C reaches every process of the terminal's group. A spawned training worker ignored it only once its
    worker_init_fn ran, seconds after it started (importing torch), and an evaluation worker not at all. Then the
    workers started with it blocked, but the first start of multiprocessing's resource tracker, inside that start,
    unblocked it: the run's first workers (and under forkserver, through its server, every later one) started
    without the block. Ctrl-C killed such a worker with a KeyboardInterrupt traceback and the run failed with
    "DataLoader worker exited unexpectedly" instead of stopping cleanly (saving a checkpoint). A fresh process: the
    tracker starts there."""
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} here")
    root, _ = make_dataset(tmp_path)
    result = subprocess.run([sys.executable, "-c", CTRL_C_AT_THE_FIRST_WORKERS_START, method, str(root), part],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (0, "3\n"), result.stderr
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr


NO_WORKER_RUN = """
import multiprocessing, os, runpy, sys, warnings
multiprocessing.set_start_method(sys.argv[1])
sys.argv = ["main.py", "--help"]
try:
    runpy.run_path("main.py", run_name="__main__")  # installs the warning display, prints the help, exits
except SystemExit as stop:
    assert stop.code == 0, stop.code
from data import build_dataset
dataset = build_dataset("voc", "train", 64, data_root=os.environ["ROOT"], classes=["cat", "dog", "bird"])
with warnings.catch_warnings():  # "always" for these reads alone: torch 2.5 makes a TemporaryDirectory when it
    warnings.simplefilter("always")  # imports torch.distributed.nn.jit, whose cleanup at exit warns (ResourceWarning)
    dataset.load_image(1), dataset.load_image(1)  # a corrupt JPEG met twice in this process, no worker started
try:
    print("child process:", os.waitpid(-1, os.WNOHANG), file=sys.stderr)
except ChildProcessError:
    print("no child process", file=sys.stderr)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no resource tracker")
def test_a_run_that_starts_no_worker_starts_no_resource_tracker(tmp_path):
    """The record of the lines shown made its lock when main.py installed its warning display; a lock for spawn or
    forkserver (macOS, Linux from Python 3.14; one code path) is a named semaphore, whose making starts
    multiprocessing's resource tracker process: `main.py --help`, and every run without DataLoader workers, started
    one for nothing."""
    _, bad = dataset_with_a_corrupt_jpeg(tmp_path)
    root = bad.parents[1]  # the dataset folder holding JPEGImages/
    result = subprocess.run([sys.executable, "-c", NO_WORKER_RUN, "spawn"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "ROOT": str(root)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: main.py")
    assert result.stderr == (f"warning: {bad}: corrupt JPEG data (libjpeg: Corrupt JPEG data: premature end of data "
                             "segment); it decodes with damaged pixels: re-download or re-encode the file\n"
                             "no child process\n")


class _WarnsToo(torch.utils.data.Dataset):
    """``dataset``'s samples; sample 0 also raises a Python warning that is not a data warning."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if index == 0:
            warnings.warn("sample 0 is odd", RuntimeWarning)
        return self.dataset[index]


def on_screen(text: str) -> list[str]:
    """The lines a terminal shows for ``text``: each carriage return goes back to the start of the line, where the
    next characters overwrite those there (a progress bar redraws itself so)."""
    lines = []
    for line in text.split("\n"):
        screen = ""
        for part in line.split("\r"):
            screen = part + screen[len(part):]
        lines.append(screen.rstrip())
    return lines


@pytest.mark.parametrize("method", [method for method in ("fork", "spawn")
                                    if method in multiprocessing.get_all_start_methods()])
def test_a_warning_in_a_worker_gets_a_line_of_its_own_below_the_progress_bar(tmp_path, capfd, method):
    """A worker printed its warning straight to stderr, where it continued the line of the training bar: the terminal
    showed `  0%|          | 0/3 [00:00<?, ?it/s]warning: ...b.jpg: corrupt JPEG data ...`. The main process now
    prints the workers' lines (a data warning's line, another warning's Python text) through tqdm, which lifts the bar
    off the line first and redraws it below."""
    dataset, bad = dataset_with_a_corrupt_jpeg(tmp_path)
    capfd.readouterr()
    with warnings.catch_warnings(), default_start_method(method):
        warnings.simplefilter("always")
        warnings.showwarning = one_line_data_warnings(warnings.showwarning)
        loader = WorkerLoader(_WarnsToo(dataset), batch_size=1, sampler=[1, 0, 2], num_workers=1, collate_fn=list)
        with tqdm(total=3, file=sys.stderr) as bar:
            for _ in loader:
                bar.update(1)
    screen = on_screen(capfd.readouterr().err)
    corrupt = (f"warning: {bad}: corrupt JPEG data (libjpeg: Corrupt JPEG data: premature end of data segment); it "
               "decodes with damaged pixels: re-download or re-encode the file")
    assert screen.count(corrupt) == 1, screen
    odd = [i for i, line in enumerate(screen) if line.endswith("RuntimeWarning: sample 0 is odd")]
    assert len(odd) == 1 and screen[odd[0] + 1] == '  warnings.warn("sample 0 is odd", RuntimeWarning)', screen
    assert screen.index(corrupt) < odd[0]  # in the order the worker met them, before the batches they came with
    assert screen[-2].startswith("100%|") and screen[-1] == ""  # the bar, drawn last


def test_under_torchrun_another_process_line_does_not_continue_rank_0s_bar(tmp_path, capfd, monkeypatch):
    """The processes of torchrun share one terminal, where rank 0 alone draws the progress bar; process 1's line about
    an image in its share continued the bar's line: `  50%|█████     | 2/4warning: ...`. It now starts on a line of
    its own (the bar as it was stays above it; rank 0 redraws it below)."""
    dataset, bad = dataset_with_a_corrupt_jpeg(tmp_path)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = one_line_data_warnings(warnings.showwarning)
        sys.stderr.write(" 50%|█████     | 2/4")  # rank 0's bar, as its process drew it in the terminal
        sys.stderr.flush()
        assert dataset.load_image(1).shape == (40, 50, 3)
    assert on_screen(capfd.readouterr().err) == [
        " 50%|█████     | 2/4",
        f"warning: {bad}: corrupt JPEG data (libjpeg: Corrupt JPEG data: premature end of data segment); it decodes "
        "with damaged pixels: re-download or re-encode the file", ""]
