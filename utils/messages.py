"""Exceptions turned into the one line a user reads, short previews of lists for messages, and a record of the lines
already shown that the processes started after it share (a leaf module: data/, models/ and utils/ import it)."""

import contextlib
import hashlib
import multiprocessing
from collections.abc import Sequence


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message (its type name when it has none)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def preview_names(names: Sequence[str], limit: int = 4) -> str:
    """The first ``limit`` of ``names``, comma-separated, then "..." when there are more."""
    shown = ", ".join(names[:limit])
    return shown + (", ..." if len(names) > limit else "")


def joined_lines(error: BaseException, limit: int = 400) -> str:
    """``error``'s whole message on one line (runs of white space made one space), cut to ``limit`` characters: for
    messages whose first line says little, such as ``load_state_dict``'s "Error(s) in loading state_dict for X:"."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SharedSeen:
    """The texts already shown, shared by this process and the processes it starts afterwards, forked or spawned
    (DataLoader workers: made before they start, one record for the run; :func:`data.loader.worker_init_fn` hands it
    to those started by ``spawn`` or ``forkserver``): :meth:`first` is True for the first asking about a text.

    A table of ``slots`` 8-byte hashes in shared memory (:func:`multiprocessing.RawArray`, which pickles into a
    process being started), under a lock of the start method in use when it is made: whatever the processes asking
    at once, one gets True. A full table answers True (a line shown again, never lost). A lock for ``spawn`` or
    ``forkserver`` is a named semaphore, whose making starts multiprocessing's resource tracker (a process): it is
    made when the record is first pickled into a process being started, so that a run that starts none starts no
    tracker either (until then no other process shares the table). A process started by another start method than
    the one in use when the record was made (changed in between) shares the table without the lock, which it could
    not open (``fork`` to ``spawn``) or which is not made yet (``spawn`` to ``fork``): two processes asking at the same
    instant may then both get True.
    """

    def __init__(self, slots: int = 4096) -> None:
        self._hashes = multiprocessing.RawArray("Q", slots)
        # the start method the workers will use, without fixing it as multiprocessing.Lock() would
        self._method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
        # a lock for fork is made now, for the processes forked later to inherit (it starts no process)
        self._lock = multiprocessing.get_context("fork").Lock() if self._method == "fork" else None

    def __getstate__(self) -> dict:
        # pickled only into a process being started by spawn/forkserver: the first such process gets the lock made
        # now, in this process, before any other process shares the table; one made for fork it could not open
        if self._method == "fork":
            return {**self.__dict__, "_lock": None}
        if self._lock is None:
            self._lock = multiprocessing.get_context(self._method).Lock()
        return dict(self.__dict__)

    def first(self, text: str) -> bool:
        """Whether ``text`` is asked about for the first time (and record it)."""
        data = text.encode("utf-8", "surrogatepass")  # a path's undecodable bytes come as lone surrogates
        key = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") or 1  # 0: empty
        slots = len(self._hashes)
        with contextlib.nullcontext() if self._lock is None else self._lock:  # None: see the class docstring
            for probe in range(slots):
                slot = (key + probe) % slots
                if self._hashes[slot] == key:
                    return False
                if self._hashes[slot] == 0:
                    self._hashes[slot] = key
                    return True
        return True
