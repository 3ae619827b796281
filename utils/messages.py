"""Exceptions turned into the one line a user reads, and short previews of lists for messages (a leaf module: data/,
models/ and utils/ import it)."""

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
