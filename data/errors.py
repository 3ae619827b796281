"""Errors and warnings raised for bad or missing data. Every message names the file and the problem."""
from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TextIO

import torch
from tqdm import tqdm

from utils.distributed import DistributedContext, all_gather_objects, launch_context
from utils.environment import release_at_least
from utils.messages import SharedLines, SharedSeen, counted

PROBLEMS_SHOWN = 10
# how torch.utils.data re-raises an exception of a DataLoader worker: its type, with this text and the traceback
_WORKER_WRAPPED = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


class DataError(Exception):
    """A dataset file is missing, unreadable or inconsistent. The message names the file and how to fix it."""


class ImageSizeError(DataError):
    """An image whose stored size differs from the size its annotation gives. The message names both files."""


class DatasetNotFoundError(DataError):
    """A dataset folder or annotation file is missing. One line: the expected path and the script that provides it."""


class LazyText:
    """Text built when first printed (``str(text)``, an f-string) and kept: a hint that looks through folders to be
    precise, given to a loader that prints it only in an error it may never raise, e.g.
    ``LazyText(lambda: download_hint(root))``."""

    def __init__(self, build: Callable[[], str]) -> None:
        self._build = build
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:
            self._text = self._build()
        return self._text


Hint = str | LazyText  # a hint a loader prints in its errors: plain text, or built only then


class DataWarning(UserWarning):
    """A recoverable annotation problem was fixed up (e.g. a box clipped to the image); the message counts them."""


class ImageWarning(DataWarning):
    """A warning about one image file, met at every read of it: shown once per run, for the first
    :data:`IMAGE_WARNINGS_NAMED` images of its kind (its class). The message names the file; ``kind`` completes
    "N images ..." in the lines that count them."""

    kind = "with a warning"


class CorruptImageWarning(ImageWarning):
    """An image decoded with damaged pixels (libjpeg reported corrupt data); the message names the file."""

    kind = "with corrupt JPEG data"


class ImageDecoderWarning(ImageWarning):
    """A decoder printed a warning about an image it decoded (e.g. libpng's about a broken colour profile); the
    message names the file and quotes the decoder's line."""

    kind = "with a warning of the image decoder"


class LowBitDepthWarning(ImageWarning):
    """A 16-bit image whose values use 12 bits or fewer, which reads nearly black as 8 bits; the message names the
    file, its largest value and the fix."""

    kind = "of 16 bits holding data of 12 bits or fewer"


IMAGE_WARNINGS_NAMED = 10  # images of one kind of ImageWarning named in a run; --check_data counts them all
IMAGE_WARNING_KINDS = (ImageWarning, CorruptImageWarning, ImageDecoderWarning, LowBitDepthWarning)


def image_warning_kind(category: type[ImageWarning]) -> type[ImageWarning]:
    """The kind an :class:`ImageWarning` of ``category`` is named and counted under: the class itself, or for a
    subclass from elsewhere, the closest one above it of this module."""
    return next(kind for kind in reversed(IMAGE_WARNING_KINDS) if issubclass(category, kind))


def data_error_elsewhere(share: str) -> DataError:
    """The error of a process whose own ``share`` (of a batch, of an evaluation) loaded, when another process's
    share met a data error: that process's message names the file."""
    return DataError(f"another process met a data error in its share of {share} (its message says which file)")


