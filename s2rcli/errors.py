"""The one error type the library raises for problems a user can fix.

The CLI prints it on a single line and exits with code 1; a traceback is shown
only with ``--verbose``.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any, Mapping


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


# --- common exceptions a user causes, as S2RErrors ------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[])")


def first_sentence(text: object) -> str:
    """The first sentence of an exception text, whole and on one line (never cut mid-sentence)."""
    flat = " ".join(str(text).split())
    match = _SENTENCE_END.search(flat)
    return flat[: match.start()] if match else flat


def reason(exc: BaseException) -> str:
    """An exception's own words in one sentence, or its type name when it has none."""
    return first_sentence(exc) or type(exc).__name__


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")  # utils.atomic's temp files: .NAME.<8 random characters>.tmp

_OS_HINTS = {
    errno.ENOENT: "check the path; an output's parent folder must be creatable",
    errno.EACCES: "check the permissions of {path}, or choose another path",
    errno.EPERM: "check the permissions of {path}, or choose another path",
    errno.EISDIR: "{path} is a folder: pass a file there",
    errno.ENOTDIR: "a part of {path} is a file, not a folder: check the path",
    errno.ENOSPC: "free some disk space, or write to another disk",
    errno.EROFS: "that file system is read-only: choose another path",
    errno.EEXIST: "choose another path, or pass --overwrite",
    errno.ENAMETOOLONG: "shorten the path",
    errno.EMFILE: "too many open files: lower --workers, or raise the limit (ulimit -n)",
    errno.ENFILE: "too many open files: lower --workers, or raise the limit (ulimit -n)",
    errno.ELOOP: "{path} is a loop of symbolic links: check the path",
}
if hasattr(errno, "EDQUOT"):
    _OS_HINTS[errno.EDQUOT] = "free some disk space (the disk quota is full), or write to another disk"


def _display_path(filename: object) -> str:
    path = os.fsdecode(filename) if isinstance(filename, (str, bytes, os.PathLike)) else str(filename)
    head, tail = os.path.split(path)
    match = _TEMP_NAME.match(tail)
    return os.path.join(head, match["name"]) if match else path


def _values(value: Any) -> list[str]:
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _values(item)]
    return [str(value)]


def _option_holding_path(path: str, options: Mapping[str, Any]) -> tuple[str, str, bool] | None:
    """``(option, value, exact)`` for the option whose value is ``path`` or a folder above it
    (``--out runs/a`` for runs/a/config.json)."""
    try:
        target = Path(path).expanduser().absolute()
    except (OSError, ValueError):
        return None
    for name, value in options.items():
        for text in _values(value):
            try:
                given = Path(text).expanduser().absolute()
            except (OSError, ValueError):
                continue
            if given == target or given in target.parents:
                return name, text, given == target
    return None


def _option_holding_text(message: str, options: Mapping[str, Any]) -> str | None:
    """The option whose value the message quotes (``'abc'`` from ``--set train.lr=abc``)."""
    quoted = [a or b for a, b in re.findall(r"'([^']+)'|\"([^\"]+)\"", message)]
    for token in quoted:
        for name, value in options.items():
            for text in _values(value):
                parts = re.split(r"[=,:?&]", text)
                if token == text or token in parts:
                    return f"{name} {text}"
    return None


def _os_error(exc: OSError, options: Mapping[str, Any]) -> S2RError | None:
    code = exc.errno
    if exc.filename is None:
        if code not in _OS_HINTS:
            return None
        return S2RError(f"{exc.strerror or reason(exc)}", hint=_OS_HINTS[code].format(path="the path"))
    path = _display_path(exc.filename)
    where = path if exc.filename2 is None else f"{path} -> {_display_path(exc.filename2)}"
    text = f"{where}: {exc.strerror or reason(exc)}"
    given = _option_holding_path(path, options)
    if given is not None:
        name, value, exact = given
        text = f"{name} {text}" if exact else f"{text} (inside {name} {value})"
    hint = _OS_HINTS.get(code, "check the path and try again").format(path=path)
    return S2RError(text, hint=hint)


def _out_of_memory(exc: BaseException) -> S2RError | None:
    text = str(exc)
    head = text[:300].lower()
    if isinstance(exc, MemoryError) or "can't allocate memory" in head:
        return S2RError("out of memory (RAM)" + (f": {first_sentence(text)}" if text else ""),
                        hint="lower --batch-size, --size or --workers, or free memory")
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in head:
        start = text.find("Tried to allocate")
        detail = first_sentence(text[start:]).rstrip(".") if start >= 0 else ""
        return S2RError("out of GPU memory" + (f": {detail}" if detail else ""),
                        hint="lower --batch-size or --size (or --tile for translate), or run with --device cpu")
    return None


def from_exception(exc: BaseException, options: Mapping[str, Any] | None = None,
                   command: str = "s2r") -> S2RError | None:
    """The :class:`S2RError` a common built-in exception stands for, or None when it looks like a bug.

    ``options`` maps the command's option names (``--out``) to the values given, so the message can
    name the option whose file or value failed; ``command`` (``s2r train``) goes into hints.
    """
    options = options or {}
    if isinstance(exc, S2RError):
        return exc
    if isinstance(exc, OSError):
        return _os_error(exc, options)
    oom = _out_of_memory(exc) if isinstance(exc, (MemoryError, RuntimeError)) else None
    if oom is not None:
        return oom
    if isinstance(exc, UnicodeError):
        files = [f"{name} {text}" for name, value in options.items() for text in _values(value)
                 if Path(text).expanduser().is_file()]
        what = f"the file given as {files[0]}" if len(files) == 1 else "a file"
        return S2RError(f"cannot read {what}: it is not UTF-8 text ({reason(exc)})",
                        hint="pass a text file (JSON or UTF-8), not a binary one")
    if isinstance(exc, ValueError):
        given = _option_holding_text(str(exc), options)
        if given is not None:
            name = given.split(" ", 1)[0]
            return S2RError(f"bad value in {given}: {reason(exc)}",
                            hint=f"see `{command} --help` for what {name} takes")
    return None
