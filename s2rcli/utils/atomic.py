"""Atomic file writes: write a temp file beside the target, fsync, then rename.

A crash at any point leaves either the old file or the new one, never a torn
mix, because ``os.replace`` within one folder is atomic on POSIX and Windows.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

from ..console import warn
from ..errors import S2RError


def refuse_overwrite(path: Path, overwrite: bool, what: str = "file") -> None:
    """Raise unless ``path`` is free or the user asked to overwrite it."""
    if path.exists() and not overwrite:
        raise S2RError(
            f"{what} already exists: {path}",
            hint="choose another path, or pass --overwrite to replace it",
        )


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets us open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp path to write; on success it is renamed onto ``path``.

    The temp file is removed if the body raises, so nothing half-written stays.
    """
    path = Path(path)
    refuse_overwrite(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; outputs get normal permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def atomic_write_json(path: str | os.PathLike, obj, *, overwrite: bool = True) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", overwrite=overwrite)


def atomic_write_with(
    path: str | os.PathLike, writer: Callable[[io.BufferedWriter], None], *, overwrite: bool = True
) -> Path:
    """Call ``writer(fileobj)`` on a temp file and rename it onto ``path``."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            writer(fh)
    return Path(path)


def atomic_save_image(image, path: str | os.PathLike, *, overwrite: bool = True, **save_kwargs) -> Path:
    """Save a PIL image atomically; the format comes from the target's suffix."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), path.suffix.lstrip(".").upper() or "PNG")
    return atomic_write_with(path, lambda fh: image.save(fh, format=fmt, **save_kwargs), overwrite=overwrite)


# --- write errors -------------------------------------------------------------------------------

_NO_SPACE_HINT = "free some space, or choose a folder on another disk"
_WRITE_CAUSES = {
    errno.EACCES: ("permission denied", "choose a folder you can write to, or change its permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to, or change its permissions"),
    errno.EROFS: ("the file system is read-only", "choose a folder on a writable disk"),
    errno.ENOSPC: ("no space left on the device", _NO_SPACE_HINT),
    errno.EFBIG: ("the file is too large for this file system", _NO_SPACE_HINT),
}
if hasattr(errno, "EDQUOT"):
    _WRITE_CAUSES[errno.EDQUOT] = ("disk quota exceeded", _NO_SPACE_HINT)


def write_error(path: str | os.PathLike, exc: OSError, *, what: str = "", hint: str | None = None) -> S2RError:
    """An :class:`S2RError` for ``exc`` raised while writing ``path``: the file, the cause and what to do.

    ``hint`` is added after the cause-specific advice (e.g. what was kept of the outputs so far).
    """
    cause, advice = _WRITE_CAUSES.get(exc.errno, (exc.strerror or str(exc) or type(exc).__name__,
                                                  "check the folder and the disk, then run again"))
    text = f"cannot write {what + ' ' if what else ''}{path}: {cause}"
    return S2RError(text, hint=advice + (f"; {hint}" if hint else ""))


@contextlib.contextmanager
def writing(path: str | os.PathLike, *, what: str = "", hint: str | None = None) -> Iterator[None]:
    """Turn an ``OSError`` raised in the body into :func:`write_error` for ``path``."""
    try:
        yield
    except S2RError:
        raise
    except OSError as exc:
        raise write_error(path, exc, what=what, hint=hint) from exc


# --- folder locks ---------------------------------------------------------------------------------

LOCK_NAME = ".s2r.lock"
STALE_UNREADABLE_SECONDS = 60.0
"""A lock file that cannot be parsed is taken over once it is this old (its writer died mid-write)."""


def _read_lock(path: Path) -> tuple[bytes | None, dict | None]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError:
        return b"", None
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return raw, None
    return raw, record if isinstance(record, dict) else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid() or os.name == "nt":
        return True  # on Windows os.kill(pid, 0) would end the process: never probe there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (owned by someone else), or we cannot tell: assume it runs
    return True


def _stale_reason(path: Path, record: dict | None) -> str | None:
    """Why the lock at ``path`` is stale (its owner is gone), or None if it may still be held."""
    if record is None:
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return None
        return f"an unreadable lock file {age:.0f} s old" if age > STALE_UNREADABLE_SECONDS else None
    host, pid = record.get("host"), record.get("pid")
    if host != socket.gethostname() or not isinstance(pid, int):
        return None  # another machine's process: we cannot tell whether it still runs
    return None if _pid_alive(pid) else f"process {pid} on {host}, which is no longer running"


def _take_over(path: Path, stale: bytes, token: str) -> bool:
    """Remove the stale lock at ``path`` unless another process has replaced it meanwhile.

    The file is first renamed aside (atomic), so two processes taking over the same stale lock
    cannot both succeed: the second one renames the first one's fresh lock, sees that it is not
    the stale one, and puts it back.
    """
    aside = path.with_name(f"{path.name}.{token}.stale")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return True  # someone else removed it: just try again
    try:
        if aside.read_bytes() == stale:
            return True
        with contextlib.suppress(OSError):
            os.link(aside, path)  # not ours to remove: put it back (fails if yet another lock exists)
        return False
    finally:
        with contextlib.suppress(OSError):
            aside.unlink()


def _busy_error(folder: Path, path: Path, record: dict | None, option: str) -> S2RError:
    if record is None:
        who = "another s2r process (its lock file is being written)"
    else:
        who = (f"another s2r process ({record.get('command') or 's2r'}, pid {record.get('pid')} on "
               f"{record.get('host')}, since {record.get('started')})")
    return S2RError(
        f"{folder} is in use by {who}",
        hint=f"wait for it to finish, or choose another {option}; if that process is no longer running, "
             f"delete {path}",
    )


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, command: str = "s2r", option: str = "--output") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) while the body runs.

    The lock is the file ``FOLDER/.s2r.lock``, created with ``O_CREAT | O_EXCL`` and holding the
    owner's pid, host, command and start time. A second process gets an :class:`S2RError` naming
    the folder and the owner. A lock left by a process that is no longer running on this host is
    taken over with a warning. The lock is released when the body ends, also on an error or
    Ctrl-C; a folder this call created is removed again if nothing was written into it.
    """
    folder = Path(folder)
    created = not folder.exists()
    with writing(folder, what="the folder"):
        folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    token = uuid.uuid4().hex
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "token": token}
    data = (json.dumps(record) + "\n").encode("utf-8")
    try:
        for _attempt in range(5):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raw, holder = _read_lock(path)
                if raw is None:
                    continue  # released meanwhile
                reason = _stale_reason(path, holder)
                if reason is None:
                    raise _busy_error(folder, path, holder, option) from None
                warn(f"taking over the lock on {folder} left by {reason}")
                if not _take_over(path, raw, token):
                    raise _busy_error(folder, path, _read_lock(path)[1], option) from None
                continue
            except OSError as exc:
                raise write_error(path, exc, what="the lock file") from exc
            try:
                with writing(path, what="the lock file"):
                    os.write(fd, data)
                    os.fsync(fd)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    path.unlink()
                raise
            os.close(fd)
            break
        else:
            raise _busy_error(folder, path, _read_lock(path)[1], option)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    try:
        yield path
    finally:
        if _read_lock(path)[1] == record:  # still ours (nobody took it over by mistake)
            with contextlib.suppress(OSError):
                path.unlink()
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds when nothing was written
