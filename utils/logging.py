"""The run folder's logs: ``log.txt`` (every printed line), ``metrics.jsonl`` (every metric row)
and one CSV per row kind (``train.csv``, ``eval.csv``). Only the main process writes; others are silent.
"""
from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from tqdm import tqdm

from utils.files import append_text, naming_file, replace_text, write_text

ROW_KIND = re.compile(r"[A-Za-z0-9_]+")  # a row kind names its CSV file: no separators, no dots
STANDARD_OUTPUT = "<standard output>"  # how a refused write of a printed line names the file it went to
RUN_ID_FILE = "run_id.txt"  # the id of the run whose logs the folder holds (the checkpoint's config["run_id"])


def logged_run_id(folder: Path) -> str | None:
    """The id of the run whose logs ``folder`` holds (its :data:`RUN_ID_FILE`, written when the run starts
    training), or None."""
    path = folder / RUN_ID_FILE
    return (_read_text(path).strip() or None) if path.is_file() else None


class RunLog:
    """Print and record a run's messages and metrics under ``run_dir``; appends on resume.

    With ``hold_lines`` lines are printed at once but written only when the run has said whose logs the folder holds:
    :meth:`begin_new_run` (a new run: the earlier run's files are set aside) or :meth:`continue_run` (the folder's
    run resumed), so a start that fails before either changes no file.
    """

    def __init__(self, run_dir: str | Path | None, enabled: bool = True, hold_lines: bool = False) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir) if run_dir is not None else None  # created at the first line written
        self._held_lines: list[str] | None = [] if hold_lines else None

    def info(self, message: str) -> None:
        """Print ``message`` (without breaking a tqdm bar) and append it to ``log.txt``."""
        if not self.enabled:
            return
        with naming_file(STANDARD_OUTPUT):  # redirected to a full disk, or piped to a program that ended
            tqdm.write(message)
        self.record(message)

    def record(self, message: str) -> None:
        """Append ``message`` to ``log.txt`` without printing it: a line printed before the run folder was known."""
        if not self.enabled:
            return
        # a file name in another encoding than UTF-8 holds lone surrogates: written as escapes, log.txt stays UTF-8
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n".encode("utf-8", "backslashreplace").decode("utf-8")
        if self._held_lines is not None:
            self._held_lines.append(line)
        elif self.run_dir is not None:
            append_text(self._file("log.txt"), line)

    def begin_new_run(self, run_id: str | None = None) -> Path | None:
        """Set the earlier run's logs aside (:meth:`set_aside_earlier_run`), record ``run_id`` as the folder's run and
        write the lines held so far. Returns the folder the earlier logs moved to, or None."""
        earlier = self.set_aside_earlier_run()
        if run_id is not None and self.enabled and self.run_dir is not None:
            write_text(self._file(RUN_ID_FILE), run_id + "\n")
        self._write_held_lines()
        return earlier

    def continue_run(self, iteration: int) -> int:
        """The folder's run resumed from its checkpoint of ``iteration``: :meth:`rewind` to it, then write the lines
        held so far. Returns the number of CSV rows dropped."""
        dropped = self.rewind(iteration)
        self._write_held_lines()
        return dropped

    def run_id(self) -> str | None:
        """The id of the run whose logs the folder holds, as :meth:`begin_new_run` recorded it (None: none)."""
        return logged_run_id(self.run_dir) if self.enabled and self.run_dir is not None else None

    def has_row(self, kind: str, iteration: int) -> bool:
        """Whether ``metrics.jsonl`` holds a ``kind`` row of ``iteration``."""
        return any(row.get("iteration") == iteration for row in self.rows(kind))

    def rows(self, kind: str) -> list[dict]:
        """The ``kind`` rows of ``metrics.jsonl``, in order (without their ``kind``); [] where nothing is written."""
        if not self.enabled or self.run_dir is None or not self._jsonl_path.is_file():
            return []
        rows = (_row_of(line) for line in _read_text(self._jsonl_path).splitlines())
        return [{key: value for key, value in row.items() if key != "kind"} for row in rows if row.get("kind") == kind]

    def _file(self, name: str) -> Path:
        """``run_dir / name``, creating ``run_dir`` first: the run folder appears with the first file written."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return self.run_dir / name

    def _write_held_lines(self) -> None:
        held, self._held_lines = self._held_lines or [], None
        if held and self.enabled and self.run_dir is not None:
            append_text(self._file("log.txt"), "".join(held))

    def metrics(self, kind: str, row: Mapping[str, Any]) -> None:
        """Append ``row`` to ``metrics.jsonl`` (with ``kind``) and to ``<kind>.csv``.

        The CSV's columns are those of its first row, then each key a later row brings (e.g. the statistics of
        ``--assign_stats`` given to a ``--resume``) is added as a column, empty in the rows before it.
        """
        if not ROW_KIND.fullmatch(kind):
            raise ValueError(f"row kind {kind!r} must be letters, digits and underscores (it names {kind}.csv)")
        if self._held_lines is not None:
            raise RuntimeError("metrics come after begin_new_run() or continue_run(), which say whose logs the "
                               "folder holds")
        if not self.enabled or self.run_dir is None:
            return
        row = {key: _plain(value) for key, value in row.items()}
        append_text(self._file("metrics.jsonl"), json.dumps({"kind": kind, **row}) + "\n")
        csv_path = self._file(f"{kind}.csv")
        columns = _csv_header(csv_path)
        if columns and (added := [key for key in row if key not in columns]):
            columns = _widen_csv(csv_path, columns + added)
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=columns or list(row), restval="")
        if not columns:
            writer.writeheader()
        writer.writerow(row)
        append_text(csv_path, text.getvalue())

    def set_aside_earlier_run(self) -> Path | None:
        """Move the logs of an earlier run in ``run_dir`` (one that logged metrics) into ``run_dir/earlier-<time of
        its last entry>/``, so a new run's files hold that run alone. Returns the new folder, or None (nothing moved).

        Only this class's files move (``log.txt``, the run id, ``metrics.jsonl`` and the CSV of each row kind it
        lists); a start that stopped before logging metrics leaves its ``log.txt`` lines to the next attempt.
        """
        if not self.enabled or self.run_dir is None or not self._jsonl_path.is_file():
            return None
        # metrics.jsonl last: it marks an earlier run, so an interrupted move is completed by the next new run
        files = [self.run_dir / "log.txt", self.run_dir / RUN_ID_FILE, *self._csv_paths(), self._jsonl_path]
        files = [path for path in files if path.is_file()]
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(max(path.stat().st_mtime for path in files)))
        target, copy = self.run_dir / f"earlier-{stamp}", 1
        while target.exists():
            copy += 1
            target = self.run_dir / f"earlier-{stamp}-{copy}"
        target.mkdir()
        for path in files:
            path.rename(target / path.name)
        return target

    def rewind(self, iteration: int, redo_evaluation: bool = False) -> int:
        """Drop the metric rows of iterations after ``iteration`` from ``metrics.jsonl`` and the CSVs.

        A run resumed from the checkpoint of ``iteration`` repeats the iterations after it; their rows from the
        attempt that stopped would otherwise appear twice. With ``redo_evaluation`` (a finished run resumed: its final
        evaluation runs again) the ``eval`` rows of ``iteration`` go too. A last line without its newline (a write cut
        short by a crash) is dropped, in every file. Rows without an iteration are kept, and so is ``log.txt`` (the
        story of every attempt). Returns the number of rows dropped from the CSVs.
        """
        if not self.enabled or self.run_dir is None:
            return 0

        def repeated(kind: Any, logged_iteration: Any) -> bool:
            last_kept = iteration - 1 if redo_evaluation and kind == "eval" else iteration
            return _after(logged_iteration, last_kept)

        dropped = sum(_rewind_csv(path, lambda value, kind=path.stem: repeated(kind, value))
                      for path in self._csv_paths())
        _rewind_jsonl(self._jsonl_path, lambda row: repeated(row.get("kind"), row.get("iteration")))
        return dropped

    @property
    def _jsonl_path(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "metrics.jsonl"

    def _csv_paths(self) -> list[Path]:
        """``<kind>.csv`` for each row kind that ``metrics.jsonl`` lists (kinds that could not name a file skipped)."""
        text = _read_text(self._jsonl_path) if self._jsonl_path.is_file() else ""
        kinds = (_row_of(line).get("kind") for line in text.splitlines())
        assert self.run_dir is not None
        return [self.run_dir / f"{kind}.csv" for kind in dict.fromkeys(kinds)
                if isinstance(kind, str) and ROW_KIND.fullmatch(kind)]


def _rewind_csv(path: Path, repeated: Callable[[str], bool]) -> int:
    """Rewrite the CSV at ``path`` without its cut-short last line and the rows whose ``iteration`` cell is
    ``repeated``; a header cut short leaves the file empty (the next row writes a new one). Returns rows dropped."""
    if not path.is_file():
        return 0
    text = _read_text(path)
    rows = list(csv.reader(io.StringIO(_complete_lines(text), newline="")))
    kept = rows
    if rows and "iteration" in rows[0]:
        column = rows[0].index("iteration")
        kept = rows[:1] + [row for row in rows[1:] if not repeated(row[column] if column < len(row) else "")]
    if len(kept) < len(rows) or _complete_lines(text) != text:
        rewritten = io.StringIO(newline="")
        csv.writer(rewritten).writerows(kept)
        replace_text(path, rewritten.getvalue())
    return len(rows) - len(kept)


def _widen_csv(path: Path, columns: list[str]) -> list[str]:
    """Rewrite the CSV at ``path`` under the header ``columns`` (its own followed by new ones), its rows padded with
    empty cells; returns ``columns``."""
    rows = list(csv.reader(io.StringIO(_complete_lines(_read_text(path)), newline="")))[1:]
    rewritten = io.StringIO(newline="")
    csv.writer(rewritten).writerows([columns] + [row + [""] * (len(columns) - len(row)) for row in rows])
    replace_text(path, rewritten.getvalue())
    return columns


def _rewind_jsonl(path: Path, repeated: Callable[[dict], bool]) -> None:
    """Rewrite ``metrics.jsonl`` without its cut-short last line and the rows that are ``repeated``."""
    if not path.is_file():
        return
    text = _read_text(path)
    lines = _complete_lines(text).splitlines(keepends=True)
    kept = [line for line in lines if not repeated(_row_of(line))]
    if len(kept) < len(lines) or _complete_lines(text) != text:
        replace_text(path, "".join(kept))


def _csv_header(path: Path) -> list[str]:
    """The columns of the CSV at ``path`` ([] when it does not exist or is empty)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), [])


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