def format_problems(header: str, problems: Sequence[str], limit: int = PROBLEMS_SHOWN) -> str:
    """``header`` + the first ``limit`` problems, one per line, + how many more there are."""
    lines = [f"{header}: {len(problems)} problem(s)"]
    lines += [f"  - {problem}" for problem in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def with_missing_files_hint(message: str, problems: Sequence[str], hint: Hint | None) -> str:
    """``message`` (:func:`format_problems`'s) with ``hint`` on a last line when ``hint`` is given and one of
    ``problems`` is a file not found, as an official dataset extracted in part has them (the hint says how to extract
    it again; a :class:`LazyText` is built then)."""
    if hint and any("file not found" in problem for problem in problems) and str(hint):
        return f"{message}\n{hint}"
    return message


def original_message(error: BaseException) -> str:
    """The message ``error`` was raised with, also when a DataLoader worker raised it: PyTorch then re-raises the
    same type with "Caught DataError in DataLoader worker process N. Original Traceback ..." and the worker's
    traceback, whose last entry is ``<module>.<type>: <original message>``."""
    text = str(error)
    if not _WORKER_WRAPPED.match(text):
        return text
    last_entry = f"\n{type(error).__module__}.{type(error).__qualname__}: "
    start = text.rfind(last_entry)
    return text[start + len(last_entry):].rstrip("\n") if start >= 0 else text


def one_line_data_warnings(show: Callable, shown: SharedSeen | None = None) -> Callable:
    """A ``warnings.showwarning`` that prints a :class:`DataWarning` as one ``warning: ...`` line on stderr (what was
    fixed up in the data, for the user; not Python's file, line and source excerpt) and passes others to ``show``.
    ``main.py`` installs it; DataLoader workers started by ``spawn`` or ``forkserver`` install their own with the main
    process's ``shown`` (:func:`data.loader.worker_init_fn`).

    An :class:`ImageWarning` line (a corrupt JPEG, a decoder's warning about a file) is printed once per run, for the
    first :data:`IMAGE_WARNINGS_NAMED` images of its kind (:func:`image_warning_kind`), the last of them followed by
    a line saying that the others go unnamed (an own set of thousands of PNGs with a broken colour profile printed a
    line each): the DataLoader workers started after this call, forked or spawned, share ``shown``, the record of the
    lines shown and of the count of each kind (:class:`SharedSeen`, a new one by default), where each worker, and
    each evaluation's new ones, would show it again. Under ``torchrun``, where each process makes its own record, a
    warning about the dataset as a whole (its fix-ups, which every process meets as it reads the annotations) is
    printed by rank 0 alone, an image's by each process that read it (each names the first images of a kind that it
    reads, and its line after them says so).

    In the process that made it the line goes through ``tqdm.write``, which lifts that process's progress bars
    (``--check_data``'s, the training bar) off the line and redraws them below it, instead of gluing the line to a
    bar (also to rank 0's under ``torchrun``: :func:`write_line`). A DataLoader worker of a
    :class:`data.loader.WorkerLoader` hands its lines, and Python's text of its other warnings, to the main process,
    which prints them so as it receives the batches (:func:`relay_worker_lines`);
    another process started by this one (whose copy of tqdm's bar registry would redraw stale bars) prints them
    plainly."""
    shown = SharedSeen() if shown is None else shown
    ctx = launch_context()
    prints_dataset_warnings = ctx.is_main
    # under torchrun each process names the first images of a kind that it reads
    past_named = (f" by this process (rank {ctx.rank}); any more it reads" if ctx.is_distributed else
                  "; any more in this run")
    owner = os.getpid()

    def show_line(text: str) -> None:
        if _worker_lines is not None and _worker_lines.put(text):
            return
        if os.getpid() == owner:
            write_line(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    file: TextIO | None = None, line: str | None = None) -> None:
        if issubclass(category, ImageWarning):
            kind = image_warning_kind(category)
            number = shown.first_of_kind(str(message), IMAGE_WARNING_KINDS.index(kind), IMAGE_WARNINGS_NAMED)
            if number:
                show_line(f"warning: {message}")
            if number == IMAGE_WARNINGS_NAMED:
                show_line(f"warning: {counted(number, 'image')} {kind.kind} named{past_named} are not named "
                          "(--check_data counts them)")
        elif issubclass(category, DataWarning):
            if prints_dataset_warnings:
                show_line(f"warning: {message}")
        elif _worker_lines is not None:  # a worker: Python's text of the warning, without its final newline
            show_line(warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n"))
        else:
            show(message, category, filename, lineno, file, line)

    showwarning.data_warnings_shown = shown
    return showwarning


# in a DataLoader worker of a WorkerLoader: where its warning lines go (relay_worker_lines); None elsewhere
_worker_lines: SharedLines | None = None


def relay_worker_lines(lines: SharedLines) -> None:
    """In a DataLoader worker: hand the lines of the :func:`one_line_data_warnings` display to the main process
    through ``lines``, which it prints with :func:`show_worker_lines` (a line that does not fit is printed here)."""
    global _worker_lines
    _worker_lines = lines


def show_worker_lines(lines: SharedLines) -> None:
    """In the main process: print the lines its workers handed over in ``lines`` through ``tqdm.write`` (one line of
    their own, the progress bars redrawn below them); nothing to do, the common case, reads one shared integer."""
    for text in lines.take():
        write_line(text)


def write_line(text: str) -> None:
    """Print ``text`` on stderr on a line of its own through ``tqdm.write``, which lifts this process's progress bars
    off the line and redraws them below it. Under ``torchrun`` the processes share a terminal where rank 0 alone
    draws bars, which another process's line would continue: there it starts with a newline, which ends rank 0's bar
    line (that bar stays above; rank 0 redraws it below)."""
    # nolock: taking tqdm's lock would make it, a multiprocessing lock whose making starts the resource tracker in a
    # run without workers; the bars are drawn by this thread too
    tqdm.write(text if launch_context().is_main else "\n" + text, file=sys.stderr, nolock=True)


def image_warnings_named(kind: type[ImageWarning]) -> int:
    """How many images of ``kind`` (one of :data:`IMAGE_WARNING_KINDS`) this run's :func:`one_line_data_warnings`
    display has named so far, in any of its processes; 0 where data warnings are not shown on one line."""
    shown = data_warnings_shown()
    return 0 if shown is None else shown.kind_count(IMAGE_WARNING_KINDS.index(kind))


# the oldest torch whose processes join their image-warning records at the end of a run: after that gather, torch
# 2.5.1's gloo left one process of a finished torchrun run waiting forever in destroy_process_group (seen in
# tests/test_main_ddp.py; 2.14.1 never did, intermediate releases untried); before it each process says its own count
JOINED_COUNTS_MIN_TORCH = (2, 14)


def joins_image_warning_counts(torch_version: str = torch.__version__) -> bool:
    """Whether :func:`say_unnamed_image_warnings` joins the processes' records under ``torch_version``
    (:data:`JOINED_COUNTS_MIN_TORCH`)."""
    return release_at_least(torch_version, JOINED_COUNTS_MIN_TORCH)


def say_unnamed_image_warnings(ctx: DistributedContext | None = None, together: bool = False) -> None:
    """At the end of a run, whether it finished or stopped on an error: for each kind of :class:`ImageWarning` of
    which the run met more images than :func:`one_line_data_warnings` names, one line counting them all (each image
    once, however often it was read); nothing where data warnings are not shown on one line.

    Under ``torchrun`` (``ctx``: the run's context, its processes joined; :func:`launch_context` by default), where
    each process keeps its own record and names the first images it reads, the processes join their records when
    ``together`` (every process calls this at the same point: a run that finished; on a torch from
    :data:`JOINED_COUNTS_MIN_TORCH`) and rank 0 alone prints the whole run's count. A run stopped on an error
    (``together`` False) may have left another process in a collective that this one's would wait on forever: each
    process then prints the count of the images it read, saying so, as it does when the joining fails because another
    process has gone (or does not come within the process group's timeout)."""
    shown = data_warnings_shown()
    if shown is None:  # every process of a run alike: main.py installs the display in each
        return
    ctx = launch_context() if ctx is None else ctx
    if ctx.is_distributed and together and joins_image_warning_counts():
        records = [shown.kind_hashes(index) for index in range(len(IMAGE_WARNING_KINDS))]
        try:
            gathered = all_gather_objects(records, ctx)
        except RuntimeError:  # another process has gone, or did not come in the group's timeout: this one's count
            pass
        else:
            if ctx.is_main:
                _say_joined_image_warnings(gathered)
            return
    own = f" in its process of rank {ctx.rank} (this process's count alone)" if ctx.is_distributed else ""
    for index, kind in enumerate(IMAGE_WARNING_KINDS):
        total, complete = shown.kind_total(index)
        if total > IMAGE_WARNINGS_NAMED:
            write_line(f"warning: {'' if complete else 'at least '}{total:,} images {kind.kind} in this run{own}, of "
                       f"which the first {IMAGE_WARNINGS_NAMED} were named (--check_data counts them in each split)")


def _say_joined_image_warnings(records: list[list[tuple[set[int], set[int], bool]]]) -> None:
    """The lines of :func:`say_unnamed_image_warnings` for the records of all ``torchrun``'s processes, one per
    process, each a :meth:`utils.messages.SharedSeen.kind_hashes` per kind: an image that several processes read
    counted once, named when any process named it."""
    for index, kind in enumerate(IMAGE_WARNING_KINDS):
        named = set().union(*(record[index][0] for record in records))
        met = named.union(*(record[index][1] for record in records))
        complete = all(record[index][2] for record in records)
        if len(met) > len(named):
            write_line(f"warning: {'' if complete else 'at least '}{len(met):,} images {kind.kind} in this run (its "
                       f"{len(records)} processes together), of which {len(named)} were named (each process names "
                       f"the first {IMAGE_WARNINGS_NAMED} it reads; --check_data counts them in each split)")


def data_warnings_shown() -> SharedSeen | None:
    """The record of the lines shown by this process's :func:`one_line_data_warnings` display; None where data
    warnings are not shown on one line."""
    return getattr(warnings.showwarning, "data_warnings_shown", None)
