"""utils.logging.RunLog: the run folder's files, resuming (rows of repeated iterations dropped) and a new run in a
folder that holds an earlier run's logs (moved aside)."""
import csv
import json
import os
import time

from utils.logging import RunLog


def csv_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def jsonl_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_rows_go_to_the_jsonl_and_to_one_csv_per_kind_with_the_first_rows_columns(tmp_path, capsys):
    log = RunLog(tmp_path / "run")
    assert not (tmp_path / "run").exists()  # created by the first line written, not by a start that fails earlier
    log.info("starting")
    log.metrics("train", {"iteration": 1, "loss": 0.5})
    log.metrics("train", {"iteration": 2, "loss": 0.25, "extra": 3})
    log.metrics("eval", {"iteration": 2, "mAP": 0.125})
    assert "starting" in capsys.readouterr().out
    assert (tmp_path / "run" / "log.txt").read_text().endswith(" starting\n")
    assert csv_rows(tmp_path / "run" / "train.csv") == [{"iteration": "1", "loss": "0.5"}, {"iteration": "2", "loss": "0.25"}]
    assert jsonl_rows(tmp_path / "run" / "metrics.jsonl") == [
        {"kind": "train", "iteration": 1, "loss": 0.5},
        {"kind": "train", "iteration": 2, "loss": 0.25, "extra": 3},
        {"kind": "eval", "iteration": 2, "mAP": 0.125},
    ]


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
