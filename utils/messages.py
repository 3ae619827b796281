"""Exceptions turned into the one line a user reads (a leaf module: models/ and utils/ import it)."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message (its type name when it has none)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
