"""One training run per checkpoint path at a time on this machine.

Two runs writing one checkpoint (two GPUs started with the same flags, say) would set each other's checkpoint and
logs aside and overwrite them. ``main.py`` holds an advisory lock (``flock``) while it trains: a lock file named
after the checkpoint's absolute path, in a per-user folder of the system's temporary folder (so a start that fails
changes none of the run's own folders). The lock goes with the process, however it ends. Where ``flock`` is missing
(Windows) or the temporary folder cannot be written, runs go unguarded.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def lock_file_for(checkpoint_path: str | os.PathLike) -> Path:
    """The lock file of a checkpoint path (its absolute, resolved form), in the user's lock folder."""
    key = hashlib.sha1(str(Path(checkpoint_path).resolve()).encode()).hexdigest()[:20]
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"mutual-guidance-runs-{user}" / f"{key}.lock"


@contextmanager
def exclusive_run(checkpoint_path: str | os.PathLike, enabled: bool = True) -> Iterator[None]:
    """Hold the lock of ``checkpoint_path`` for the block; raise ``ValueError`` naming the process that holds it
    when another run does. No lock when not ``enabled`` (the processes other than rank 0 under torchrun)."""
    if not enabled or fcntl is None:
        yield
        return
    lock_path = lock_file_for(checkpoint_path)
    try:
        lock_path.parent.mkdir(mode=0o700, exist_ok=True)
        handle = open(lock_path, "a+", encoding="utf-8")
    except OSError:  # an unwritable temporary folder: train unguarded rather than not at all
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ValueError(
                f"{checkpoint_path} is the checkpoint of a run still going on ({holder}): give this run another "
                "--name (or --save_folder), or wait for that run to end"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
