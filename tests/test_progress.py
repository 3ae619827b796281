"""utils.progress: a tqdm bar on a terminal; elsewhere (a file, a pipe, nohup, a batch job's log) a plain line at most
every LINE_EVERY_S seconds and one at the end, so that a long evaluation or data check is seen to progress."""
import itertools
import sys
from types import SimpleNamespace

import pytest
from tqdm import tqdm

from data.shapes import generate_shapes_dataset
from tests.terminal_view import TerminalView
from utils.progress import LINE_EVERY_S, ProgressLines, progress_bar


class FakeClock:
    """time.monotonic for utils.progress, moved on by hand."""

    def __init__(self, monkeypatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr("utils.progress.time", SimpleNamespace(monotonic=lambda: self.now))


def test_a_long_evaluation_off_a_terminal_prints_a_line_every_30_s_and_one_at_the_end(capsys, monkeypatch):
    """Under nohup or a batch scheduler the bar is not drawn (its carriage-return redraws filled the log), and a
    COCO evaluation of minutes printed nothing at all until its end: a hang and progress looked the same."""
    clock = FakeClock(monkeypatch)
    bar = progress_bar(range(100), desc="Evaluating", unit="batch", dynamic_ncols=True)
    assert isinstance(bar, ProgressLines) and bar.disable and LINE_EVERY_S == 30
    for _ in bar:
        clock.now += 1  # a batch a second
    assert capsys.readouterr().err == (
        "Evaluating: 30/100 (30 %) in 0:00:30, 1.0 batch/s, ETA 0:01:10\n"
        "Evaluating: 60/100 (60 %) in 0:01:00, 1.0 batch/s, ETA 0:00:40\n"
        "Evaluating: 90/100 (90 %) in 0:01:30, 1.0 batch/s, ETA 0:00:10\n"
        "Evaluating: 100/100 (100 %) in 0:01:40, 1.0 batch/s\n"
    )


def test_a_job_shorter_than_the_interval_prints_nothing(capsys, monkeypatch):
    clock = FakeClock(monkeypatch)
    for _ in progress_bar(range(5000), desc="Evaluating", unit="batch"):
        clock.now += 29.9 / 5000
    with progress_bar(total=3, desc="checking images") as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_an_iterable_without_a_length_and_a_slow_rate(capsys, monkeypatch):
    """No total: a count without percentage or ETA; under one item a second, seconds per item, as tqdm shows."""
    clock = FakeClock(monkeypatch)
    for _ in progress_bar((name for name in "abc"), desc="shapes", unit="img"):
        clock.now += 20
    assert capsys.readouterr().err == "shapes: 2 in 0:00:40, 20.0 s/img\nshapes: 3 in 0:01:00, 20.0 s/img\n"


def test_update_in_a_with_block_counts_from_initial_and_shows_the_postfix(capsys, monkeypatch):
    """``initial`` (a resumed run) is in the count, not in the rate; at most one line per interval, however many
    updates; the final line comes once, even if closed twice."""
    clock = FakeClock(monkeypatch)
    with progress_bar(total=1000, initial=400, desc="train", unit="it") as bar:
        for _ in range(100):
            clock.now += 0.5
            bar.update(2)
            bar.set_postfix(loss="0.50")
        bar.close()
    assert capsys.readouterr().err == (
        "train: 520/1,000 (52 %) in 0:00:30, 4.0 it/s, ETA 0:02:00, loss=0.50\n"
        "train: 600/1,000 (60 %) in 0:00:50, 4.0 it/s, ETA 0:01:40, loss=0.50\n"
    )


def test_disable_and_line_every_none_print_nothing_and_a_terminal_gets_the_tqdm_bar(capsys, monkeypatch):
    """disable=True (e.g. rank 1 under torchrun) and line_every=None (the training loop, which prints its own log
    interval lines when ``bar.disable``) give a disabled tqdm bar: no line, however long the job."""
    clock = FakeClock(monkeypatch)
    for bar in (progress_bar(range(3), desc="Evaluating", disable=True), progress_bar(range(3), line_every=None)):
        assert isinstance(bar, tqdm) and bar.disable
        for _ in bar:
            clock.now += 100
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys, "stderr", TerminalView(sys.stderr))
    with progress_bar(total=2, desc="Detecting") as bar:
        assert isinstance(bar, tqdm) and not bar.disable
    with progress_bar(total=2, desc="Detecting", disable=True) as bar:
        assert bar.disable


def test_the_shapes_generation_prints_its_lines_under_nohup(tmp_path, capsys, monkeypatch):
    """A real caller: data/shapes.py iterates over its list of images; each clock reading here is 40 s later."""
    ticks = itertools.count(step=40)
    monkeypatch.setattr("utils.progress.time", SimpleNamespace(monotonic=lambda: float(next(ticks))))
    generate_shapes_dataset(tmp_path / "shapes", num_trainval=2, num_test=2)
    err = capsys.readouterr().err
    assert err == (
        "shapes: 1/4 (25 %) in 0:00:40, 40.0 s/img, ETA 0:02:00\n"
        "shapes: 2/4 (50 %) in 0:01:20, 40.0 s/img, ETA 0:01:20\n"
        "shapes: 3/4 (75 %) in 0:02:00, 40.0 s/img, ETA 0:00:40\n"
        "shapes: 4/4 (100 %) in 0:02:40, 40.0 s/img\n"  # not again at the end (0:03:20), with the same count
    )
    assert "\r" not in err


def test_iterating_a_bar_made_for_update_is_refused_clearly(capsys):
    with pytest.raises(TypeError, match="nothing to iterate; pass an iterable, or count with update"):
        list(progress_bar(total=3, desc="x"))
