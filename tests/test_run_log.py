"""utils.logging.RunLog: the run folder's files, resuming (rows of repeated iterations dropped) and a new run in a
folder that holds an earlier run's logs (moved aside)."""
import csv
import errno
import json
import os
import time
from pathlib import Path

import pytest

from utils.logging import RunLog


def csv_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def jsonl_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_rows_go_to_the_jsonl_and_to_one_csv_per_kind_whose_columns_grow_with_new_keys(tmp_path, capsys):
    log = RunLog(tmp_path / "run")
    assert not (tmp_path / "run").exists()  # created by the first line written, not by a start that fails earlier
    log.info("starting")
    log.metrics("train", {"iteration": 1, "loss": 0.5})
    log.metrics("train", {"iteration": 2, "loss": 0.25, "extra": 3})
    log.metrics("eval", {"iteration": 2, "mAP": 0.125})
    log.metrics("train", {"iteration": 3, "loss": 0.125})
    assert "starting" in capsys.readouterr().out
    assert (tmp_path / "run" / "log.txt").read_text().endswith(" starting\n")
    assert csv_rows(tmp_path / "run" / "train.csv") == [
        {"iteration": "1", "loss": "0.5", "extra": ""}, {"iteration": "2", "loss": "0.25", "extra": "3"},
        {"iteration": "3", "loss": "0.125", "extra": ""}]
    assert jsonl_rows(tmp_path / "run" / "metrics.jsonl") == [
        {"kind": "train", "iteration": 1, "loss": 0.5},
        {"kind": "train", "iteration": 2, "loss": 0.25, "extra": 3},
        {"kind": "eval", "iteration": 2, "mAP": 0.125},
        {"kind": "train", "iteration": 3, "loss": 0.125},
    ]


def test_statistics_that_a_resumed_attempt_adds_get_columns_of_their_own_in_the_csv(tmp_path):
    """A run started without --assign_stats and resumed with it: the statistics of the rows logged after the resume
    are in train.csv too (they were left out of it, kept in metrics.jsonl alone), the earlier rows' cells empty."""
    run = tmp_path / "run"
    RunLog(run).metrics("train", {"iteration": 2, "loss_l": 1.5})
    resumed = RunLog(run)
    resumed.rewind(2)
    resumed.metrics("train", {"iteration": 4, "loss_l": 1.25, "pos_per_object": 7.5, "disagree_with_iou": 0.25})
    assert csv_rows(run / "train.csv") == [
        {"iteration": "2", "loss_l": "1.5", "pos_per_object": "", "disagree_with_iou": ""},
        {"iteration": "4", "loss_l": "1.25", "pos_per_object": "7.5", "disagree_with_iou": "0.25"},
    ]
    assert resumed.rewind(2) == 1  # the widened file rewinds as before
    assert csv_rows(run / "train.csv") == [
        {"iteration": "2", "loss_l": "1.5", "pos_per_object": "", "disagree_with_iou": ""}]


def test_a_disabled_log_writes_nothing(tmp_path, capsys):
    log = RunLog(tmp_path / "run", enabled=False)
    log.info("hidden")
    log.metrics("train", {"iteration": 1})
    assert log.rewind(0) == 0 and log.set_aside_earlier_run() is None
    assert capsys.readouterr().out == "" and not (tmp_path / "run").exists()


