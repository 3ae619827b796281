"""How names are compared: class names (``--classes``, the annotations', a checkpoint's) and the file names of a
VOC-layout folder match whatever their letter case and the Unicode normal form of their accents (a leaf module:
data/ and utils/ import it)."""
import unicodedata
from collections.abc import Sequence


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
