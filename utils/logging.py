"""The run folder's logs: ``log.txt`` (every printed line), ``metrics.jsonl`` (every metric row)
and one CSV per row kind (``train.csv``, ``eval.csv``). Only the main process writes; others are silent.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

from tqdm import tqdm


class RunLog:
    """Print and record a run's messages and metrics under ``run_dir``; appends on resume."""

    def __init__(self, run_dir: str | Path | None, enabled: bool = True):
        self.enabled = enabled
        self.run_dir = Path(run_dir) if run_dir is not None else None  # created at the first line written

    def info(self, message: str) -> None:
        """Print ``message`` (without breaking a tqdm bar) and append it to ``log.txt``."""
        if not self.enabled:
            return
        tqdm.write(message)
        if self.run_dir is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "log.txt", "a", encoding="utf-8") as handle:
                handle.write(f"{stamp} {message}\n")

    def set_aside_earlier_run(self) -> Path | None:
        """Move the logs of an earlier run in ``run_dir`` (one that logged metrics) into ``run_dir/earlier-<time of
        its last entry>/``, so a new run's files hold that run alone. Returns the new folder, or None (nothing moved).

        Only this class's files move (``log.txt``, ``metrics.jsonl`` and the CSV of each row kind it lists); a start
        that stopped before logging metrics leaves its ``log.txt`` lines to the next attempt.
        """
        if not self.enabled or self.run_dir is None or not (self.run_dir / "metrics.jsonl").is_file():
            return None
        files = [path for path in self._logged_files() if path.is_file()]
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(max(path.stat().st_mtime for path in files)))
        target, copy = self.run_dir / f"earlier-{stamp}", 1
        while target.exists():
            copy += 1
            target = self.run_dir / f"earlier-{stamp}-{copy}"
        target.mkdir()
        for path in files:
            path.rename(target / path.name)
        return target

    def rewind(self, iteration: int) -> int:
        """Drop the metric rows of iterations after ``iteration`` from ``metrics.jsonl`` and the CSVs.

        A run resumed from the checkpoint of ``iteration`` repeats the iterations after it; their rows from the
        attempt that stopped would otherwise appear twice. A last line without its newline (a write cut short by a
        crash) is dropped too. Rows without an iteration are kept, and so is ``log.txt`` (the story of every
        attempt). Returns the number of rows dropped from the CSVs.
        """
        if not self.enabled or self.run_dir is None:
            return 0
        dropped = 0
        for csv_path in self._logged_files()[2:]:
            if not csv_path.is_file():
                continue
            text = _read_text(csv_path)
            rows = list(csv.reader(io.StringIO(_complete_lines(text), newline="")))
            if not rows or "iteration" not in rows[0]:
                continue
            column = rows[0].index("iteration")
            kept = [rows[0]] + [row for row in rows[1:] if not _after(row[column] if column < len(row) else "", iteration)]
            if len(kept) < len(rows) or _complete_lines(text) != text:
                rewritten = io.StringIO(newline="")
                csv.writer(rewritten).writerows(kept)
                _replace_text(csv_path, rewritten.getvalue())
                dropped += len(rows) - len(kept)
        jsonl_path = self.run_dir / "metrics.jsonl"
        if jsonl_path.is_file():
            text = _read_text(jsonl_path)
            lines = _complete_lines(text).splitlines(keepends=True)
            kept_lines = [line for line in lines if not _after(_row_of(line).get("iteration"), iteration)]
            if len(kept_lines) < len(lines) or _complete_lines(text) != text:
                _replace_text(jsonl_path, "".join(kept_lines))
        return dropped

    def _logged_files(self) -> list[Path]:
        """``log.txt``, ``metrics.jsonl`` and ``<kind>.csv`` for each row kind that ``metrics.jsonl`` lists."""
        assert self.run_dir is not None
        jsonl_path = self.run_dir / "metrics.jsonl"
        lines = jsonl_path.read_text(encoding="utf-8").splitlines() if jsonl_path.is_file() else []
        kinds = dict.fromkeys(str(kind) for line in lines if (kind := _row_of(line).get("kind")) is not None)
        return [self.run_dir / "log.txt", jsonl_path] + [self.run_dir / f"{kind}.csv" for kind in kinds]

    def metrics(self, kind: str, row: Mapping[str, Any]) -> None:
        """Append ``row`` to ``metrics.jsonl`` (with ``kind``) and to ``<kind>.csv``.

        The CSV's columns are those of its first row; later keys that are not columns are kept in the JSONL only.
        """
        if not self.enabled or self.run_dir is None:
            return
        row = {key: _plain(value) for key, value in row.items()}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"kind": kind, **row}) + "\n")
        csv_path = self.run_dir / f"{kind}.csv"
        if csv_path.exists() and csv_path.stat().st_size > 0:
            with open(csv_path, newline="", encoding="utf-8") as handle:
                columns = next(csv.reader(handle))
            write_header = False
        else:
            columns, write_header = list(row), True
        with open(csv_path, "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", restval="")
            if write_header:
                writer.writeheader()
            writer.writerow(row)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def _row_of(jsonl_line: str) -> dict:
    """One ``metrics.jsonl`` line as a dict ({} for a line that is not a JSON object)."""
    try:
        row = json.loads(jsonl_line)
    except ValueError:
        return {}
    return row if isinstance(row, dict) else {}


def _after(value: Any, iteration: int) -> bool:
    """Whether a logged iteration (an int, or its CSV text) is later than ``iteration``; anything else is not."""
    try:
        return int(value) > iteration
    except (TypeError, ValueError):
        return False


def _read_text(path: Path) -> str:
    """The file's text with its line endings as written (``\\r\\n`` in the CSVs)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return handle.read()


def _complete_lines(text: str) -> str:
    """``text`` up to its last newline: a last line without one is a write that a crash cut short."""
    return text[: text.rfind("\n") + 1]


def _replace_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so a crash keeps the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)
