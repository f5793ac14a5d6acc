"""The one error type the library raises for problems a user can fix.

The CLI prints it on a single line and exits with code 1; a traceback is shown
only with ``--verbose``.
"""

from __future__ import annotations


class S2RError(Exception):
    """A user-facing error: what went wrong, and what to do about it.

    >>> raise S2RError("no such folder: data/", hint="check the path")
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += " Hint: " + " ".join(self.hint.split())
        return text

    def __str__(self) -> str:
        return self.one_line()


class NotYetAvailable(S2RError):
    """A capability that is planned but not built yet (the CLI exits with code 2)."""

    exit_code = 2