def test_rewind_drops_the_rows_after_the_checkpoint_iteration_from_every_file(tmp_path):
    run = tmp_path / "run"
    log = RunLog(run)
    for iteration in range(1, 7):
        log.metrics("train", {"iteration": iteration, "loss": 1.0 / iteration})
        if iteration % 3 == 0:
            log.metrics("eval", {"iteration": iteration, "mAP": iteration / 10})
    log.metrics("assign_summary", {"log_intervals": 6})  # no iteration: kept
    log.info("stopped by a crash")
    (run / "notes.csv").write_text("iteration,note\n9,not a RunLog file\n")  # not listed in metrics.jsonl: untouched

    assert RunLog(run).rewind(4) == 2 + 1  # train rows 5 and 6, eval row 6
    assert [row["iteration"] for row in csv_rows(run / "train.csv")] == ["1", "2", "3", "4"]
    assert csv_rows(run / "eval.csv") == [{"iteration": "3", "mAP": "0.3"}]
    assert csv_rows(run / "assign_summary.csv") == [{"log_intervals": "6"}]
    assert [(row["kind"], row.get("iteration")) for row in jsonl_rows(run / "metrics.jsonl")] == [
        ("train", 1), ("train", 2), ("train", 3), ("eval", 3), ("train", 4), ("assign_summary", None),
    ]  # fmt: skip
    assert "stopped by a crash" in (run / "log.txt").read_text()
    assert (run / "notes.csv").read_text() == "iteration,note\n9,not a RunLog file\n"
    assert RunLog(run).rewind(4) == 0  # nothing left to drop
    assert sorted(path.name for path in run.iterdir()) == [
        "assign_summary.csv", "eval.csv", "log.txt", "metrics.jsonl", "notes.csv", "train.csv"
    ]  # fmt: skip


def test_rewind_drops_a_last_line_that_a_crash_cut_short(tmp_path):
    """A kill during a write leaves '1' of a row of iteration 12 (it would read as iteration 1) and half a JSON line;
    the resumed run's rows must start on lines of their own."""
    run = tmp_path / "run"
    log = RunLog(run)
    for iteration in (4, 8):
        log.metrics("train", {"iteration": iteration, "loss": 0.5})
    with open(run / "train.csv", "a", newline="") as handle:
        handle.write("1")
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "train", "itera')
    assert RunLog(run).rewind(8) == 0  # no complete row to drop; the cut lines go
    log.metrics("train", {"iteration": 12, "loss": 0.25})
    assert csv_rows(run / "train.csv") == [{"iteration": "4", "loss": "0.5"}, {"iteration": "8", "loss": "0.5"},
                                           {"iteration": "12", "loss": "0.25"}]
    assert [row["iteration"] for row in jsonl_rows(run / "metrics.jsonl")] == [4, 8, 12]


def test_a_new_run_moves_an_earlier_runs_logs_into_a_subfolder(tmp_path):
    run = tmp_path / "run"
    earlier = RunLog(run)
    earlier.info("the earlier run")
    earlier.metrics("train", {"iteration": 1, "loss": 0.5})
    earlier.metrics("eval", {"iteration": 1, "mAP": 0.5})
    (run / "mine.txt").write_text("a user's file")
    stamp_time = 1_700_000_000
    for name in ("log.txt", "metrics.jsonl", "train.csv", "eval.csv"):
        os.utime(run / name, (stamp_time, stamp_time - 60 if name != "eval.csv" else stamp_time))

    moved = RunLog(run).set_aside_earlier_run()
    assert moved == run / f"earlier-{time.strftime('%Y%m%d-%H%M%S', time.localtime(stamp_time))}"
    assert sorted(path.name for path in moved.iterdir()) == ["eval.csv", "log.txt", "metrics.jsonl", "train.csv"]
    assert sorted(path.name for path in run.iterdir()) == [moved.name, "mine.txt"]
    assert csv_rows(moved / "train.csv") == [{"iteration": "1", "loss": "0.5"}]

    second = RunLog(run)
    second.metrics("train", {"iteration": 1, "loss": 0.75})
    for name in ("metrics.jsonl", "train.csv"):
        os.utime(run / name, (stamp_time, stamp_time))
    assert second.set_aside_earlier_run().name == moved.name + "-2"  # a second earlier run, same second


def test_a_start_that_logged_no_metrics_is_not_an_earlier_run(tmp_path):
    run = tmp_path / "run"
    RunLog(run).info("a start that stopped on bad data")
    assert RunLog(run).set_aside_earlier_run() is None
    assert sorted(path.name for path in run.iterdir()) == ["log.txt"]


