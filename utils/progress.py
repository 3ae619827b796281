"""Progress: a bar on a terminal, a plain line now and then elsewhere (a leaf module: data/ and utils/ import it)."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from types import TracebackType
from typing import Any

from tqdm import tqdm

LINE_EVERY_S = 30.0  # seconds between the plain lines printed where no bar is drawn


def progress_bar(iterable: Iterable | None = None, *, disable: bool = False, line_every: float | None = LINE_EVERY_S,
                 **kwargs: Any) -> tqdm | ProgressLines:
    """A tqdm bar over ``iterable`` (``kwargs`` as tqdm's) on standard error, drawn only when that is a terminal.

    Redirected to a file, piped to ``tee``, under ``nohup`` or a batch scheduler, each redraw (up to ten a second) is
    a carriage-return "line" appended to the output file: a long run's file grew by megabytes on one line. There,
    :class:`ProgressLines` prints a plain line at most every ``line_every`` seconds and one at the end (none for a job
    shorter than that), so that a long evaluation tells progress from a hang; ``line_every=None``: a disabled tqdm
    bar, for a caller printing lines of its own. Either way ``bar.disable`` is True where no bar is drawn: a caller
    that shows figures in the bar checks it and prints them as lines instead. ``disable=True``: nothing at all.
    """
    isatty = getattr(sys.stderr, "isatty", None)  # sys.stderr is None under pythonw
    terminal = bool(isatty and isatty())
    if disable or terminal or line_every is None:
        return tqdm(iterable, disable=disable or not terminal, **kwargs)
    return ProgressLines(iterable, total=kwargs.get("total"), desc=kwargs.get("desc"), unit=kwargs.get("unit", "it"),
                         initial=kwargs.get("initial", 0), every=line_every)


class ProgressLines:
    """What a tqdm bar shows, as a plain line on standard error at most every ``every`` seconds (time.monotonic) and
    once at the end, e.g. ``Evaluating: 1,200/5,000 (24 %) in 0:00:34, 35.1 batch/s, ETA 0:01:48``; a job that ends
    within ``every`` seconds prints nothing. ``total``: the count expected (None: ``len(iterable)`` where it has one,
    else unknown: no percentage or ETA); ``initial``: the count already done (a resumed run), not counted in the rate.
    Used as a tqdm bar: iterated, or ``update(n)`` in a ``with`` block; ``disable`` is True (no bar is drawn).
    """

    disable = True

    def __init__(self, iterable: Iterable | None = None, *, total: float | None = None, desc: str | None = None,
                 unit: str = "it", initial: float = 0, every: float = LINE_EVERY_S) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit, self.every = iterable, total, desc, unit, every
        self.n = self.initial = initial
        self.postfix = ""
        self.start = self.last_line = time.monotonic()
        self.shown: float | None = None  # the count on the last line printed
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("ProgressLines: nothing to iterate; pass an iterable, or count with update(n)")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None,
                 ) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Count ``n`` more done; print a line when ``every`` seconds have passed since the start or the last line."""
        self.n += n
        now = time.monotonic()
        if now - self.last_line >= self.every:
            self._print(now)

    def set_postfix(self, **figures: Any) -> None:
        """Figures shown after the rate on the next lines, as tqdm's ``set_postfix`` does (``name=value`` pairs)."""
        self.postfix = ", ".join(f"{name}={value}" for name, value in figures.items())

    def close(self) -> None:
        """The last line, with the final count, where the job lasted ``every`` seconds or more and the last line printed
        shows another count; once."""
        if self.closed:
            return
        self.closed = True
        now = time.monotonic()
        if now - self.start >= self.every and self.shown != self.n:
            self._print(now)

    def line(self, now: float) -> str:
        """The progress line at time ``now`` (a time.monotonic reading), without a newline."""
        elapsed = now - self.start
        parts = [f"{self.n:,}" if self.total is None else f"{self.n:,}/{self.total:,}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f} %)"
        parts[0] += f" in {clock(elapsed)}"
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        parts.append(f"{rate:.1f} {self.unit}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.1f} s/{self.unit}")
        if self.total is not None and rate > 0 and self.n < self.total:
            parts.append(f"ETA {clock((self.total - self.n) / rate)}")
        parts += [self.postfix] if self.postfix else []
        return (f"{self.desc}: " if self.desc else "") + ", ".join(parts)

    def _print(self, now: float) -> None:
        self.last_line, self.shown = now, self.n
        if sys.stderr is not None:
            print(self.line(now), file=sys.stderr, flush=True)


def clock(seconds: float) -> str:
    """``seconds`` as H:MM:SS, e.g. 0:01:48."""
    return str(timedelta(seconds=round(seconds)))
