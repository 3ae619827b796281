"""``--classes``: the class names of a VOC-layout dataset, given as a comma list or a UTF-8 text file, checked so
that every name can match an annotation's and name a results file."""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from data.errors import DataError
from data.voc import read_utf8_text
from utils.names import compose_name, control_characters, folded_name, invisible_characters, unprintable_characters


# The longest file an evaluation names after a class is the atomic write's temporary file
# ``.comp4_det_test_<class>.txt.tmp<pid>`` (utils.files; a pid has up to 7 digits): 31 bytes more than the name,
# within the 255 bytes a file name may hold (NAME_MAX of Linux, macOS and Windows file systems).
MAX_CLASS_NAME_BYTES = 255 - len(".comp4_det_test_.txt.tmp") - 7


def parse_class_list(arg: str, allow_background: bool = False, names_only: bool = False) -> list[str]:
    """``--classes``: a comma-separated list (``cat,dog``) or the path of a UTF-8 text file with one name per line
    (lines starting with ``#`` are comments); ``names_only``: a comma list, whatever files are here (a list recorded by
    an evaluation, whose file it would have recorded by its absolute path). :class:`DataError` naming the file (and
    line) or the argument for an empty or repeating list, a name with a control or invisible character or a slash or
    longer than :data:`MAX_CLASS_NAME_BYTES` in UTF-8 (too long to name its results file), a
    softmax classifier's ``__background__`` entry (this classifier has no background class; ``allow_background``: the
    classes of a model trained with one, which has that class), or a file's line holding a comma or a comment after its
    name."""
    slash = "/" in arg or os.sep in arg
    path = Path(arg) if names_only else _class_file_path(arg)
    try:
        is_dir, is_file = (False, False) if names_only else (path.is_dir(), path.is_file())
    except OSError:  # a long comma list is too long a name to look up as a file
        is_dir = is_file = False
    # a bare name that is also a folder here (``cat/`` of images sorted by class) is a class name: no folder is a list
    if is_dir and (slash or arg in (".", "..")):
        raise DataError(f"--classes {arg} is a folder; give the class names (cat,dog) or a text file of them")
    if is_file:
        lines = [line.strip() for line in read_utf8_text(path).splitlines()]
        numbered = [(number, line) for number, line in enumerate(lines, 1) if line and not line.startswith("#")]
        for number, line in numbered:
            if re.search(r"\s#", line):  # "dog  # puppies": only lines starting with # are comments
                raise DataError(f"{path}:{number}: {line!r} holds a comment after the name; a comment takes a line of "
                                "its own, starting with #")
        names = _checked_class_names([(f"{path}:{number}", line) for number, line in numbered], allow_background)
        line_numbers = [number for number, _ in numbered]
        source = str(path)
    elif not names_only and "," not in arg and (path.suffix in (".txt", ".names") or slash):
        why = "a class name cannot hold a slash" if slash else f"a name ending in {path.suffix} is read as a file"
        where = "" if path.is_absolute() else f"; looked for in {Path.cwd()}"
        raise DataError(f"--classes {arg}: class list file not found ({why}{where})")
    else:
        source = f"--classes {arg!r}" if unprintable_characters(arg) else f"--classes {arg}"
        names = _checked_class_names([(source, name.strip()) for name in arg.split(",") if name.strip()],
                                     allow_background)
        line_numbers = None
    if not names:
        raise DataError(f"{source}: no class names given")
    names = [compose_name(name) for name in names]
    folded = [folded_name(name) for name in names]
    repeated = [key for key in dict.fromkeys(folded) if folded.count(key) > 1]
    if repeated:
        def where(key: str) -> str:
            """`` (lines 1, 4)``: the class file's lines holding the name ``key`` (folded); "" for a comma list."""
            found = [str(number) for number, name in zip(line_numbers or [], folded) if name == key]
            return f" (lines {', '.join(found)})" if found else ""
        described = ", ".join(f"{names[folded.index(key)]!r}{where(key)}" for key in repeated)
        raise DataError(f"{source}: duplicate class names {described}; list each class once (letter case is ignored)")
    return names


def _class_file_path(arg: str) -> Path:
    """The path a ``--classes`` string names if it is a file: ``~/classes.txt`` where the shell leaves ``~``
    (``--classes=~/...``, in quotes) is in the home folder, as the path flags'; it cannot be a class name, which holds
    no slash (``~cat`` stays a name)."""
    slash = "/" in arg or os.sep in arg
    return Path(os.path.expanduser(arg) if arg.startswith("~") and slash else arg)