def test_a_new_runs_lines_wait_for_begin_new_run_which_sets_the_earlier_run_aside_first(tmp_path, capsys):
    """A start that fails before begin_new_run changes no file; after it, the held lines open the new log.txt."""
    run = tmp_path / "run"
    earlier = RunLog(run)
    earlier.info("the earlier run")
    earlier.metrics("train", {"iteration": 1, "loss": 0.5})
    before = {path.name: path.read_bytes() for path in run.iterdir()}

    failed = RunLog(run, hold_lines=True)
    failed.info("a start that fails on bad data")
    assert "a start that fails on bad data" in capsys.readouterr().out  # printed at once
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before
    with pytest.raises(RuntimeError, match="begin_new_run"):
        failed.metrics("train", {"iteration": 1, "loss": 0.25})

    log = RunLog(run, hold_lines=True)
    log.info("loading the data")
    log.info("training")
    assert log.run_id() is None  # the earlier run recorded none
    moved = log.begin_new_run("0123abcd")
    assert moved is not None and (moved / "log.txt").read_text().endswith(" the earlier run\n")
    log.info("iteration 1")
    lines = (run / "log.txt").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["loading the data", "training", "iteration 1"]
    log.metrics("train", {"iteration": 1, "loss": 0.25})
    assert csv_rows(run / "train.csv") == [{"iteration": "1", "loss": "0.25"}]
    assert log.run_id() == RunLog(run).run_id() == "0123abcd"


def test_continue_run_rewinds_then_writes_the_held_lines_and_set_aside_moves_the_run_id(tmp_path):
    run = tmp_path / "run"
    first = RunLog(run, hold_lines=True)
    first.begin_new_run("run-a")
    for iteration in (1, 2, 3):
        first.metrics("train", {"iteration": iteration, "loss": 1.0})
    resumed = RunLog(run, hold_lines=True)
    resumed.info("resuming")
    assert not (run / "log.txt").exists()  # held
    assert resumed.run_id() == "run-a" and resumed.continue_run(2) == 1
    assert (run / "log.txt").read_text().endswith(" resuming\n")
    assert [row["iteration"] for row in csv_rows(run / "train.csv")] == ["1", "2"]

    moved = RunLog(run, hold_lines=True).begin_new_run("run-b")
    assert (moved / "run_id.txt").read_text() == "run-a\n" and (run / "run_id.txt").read_text() == "run-b\n"
    assert sorted(path.name for path in moved.iterdir()) == ["log.txt", "metrics.jsonl", "run_id.txt", "train.csv"]


def test_rewind_with_redo_evaluation_drops_the_eval_rows_of_the_checkpoint_iteration_too(tmp_path):
    """A finished run resumed evaluates again at its last iteration: that eval row is replaced, not repeated; the
    training rows of that iteration are not repeated, so they stay."""
    run = tmp_path / "run"
    log = RunLog(run)
    for iteration in (4, 8):
        log.metrics("train", {"iteration": iteration, "loss": 0.5})
        log.metrics("eval", {"iteration": iteration, "mAP": iteration / 10})
    assert RunLog(run).rewind(8, redo_evaluation=True) == 1
    assert csv_rows(run / "eval.csv") == [{"iteration": "4", "mAP": "0.4"}]
    assert [row["iteration"] for row in csv_rows(run / "train.csv")] == ["4", "8"]
    assert [(row["kind"], row["iteration"]) for row in jsonl_rows(run / "metrics.jsonl")] == [
        ("train", 4), ("eval", 4), ("train", 8)]


