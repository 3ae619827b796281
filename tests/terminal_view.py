"""A stream that says it is an interactive terminal, for the tests of what is drawn there alone (progress bars)."""


class TerminalView:
    """``stream`` as an interactive terminal, where progress bars are drawn."""

    def __init__(self, stream):
        self.stream = stream

    def isatty(self) -> bool:
        return True

    def __getattr__(self, name: str):
        return getattr(self.stream, name)
