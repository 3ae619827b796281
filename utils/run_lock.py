"""Runs that must not write the same files at once on this machine.

Two runs writing one checkpoint (two GPUs started with the same flags, say) would set each other's checkpoint and
logs aside and overwrite them, and two evaluations writing one folder (``eval/VOC`` at the end of two trainings), or
two demo runs writing one ``--demo_output`` folder, would leave it holding some files of each (or delete the other's
as an earlier run's). Advisory locks (``flock``) prevent these: a lock file named after the path's absolute form, in a
per-user folder of the system's temporary folder (so taking a lock changes none of the run's own folders). A lock
goes with the process, however it ends (and with its DataLoader workers, which exit a few seconds after it). Where
``flock`` is missing (Windows), or there is no temporary folder this user alone owns, nothing is locked.
"""
from __future__ import annotations

import hashlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


_HELD_BY_THIS_RUN: set[Path] = set()  # the lock files of the exclusive_run blocks this process is in


def lock_file_for(path: str | os.PathLike) -> Path:
    """The lock file of a path (its absolute, resolved form), in the user's lock folder."""
    key = hashlib.sha1(os.fsencode(Path(path).resolve())).hexdigest()[:20]  # the bytes: a name need not be UTF-8
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"mutual-guidance-runs-{user}" / f"{key}.lock"


@contextmanager
def exclusive_run(
    path: str | os.PathLike,
    what: str = "the checkpoint",
    advice: str = "give this run another --name (or --save_folder)",
) -> Iterator[None]:
    """Hold the lock of ``path`` (a run's checkpoint, its best checkpoint or its log folder) for the block; raise
    ``ValueError`` naming ``path`` as ``what`` and the process that holds it when another run does, with ``advice``
    (under torchrun the main process alone takes it, see ``utils.training_run.run_training``)."""
    with _locked(path) as handle:
        if handle is not None and not _try_lock(handle):
            raise ValueError(
                f"{path} is {what} of a run still going on ({_holder(handle)}): {advice}, or wait for that run to end "
                "(a run just stopped releases it within seconds)"
            )
        key = lock_file_for(path)
        _HELD_BY_THIS_RUN.add(key)
        try:
            yield
        finally:
            _HELD_BY_THIS_RUN.discard(key)


@contextmanager
def one_writer(folder: str | os.PathLike, what: str = "evaluation") -> Iterator[None]:
    """Hold the lock of ``folder`` for the block, waiting while another process holds it and saying so on stderr,
    as "waiting for another ``what`` (process N) to finish writing to ``folder``" (``what``: "evaluation" for
    ``eval/<DATASET>/``, "demo run" for ``--demo_output``). A folder whose :func:`exclusive_run` lock this process
    holds (``--eval_dir`` the run's own ``--run_dir``) is written at once: the run holds it, so no other process
    writes there, and waiting for that lock would wait forever."""
    if lock_file_for(folder) in _HELD_BY_THIS_RUN:
        yield
        return
    with _locked(folder) as handle:
        if handle is not None and not _try_lock(handle):
            print(f"waiting for another {what} ({_holder(handle)}) to finish writing to {folder}", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
            _claim(handle)
        yield


@contextmanager
def _locked(path: str | os.PathLike) -> Iterator[IO[str] | None]:
    """The open lock file of ``path`` (None: nothing to lock), unlocked when the block ends."""
    handle = _open_lock_file(path) if fcntl is not None else None
    if handle is None:
        yield None
        return
    with handle:
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_lock_file(path: str | os.PathLike) -> IO[str] | None:
    """The lock file of ``path``, opened for reading and writing; None (run unguarded rather than not at all) when
    there is no temporary folder, when the lock folder is not a private folder of this user's (another user could
    have planted links there), or when it cannot be written."""
    try:
        lock_path = lock_file_for(path)
        if lock_path.parent.parent.resolve() == Path.cwd().resolve():  # tempfile's last resort: not the run's folder
            return None
        lock_path.parent.mkdir(mode=0o700, exist_ok=True)
        folder = os.lstat(lock_path.parent)
        if not stat.S_ISDIR(folder.st_mode) or folder.st_uid != os.getuid() or folder.st_mode & 0o077:
            return None
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None
    return os.fdopen(descriptor, "r+", encoding="utf-8")


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    _claim(handle)
    return True


def _claim(handle: IO[str]) -> None:
    """Record this process as the holder, for the message another process shows."""
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()}")
    handle.flush()


def _holder(handle: IO[str]) -> str:
    handle.seek(0)
    return handle.read().strip() or "another process"