def test_rewind_empties_a_csv_whose_header_was_cut_and_cuts_rows_of_csvs_without_iterations(tmp_path):
    run = tmp_path / "run"
    log = RunLog(run)
    log.metrics("train", {"iteration": 4, "loss": 0.5})
    log.metrics("assign_summary", {"log_intervals": 6})
    (run / "train.csv").write_text("itera")  # the crash cut the header itself
    with open(run / "assign_summary.csv", "a", newline="") as handle:
        handle.write("7")
    assert RunLog(run).rewind(4) == 0
    assert (run / "train.csv").read_text() == ""
    log.metrics("train", {"iteration": 5, "loss": 0.25})
    log.metrics("assign_summary", {"log_intervals": 8})
    assert csv_rows(run / "train.csv") == [{"iteration": "5", "loss": "0.25"}]
    assert csv_rows(run / "assign_summary.csv") == [{"log_intervals": "6"}, {"log_intervals": "8"}]


def test_row_kinds_that_are_not_plain_names_neither_write_nor_rewind_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "results.csv").write_text("iteration,x\n9,outside the run folder\n")
    (run / "metrics.jsonl").write_text('{"kind": "../results", "iteration": 9}\n{"kind": 3}\n')
    assert RunLog(run).rewind(4) == 0
    assert (tmp_path / "results.csv").read_text() == "iteration,x\n9,outside the run folder\n"
    with pytest.raises(ValueError, match="row kind '../results' must be letters, digits and underscores"):
        RunLog(run).metrics("../results", {"iteration": 1})


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device that is always full)")
def test_a_full_disk_names_the_log_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.txt").symlink_to("/dev/full")
    with pytest.raises(OSError) as raised:
        RunLog(run).info("a line")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(run / "log.txt")


def test_a_set_aside_cut_short_is_completed_by_the_next_new_run(tmp_path, monkeypatch):
    """metrics.jsonl, which marks an earlier run, moves last: after a move stopped half-way the next new run moves the
    rest, instead of appending its rows to the earlier run's train.csv."""
    run = tmp_path / "run"
    earlier = RunLog(run)
    earlier.metrics("train", {"iteration": 1, "loss": 1.0})
    earlier.metrics("eval", {"iteration": 1, "mAP": 0.5})
    real_rename, renames = Path.rename, []

    def rename_then_stop(self, target):
        renames.append(self.name)
        if len(renames) == 2:
            raise KeyboardInterrupt
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename_then_stop)
    with pytest.raises(KeyboardInterrupt):
        RunLog(run).set_aside_earlier_run()
    monkeypatch.undo()
    assert renames == ["train.csv", "eval.csv"] and (run / "metrics.jsonl").is_file()

    log = RunLog(run, hold_lines=True)
    log.begin_new_run()
    log.metrics("train", {"iteration": 1, "loss": 3.0, "other": 2})
    assert csv_rows(run / "train.csv") == [{"iteration": "1", "loss": "3.0", "other": "2"}]
    moved = sorted(path.name for folder in run.iterdir() if folder.is_dir() for path in folder.iterdir())
    assert moved == ["eval.csv", "metrics.jsonl", "train.csv"]


def test_standard_output_refused_is_named(tmp_path, monkeypatch):
    def full_disk(message, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("utils.logging.tqdm.write", full_disk)
    with pytest.raises(OSError) as raised:
        RunLog(tmp_path / "run").info("a line")
    assert raised.value.filename == "<standard output>" and raised.value.errno == errno.ENOSPC


def test_a_line_naming_a_file_whose_name_is_not_utf8_is_recorded_with_the_bytes_escaped(tmp_path):
    """A Linux file name in another encoding (``caf\\xe9``, Latin-1) reaches Python with a lone surrogate; writing it
    to the UTF-8 log.txt raised UnicodeEncodeError, which stopped a training run given such a --data_root (its
    command line is recorded) with exit code 2, or one whose data error named such an image."""
    folder = os.fsdecode(b"/data/caf\xe9")
    log = RunLog(tmp_path / "run")
    log.record(f"command: main.py --data_root {folder}")
    log.record(f"error: {folder}/1.jpg: cannot be read")
    lines = (tmp_path / "run" / "log.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["command: main.py --data_root /data/caf\\udce9",
                                                         "error: /data/caf\\udce9/1.jpg: cannot be read"]
