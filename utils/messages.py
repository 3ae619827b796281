"""Exceptions turned into the one line a user reads, short previews of lists for messages, a record of the lines
already shown that the processes started after it share, and the lines that those processes hand to it to show (a
leaf module: data/, models/ and utils/ import it)."""

import contextlib
import hashlib
import math
import multiprocessing
import sys
from collections.abc import MutableSequence, Sequence


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message (its type name when it has none)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def escape_unencodable_output() -> None:
    """Make standard output write a character its encoding lacks as a backslash escape (``caf\\xe9``), as standard
    error does, instead of raising UnicodeEncodeError: a class name or path outside ``PYTHONIOENCODING=ascii`` or a
    Windows console's code page stopped a finished training run while it printed its evaluation's results. The log and
    results files are written in UTF-8 whatever the console's encoding."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)  # absent on a stream that is not a TextIOWrapper
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")


def preview_names(names: Sequence[str], limit: int = 4) -> str:
    """The first ``limit`` of ``names``, comma-separated, then "..." when there are more; each in quotes when one
    holds a comma (``'person, sitting', 'car'``: two names, not three)."""
    quoted = any("," in name for name in names[:limit])
    shown = ", ".join(repr(name) if quoted else name for name in names[:limit])
    return shown + (", ..." if len(names) > limit else "")


def listed_names(names: Sequence[str], limit: int = 20) -> str:
    """``['cat', 'dog']``, or past ``limit`` names ``1000 names ('a', 'b', ... and 980 more)``: a message writing out
    a list of 1,000 classes was a line of 13,000 characters."""
    if len(names) <= limit:
        return str(list(names))
    first = ", ".join(repr(name) for name in names[:limit])
    return f"{len(names)} names ({first} and {len(names) - limit} more)"


def counted(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless ``number`` is 1, by the English rule for regular nouns: "1 image",
    "0 images", "3 classes", "2 processes", "2 drawn copies"; "epoch", whose "ch" sounds as "k", takes "s"."""
    if number == 1:
        return f"{number} {noun}"
    if noun.endswith(("s", "x", "ch", "sh")) and not noun.endswith("epoch"):
        return f"{number} {noun}es"
    if noun.endswith("y") and noun[-2:-1] not in tuple("aeiou"):
        return f"{number} {noun[:-1]}ies"
    return f"{number} {noun}s"


def iteration_span(first: int, last: int) -> str:
    """Iterations ``first`` to ``last`` (counted from 1) as a log line names them: "iteration 3" when they are one,
    else "iterations 1-4"."""
    return f"iteration {first}" if first == last else f"iterations {first}-{last}"


def exact_number(value: float) -> str:
    """``value`` as text that reads back as the same float, for messages that quote a flag's or a file's value: the
    ``:g`` form when it is exact (``0.5``, ``24``, ``1e-05``, ``inf``, ``nan``), else the shortest that is
    (``0.0012345678``, where ``:g`` rounds to 6 significant digits: ``0.00123457``)."""
    short = f"{value:g}"
    return short if float(short) == value or math.isnan(value) else repr(float(value))


