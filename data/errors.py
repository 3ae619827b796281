"""Errors and warnings raised for bad or missing data. Every message names the file and the problem."""
from __future__ import annotations

from collections.abc import Sequence

PROBLEMS_SHOWN = 10


class DataError(Exception):
    """A dataset file is missing, unreadable or inconsistent. The message names the file and how to fix it."""


class DatasetNotFoundError(DataError):
    """A dataset folder or annotation file is missing. One line: the expected path and the script that provides it."""


class DataWarning(UserWarning):
    """A recoverable annotation problem was fixed up (e.g. a box clipped to the image); the message counts them."""


def format_problems(header: str, problems: Sequence[str], limit: int = PROBLEMS_SHOWN) -> str:
    """``header`` + the first ``limit`` problems, one per line, + how many more there are."""
    lines = [f"{header}: {len(problems)} problem(s)"]
    lines += [f"  - {problem}" for problem in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)
