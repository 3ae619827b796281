"""How names are compared: class names (``--classes``, the annotations', a checkpoint's) and the file names of a
VOC-layout folder match whatever their letter case and the Unicode normal form of their accents (a leaf module:
data/ and utils/ import it)."""
import unicodedata
from collections.abc import Sequence

INVISIBLE_IN_NAMES = frozenset("\ufeff\u200b\u2060")  # byte-order mark, zero-width space, word joiner
# VOC's classes (data/voc.py's VOC_CLASSES) that COCO names otherwise: VOC name -> the name of the category of
# COCO's instances_*2017.json, as data/coco.py reads it (folded); VOC's other 14 classes are categories of that name
VOC_COCO_SYNONYMS = {"aeroplane": "airplane", "diningtable": "dining table", "motorbike": "motorcycle",
                     "pottedplant": "potted plant", "sofa": "couch", "tvmonitor": "tv"}
_SYNONYMS = VOC_COCO_SYNONYMS | {coco: voc for voc, coco in VOC_COCO_SYNONYMS.items()}


def compose_name(name: str) -> str:
    """``name`` in Unicode's composed normal form (NFC): ``"cafe\\u0301"`` -> ``"caf\\u00e9"``, which prints alike."""
    return unicodedata.normalize("NFC", name)


def folded_name(name: str) -> str:
    """``name`` as names are compared: composed (NFC, so that an accent written as a combining character, as a macOS
    file system keeps names, is the accented letter) and lowercase: ``"Cafe\\u0301"`` -> ``"caf\\u00e9"``."""
    return compose_name(name).lower()


def same_classes(names: Sequence[str], others: Sequence[str]) -> bool:
    """Whether two class lists name the same classes in the same order, compared as :func:`folded_name` reads them
    (the loaders match ``--classes`` to the annotations' names so; a checkpoint saved with an accent written
    decomposed names the same class as the composed one)."""
    return [folded_name(name) for name in names] == [folded_name(name) for name in others]


def reordering(names: Sequence[str], others: Sequence[str]) -> list[int] | None:
    """Where each of ``others`` is in ``names`` (``others[i]`` is ``names[order[i]]``) when both list the same distinct
    classes in another order, compared as :func:`folded_name` reads them; None when they name other classes, or the
    same classes in the same order."""
    folded, wanted = [folded_name(name) for name in names], [folded_name(name) for name in others]
    if folded == wanted or len(set(folded)) != len(folded) or sorted(folded) != sorted(wanted):
        return None
    return [folded.index(name) for name in wanted]


def class_sources(names: Sequence[str], others: Sequence[str]) -> list[int | None]:
    """Where each of ``others`` is in ``names`` (``others[i]`` is ``names[sources[i]]``; None where ``names`` lacks
    it): the same name as :func:`folded_name` reads them, else its other name in VOC or COCO
    (:data:`VOC_COCO_SYNONYMS`: ``aeroplane`` is COCO's ``airplane`` and back). Each of ``names`` is the source of one
    of ``others`` at most, its own name first (``sofa`` and ``couch`` from a model of ``couch``: ``couch``'s); a name
    that ``names`` holds twice is its first. ``--init_from``: ``others`` are this run's classes, ``names`` the
    checkpoint's."""
    position: dict[str, int] = {}
    for index, name in enumerate(names):
        position.setdefault(folded_name(name), index)
    wanted = [folded_name(name) for name in others]
    sources: list[int | None] = [None] * len(wanted)
    taken: set[int] = set()
    for candidates in (wanted, [_SYNONYMS.get(name) for name in wanted]):
        for index, name in enumerate(candidates):
            source = position.get(name)  # None for a name without a synonym
            if sources[index] is None and source is not None and source not in taken:
                sources[index] = source
                taken.add(source)
    return sources


def control_characters(text: str) -> list[str]:
    """The control characters (Unicode category Cc: NUL, newline, escape, ...) in ``text``, as ``U+XXXX``."""
    return [f"U+{ord(char):04X}" for char in dict.fromkeys(text) if unicodedata.category(char) == "Cc"]


def invisible_characters(text: str) -> list[str]:
    """The characters of ``text`` that print as nothing and belong to no name, as ``U+XXXX``: a byte-order mark
    (U+FEFF, left at a line's start where UTF-8 files were joined), zero-width space (U+200B), word joiner (U+2060).
    The zero-width (non-)joiners U+200C / U+200D are not among them: they write words of Persian and Indic scripts."""
    return [f"U+{ord(char):04X}" for char in dict.fromkeys(text) if char in INVISIBLE_IN_NAMES]


def unprintable_characters(text: str) -> list[str]:
    """The characters of ``text`` that no name (a class, a category, an image id) holds, as ``U+XXXX``: its
    :func:`control_characters` and then its :func:`invisible_characters` (a format character such as the zero-width
    non-joiner U+200C, which writes Persian words, is not one)."""
    return control_characters(text) + invisible_characters(text)
