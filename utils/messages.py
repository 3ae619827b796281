"""Exceptions turned into the one line a user reads, short previews of lists for messages, and a record of the lines
already shown that forked processes share (a leaf module: data/, models/ and utils/ import it)."""

import hashlib
import mmap
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
    """The texts already shown, shared by this process and the processes it forks afterwards (DataLoader workers:
    made before they start, one record for the run): :meth:`first` is True for the first asking about a text.

    A table of ``slots`` 8-byte hashes in anonymous shared memory, without a lock: two processes asking at the same
    instant may both get True (a line shown twice, never one lost); a full table answers True. Only processes forked
    after it share it (not those started by ``spawn``).
    """

    def __init__(self, slots: int = 4096) -> None:
        self._hashes = memoryview(mmap.mmap(-1, 8 * slots)).cast("Q")

    def first(self, text: str) -> bool:
        """Whether ``text`` is asked about for the first time (and record it)."""
        data = text.encode("utf-8", "surrogatepass")  # a path's undecodable bytes come as lone surrogates
        key = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") or 1  # 0: empty
        slots = len(self._hashes)
        for probe in range(slots):
            slot = (key + probe) % slots
            if self._hashes[slot] == key:
                return False
            if self._hashes[slot] == 0:
                self._hashes[slot] = key
                return True
        return True
