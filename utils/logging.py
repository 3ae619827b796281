"""The run folder's logs: ``log.txt`` (every printed line), ``metrics.jsonl`` (every metric row)
and one CSV per row kind (``train.csv``, ``eval.csv``). Only the main process writes; others are silent.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Mapping

from tqdm import tqdm


class RunLog:
    """Print and record a run's messages and metrics under ``run_dir``; appends on resume."""

    def __init__(self, run_dir: str | Path | None, enabled: bool = True):
        self.enabled = enabled
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.enabled and self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    def info(self, message: str) -> None:
        """Print ``message`` (without breaking a tqdm bar) and append it to ``log.txt``."""
        if not self.enabled:
            return
        tqdm.write(message)
        if self.run_dir is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(self.run_dir / "log.txt", "a", encoding="utf-8") as handle:
                handle.write(f"{stamp} {message}\n")

    def metrics(self, kind: str, row: Mapping[str, Any]) -> None:
        """Append ``row`` to ``metrics.jsonl`` (with ``kind``) and to ``<kind>.csv``.

        The CSV's columns are those of its first row; later keys that are not columns are kept in the JSONL only.
        """
        if not self.enabled or self.run_dir is None:
            return
        row = {key: _plain(value) for key, value in row.items()}
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
