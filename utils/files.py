"""Writing the project's text outputs (logs, results, summaries) so that a refused write names its file.

``open()`` refused (no permission, no folder) raises an ``OSError`` that names the file, but a ``write()`` or
``close()`` refused (a full disk, a quota, an I/O error) raises one with no file name. Writes here re-raise those with
the file's path, so the user reads which file could not be written, not a traceback.
"""
from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np


@contextlib.contextmanager
def naming_file(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise an ``OSError`` raised inside the block without a file name as the same error naming ``path``."""
    try:
        yield
    except OSError as error:
        if error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8, line endings as given), replacing it; a refused write names ``path``."""
    with naming_file(path), open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def write_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` as an ``.npz`` archive (``np.savez``), each under its name, replacing the file as
    :func:`replace_text` does; a refused write names ``path``. Object arrays are refused: ``np.load(path)`` reads the
    file without pickle."""
    objects = [name for name, array in arrays.items() if np.asarray(array).dtype.hasobject]
    if objects:
        raise TypeError(f"write_arrays: {path}: {', '.join(objects)} would need pickle to load; give numeric or "
                        "string arrays")
    with _replaced(path, "wb") as handle:
        np.savez(handle, **arrays)


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` to ``path`` (UTF-8, line endings as given); a refused write names ``path``."""
    with naming_file(path), open(path, "a", encoding="utf-8", newline="") as handle:
        handle.write(text)


def replace_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8, line endings as given) through a temporary file in its folder, fsync and a
    rename, so a crash or a refused write leaves the old file or the new one, whole, and a ``path`` that is a link
    (symbolic or hard: a DVC or git-annex tracked file, another run's file) is replaced, not written through. A
    refused step raises an ``OSError`` naming ``path`` (not the temporary file, which is removed)."""
    with _replaced(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


@contextlib.contextmanager
def _replaced(path: str | os.PathLike, mode: str, **open_args: Any) -> Iterator[IO]:
    """The temporary file ``.<name>.tmp<pid>`` beside ``path``, opened with ``mode``, fsynced and renamed onto
    ``path`` once the block has written it (removed when the block or a step fails); see :func:`replace_text`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode, **open_args) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    finally:
        tmp.unlink(missing_ok=True)


def file_identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of the file at ``path`` (links followed), the same for every name of one file, such as
    ``Cat.txt`` and ``cat.txt`` on a case-insensitive disk; None when there is no file there."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def json_safe(value: Any) -> Any:
    """``value`` with the floats that JSON cannot hold (NaN, inf) made ``None`` (null), in nested dicts (keys made
    strings), lists and tuples; strict JSON readers reject the ``NaN`` that ``json.dumps`` writes by default."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
