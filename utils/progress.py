"""Progress bars drawn on a terminal only (a leaf module: data/ and utils/ import it)."""
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress_bar(iterable: Iterable | None = None, *, disable: bool = False, **kwargs: Any) -> tqdm:
    """A tqdm bar over ``iterable`` (``kwargs`` as tqdm's) on standard error, drawn only when that is a terminal.

    Redirected to a file, piped to ``tee``, under ``nohup`` or a batch scheduler, each redraw (up to ten a second) is
    a carriage-return "line" appended to the output file: a long run's file grew by megabytes on one line. A caller
    that shows figures in the bar checks ``bar.disable`` and prints them as lines instead.
    """
    isatty = getattr(sys.stderr, "isatty", None)  # sys.stderr is None under pythonw
    return tqdm(iterable, disable=disable or not (isatty and isatty()), **kwargs)