def joined_lines(error: BaseException, limit: int = 400) -> str:
    """``error``'s whole message on one line (runs of white space made one space), cut to ``limit`` characters: for
    messages whose first line says little, such as ``load_state_dict``'s "Error(s) in loading state_dict for X:"."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _SharedWithLaterProcesses:
    """Shared memory that this process and the processes it starts afterwards, forked or spawned, use under one lock.

    The memory is :func:`multiprocessing.RawArray` / ``RawValue`` made by the subclass, which pickle into a process
    being started; the lock is of the start method in use when the object is made. A lock for ``spawn`` or
    ``forkserver`` is a named semaphore, whose making starts multiprocessing's resource tracker (a process): it is
    made when the object is first pickled into a process being started, so that a run that starts none starts no
    tracker either (until then no other process shares the memory). A process started by another start method than
    the one in use when the object was made (changed in between) has no lock (``_lock`` None): it could not open
    the one made for ``fork`` (``fork`` to ``spawn``), and the one for ``spawn`` is not made yet (``spawn`` to
    ``fork``).
    """

    def __init__(self) -> None:
        # the start method the workers will use, without fixing it as multiprocessing.Lock() would
        self._method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
        # a lock for fork is made now, for the processes forked later to inherit (it starts no process)
        self._lock = multiprocessing.get_context("fork").Lock() if self._method == "fork" else None

    def __getstate__(self) -> dict:
        # pickled only into a process being started by spawn/forkserver: the first such process gets the lock made
        # now, in this process, before any other process shares the memory; one made for fork it could not open
        if self._method == "fork":
            return {**self.__dict__, "_lock": None}
        if self._lock is None:
            self._lock = multiprocessing.get_context(self._method).Lock()
        return dict(self.__dict__)


class SharedSeen(_SharedWithLaterProcesses):
    """The texts already shown, shared by this process and the processes it starts afterwards, forked or spawned
    (DataLoader workers: made before they start, one record for the run; :func:`data.loader.worker_init_fn` hands it
    to those started by ``spawn`` or ``forkserver``): :meth:`first` is True for the first asking about a text.

    A table of ``slots`` 8-byte hashes in shared memory, under the lock of :class:`_SharedWithLaterProcesses`:
    whatever the processes asking at once, one gets True. A full table answers True (a line shown again, never
    lost). A process without the lock (started by another start method than the one in use when the record was
    made) shares the table without it: two processes asking at the same instant may then both get True.
    :meth:`first_of_kind` records the texts of a kind past its limit in a table of their own, of ``unnamed_slots``
    hashes, only to count them (:meth:`kind_total`); each slot a kind's text takes in either table is marked with its
    kind, so that the hashes of a kind can be handed to another record's owner (:meth:`kind_hashes`: ``torchrun``'s
    processes count the images they read together, each image once).
    """

    def __init__(self, slots: int = 4096, kinds: int = 8, unnamed_slots: int = 65536) -> None:
        super().__init__()
        self._hashes = multiprocessing.RawArray("Q", slots)
        self._hash_kinds = multiprocessing.RawArray("b", slots)  # per slot: 1 + the kind of its text, 0 for first()'s
        self._kinds = multiprocessing.RawArray("q", kinds)  # texts recorded per kind (first_of_kind)
        self._unnamed_hashes = multiprocessing.RawArray("Q", unnamed_slots)  # the kinds' texts past their limit
        self._unnamed_kinds = multiprocessing.RawArray("b", unnamed_slots)  # per slot: 1 + the kind of its text
        self._unnamed = multiprocessing.RawArray("q", kinds)  # texts recorded there per kind
        self._missed = multiprocessing.RawArray("b", kinds)  # 1: a text of the kind found that table full

    def first(self, text: str) -> bool:
        """Whether ``text`` is asked about for the first time (and record it)."""
        key = self._key(text)
        with contextlib.nullcontext() if self._lock is None else self._lock:  # None: see the class docstring
            return self._record(key, self._hashes) is not False

    def first_of_kind(self, text: str, kind: int, limit: int) -> int:
        """The number (1 for the first) of ``text`` among the texts of ``kind`` (0..``kinds`` - 1) recorded, when it is
        asked about for the first time and fewer than ``limit`` texts of its kind were recorded before it; else 0.
        Once ``limit`` are, the kind's new texts take no slot of the table: they are counted in their own
        (:meth:`kind_total`)."""
        key = self._key(text)
        with contextlib.nullcontext() if self._lock is None else self._lock:  # None: see the class docstring
            if self._kinds[kind] >= limit:
                if not self._holds(key, self._hashes):  # not one of those numbered
                    recorded = self._record(key, self._unnamed_hashes, self._unnamed_kinds, kind + 1)
                    self._unnamed[kind] += recorded is True
                    self._missed[kind] |= recorded is None
                return 0
            if self._record(key, self._hashes, self._hash_kinds, kind + 1) is False:
                return 0
            self._kinds[kind] += 1
            return self._kinds[kind]

    def kind_count(self, kind: int) -> int:
        """How many texts of ``kind`` :meth:`first_of_kind` numbered (at most its ``limit``)."""
        return self._kinds[kind]

    def kind_total(self, kind: int) -> tuple[int, bool]:
        """How many different texts of ``kind`` :meth:`first_of_kind` was asked about, numbered or not, and whether
        that is all of them (False: some found the table of those past the limit full, so the count is a lower
        bound)."""
        return self._kinds[kind] + self._unnamed[kind], not self._missed[kind]

    def kind_hashes(self, kind: int) -> tuple[set[int], set[int], bool]:
        """The hashes of the texts of ``kind`` that :meth:`first_of_kind` numbered, those of its texts past the limit,
        and whether that is all of them (:meth:`kind_total`): the record of one process, which the records of other
        processes (``torchrun``'s, each with its own) join to count each text once however many processes met it."""
        with contextlib.nullcontext() if self._lock is None else self._lock:  # None: see the class docstring
            named = {key for key, label in zip(self._hashes, self._hash_kinds) if label == kind + 1}
            unnamed = {key for key, label in zip(self._unnamed_hashes, self._unnamed_kinds) if label == kind + 1}
            return named, unnamed, not self._missed[kind]

    @staticmethod
    def _key(text: str) -> int:
        """The 8-byte hash of ``text`` kept in the table (never 0, which marks an empty slot)."""
        data = text.encode("utf-8", "surrogatepass")  # a path's undecodable bytes come as lone surrogates
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") or 1

    @staticmethod
    def _slot_of(key: int, table: Sequence[int]) -> int | None:
        """The slot of ``table`` (open addressing, linear probing) that holds ``key``, or the empty one (0) where it
        would go; None when the table is full without it."""
        slots = len(table)
        for probe in range(slots):
            slot = (key + probe) % slots
            if table[slot] in (key, 0):
                return slot
        return None

    @classmethod
    def _record(cls, key: int, table: MutableSequence[int], labels: MutableSequence[int] | None = None,
                label: int = 0) -> bool | None:
        """Record ``key`` in ``table`` (under the lock), and ``label`` in the same slot of ``labels`` when given:
        True when new, False when recorded before, None when the table is full."""
        slot = cls._slot_of(key, table)
        if slot is None:
            return None
        if table[slot] == key:
            return False
        table[slot] = key
        if labels is not None:
            labels[slot] = label
        return True

    @classmethod
    def _holds(cls, key: int, table: Sequence[int]) -> bool:
        """Whether ``key`` is recorded in ``table`` (under the lock)."""
        slot = cls._slot_of(key, table)
        return slot is not None and table[slot] == key


class SharedLines(_SharedWithLaterProcesses):
    """Lines that processes started after it (DataLoader workers) hand to the process that made it, to be shown there:
    :meth:`put` in a worker, :meth:`take` in the main process, which prints them where its progress bars allow.

    ``capacity`` bytes of shared memory, each line a 4-byte length and its UTF-8 bytes, under the lock of
    :class:`_SharedWithLaterProcesses`. :meth:`put` never waits for the main process: it returns False when the
    memory is full, or in a process without the lock, and the caller then prints the line itself. Handing a line
    over costs no system call, and :meth:`take` with nothing handed over reads one shared integer.
    """

    def __init__(self, capacity: int = 65536) -> None:
        super().__init__()
        self._data = multiprocessing.RawArray("c", capacity)
        self._end = multiprocessing.RawValue("q", 0)  # bytes in use

    def put(self, line: str) -> bool:
        """Hand ``line`` (any text, several lines too) over; False when it did not fit or this process has no lock."""
        data = line.encode("utf-8", "surrogatepass")  # a path's undecodable bytes come as lone surrogates
        record = len(data).to_bytes(4, "little") + data
        if self._lock is None:
            return False
        with self._lock:
            end = self._end.value
            if end + len(record) > len(self._data):
                return False
            self._data[end:end + len(record)] = record
            self._end.value = end + len(record)
        return True

    def take(self) -> list[str]:
        """The lines handed over since the last call, in the order they were put, and forget them."""
        if not self._end.value:  # the common case: no lock taken, nothing copied
            return []
        with contextlib.nullcontext() if self._lock is None else self._lock:  # None: nothing was put (see put)
            data, self._end.value = self._data[:self._end.value], 0
        lines, start = [], 0
        while start < len(data):
            size = int.from_bytes(data[start:start + 4], "little")
            lines.append(data[start + 4:start + 4 + size].decode("utf-8", "surrogatepass"))
            start += 4 + size
        return lines