def class_list_file(arg: str) -> Path | None:
    """The file a ``--classes`` string names (a class list file here, ``~`` read as :func:`parse_class_list` reads
    it), None for a comma list."""
    try:
        return _class_file_path(arg) if arg and _class_file_path(arg).is_file() else None
    except OSError:  # a long comma list is too long a name to look up as a file
        return None


def checked_recorded_names(names: Sequence[str], source: str) -> list[str]:
    """Class names a checkpoint or a ``summary.json`` recorded (``source`` says which), used as they are: a name may
    hold a comma (a COCO-layout category's) or be a softmax background entry (a model trained with one has it), but
    :class:`DataError` for a control or invisible character, a slash or a name too long, as for ``--classes``
    (:func:`parse_class_list`): a VOC layout names a results file after each class."""
    return _checked_class_names([(source, name) for name in names], allow_background=True, allow_comma=True)


def is_background_entry(name: str) -> bool:
    """Whether ``name`` is the background entry that starts a softmax classifier's class list: ``__background__``
    (the authors', torchvision's, Detectron's), labelme's ``_background_``, ``__bg__``, in any letter case. Only
    underscore-wrapped names: a plain ``background`` or ``bg`` may be a class of one's own data."""
    return name.startswith("_") and name.endswith("_") and name.strip("_").lower() in ("background", "bg")


def _checked_class_names(names: list[tuple[str, str]], allow_background: bool, allow_comma: bool = False) -> list[str]:
    """The names of ``(where, name)`` pairs; :class:`DataError` naming ``where`` for a name with a control character
    (a file in another encoding, or a stray escape), which no annotation can match and no log can print, with an
    invisible one (:func:`utils.names.invisible_characters`), which would match no annotation's name printed alike,
    with a comma (only a class file's line can hold one: ``cat,dog`` there is a comma list written where a name
    goes; unless ``allow_comma``), with a slash or over :data:`MAX_CLASS_NAME_BYTES` (it names a results file), or,
    unless ``allow_background``, a softmax classifier's background entry
    (:func:`is_background_entry`)."""
    for where, name in names:
        if "," in name and not allow_comma:
            raise DataError(f"{where}: {name!r} holds a comma; the file takes one class name per line, and a class "
                            "name cannot hold a comma (a class of the XML files named so, 'hot, dog', needs another "
                            "name there and here)")
        found = control_characters(name)
        if found:
            raise DataError(f"{where}: class name {name!r} contains the control character(s) {', '.join(found)}; "
                            "give plain names (a class file must be UTF-8 text, one name per line)")
        if found := invisible_characters(name):
            raise DataError(f"{where}: class name {name!r} contains the invisible character(s) {', '.join(found)} (a "
                            "byte-order mark where files were joined, a zero-width space): remove them")
        if is_background_entry(name) and not allow_background:
            raise DataError(f"{where}: {name!r} is the background class of a softmax classifier (the authors' "
                            "VOC_CLASSES start with it), but this detector's classifier is sigmoid, with no background "
                            "column: it would be a class of its own that no object has; remove it (labels 0..C-1 then "
                            "follow the other names, as the authors' 1..C did)")
        if "/" in name or "\\" in name:
            raise DataError(f"{where}: class name {name!r} contains a slash, but each class names a VOC results "
                            "file (comp4_det_test_<class>.txt); rename the class in --classes and in the XML files")
        if len(name.encode("utf-8")) > MAX_CLASS_NAME_BYTES:
            raise DataError(f"{where}: class name {name!r} is {len(name.encode('utf-8'))} bytes long in UTF-8, but "
                            "each class names a VOC results file (comp4_det_test_<class>.txt) and a file name holds "
                            f"at most 255 bytes: shorten it to at most {MAX_CLASS_NAME_BYTES} bytes "
                            f"({_characters_that_fit(name)}) in the class list and in the XML files")
    return [name for _, name in names]


def _characters_that_fit(name: str) -> str:
    """``here 112 characters``: how many of ``name``'s first characters fit in :data:`MAX_CLASS_NAME_BYTES`."""
    fit = len(name.encode("utf-8")[:MAX_CLASS_NAME_BYTES].decode("utf-8", errors="ignore"))
    return f"here {fit} characters"
