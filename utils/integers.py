"""Integer arguments of the public API (a size, a class count): a NumPy integer or an integer 0-d tensor, as a
config read through NumPy or torch gives them, counts as the int it holds."""
import operator


def as_int(value: object) -> int | None:
    """``value`` as a Python ``int`` when it is an integer (``int``, NumPy integer, integer 0-d tensor) other than a
    ``bool``; ``None`` for anything else (a float, even ``320.0``, a string, a bool), which the caller refuses."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None
