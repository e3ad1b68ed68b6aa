"""Writing files safely: free space, temp files a killed process left, paths metadata names, modes.

    check_space(folder, needed, what)   refuse before writing when the disk cannot hold `needed` bytes
    disk_full(err) / DiskFullError      a write that failed for lack of space, said in one line
    remove_stale(folder, prefix)        temp files / folders `<prefix><pid>...` of processes no longer alive
    file_in(folder, name, what)         a file name read from a folder's metadata, never a path out of it
    new_file_mode() / set_new_file_mode the mode a plain `open(path, "w")` would give (0666 less the umask)

Every writer of crossctr writes to a temporary name beside its target and renames it into place
(the target is old or new, never half). A writer killed with SIGKILL cannot remove its temporary
file; the next writer of the same target removes the ones whose process is gone. Temporary names
carry the writer's pid for that; they are never read.

Example:
    >>> from pathlib import Path
    >>> file_in(Path("exports/cnan"), "model.onnx", 'export.json "file"').name
    'model.onnx'
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from crossctr.schema import ConfigError

__all__ = [
    "DiskFullError",
    "check_space",
    "disk_full",
    "remove_stale",
    "pid_alive",
    "file_in",
    "new_file_mode",
    "set_new_file_mode",
    "human_bytes",
]

log = logging.getLogger(__name__)

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, over quota, over the file size limit
STALE_AGE_S = 24 * 3600.0  # a temp file named without a pid is stale once nothing wrote to it for a day
SPACE_MARGIN = (
    16 << 20
)  # bytes left free beyond an estimate: metadata, the JSON files written last, the file system's own


class DiskFullError(RuntimeError):
    """A write did not fit on the disk; the message names the folder and the bytes needed, and
    whatever the writer had written is already removed."""


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def disk_full(err: BaseException) -> bool:
    """True for an error that says the disk (or the quota) is full: an OSError, or a library's own
    error type wrapping one (safetensors' SafetensorError, Arrow's messages)."""
    if isinstance(err, OSError) and err.errno in _FULL:
        return True
    text = str(err)
    return any(
        s in text for s in ("No space left on device", "Disk quota exceeded", "os error 28", "errno 28", "Errno 28")
    )


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged process may still write under `folder` (its nearest existing parent)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def check_space(folder: Path, needed: int, what: str) -> None:
    """Raise DiskFullError unless `folder`'s file system has `needed` bytes (plus a margin) free."""
    free = free_bytes(folder)
    if free < needed + SPACE_MARGIN:
        raise DiskFullError(
            f"{folder}: not enough disk space for {what}: needs {human_bytes(needed + SPACE_MARGIN)} "
            f"({needed:,} bytes of data plus {human_bytes(SPACE_MARGIN)} of margin), {human_bytes(free)} free; "
            "free some space or write elsewhere (nothing was written)"
        )


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (one we may not signal counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(folder: Path, prefix: str, suffix: str = "", max_age_s: float = STALE_AGE_S) -> list[Path]:
    """Remove `folder/<prefix><pid>[-...]<suffix>` files and folders whose process is gone; returns them.

    The entries of a live process (this one included) are left alone: they may be in use. An
    entry with no pid in its name (written by an older crossctr) goes once it is `max_age_s` old.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for p in folder.iterdir():
        if not (p.name.startswith(prefix) and p.name.endswith(suffix)) or len(p.name) <= len(prefix) + len(suffix):
            continue
        head = p.name[len(prefix) :].split("-", 1)[0].split(".", 1)[0]
        try:
            if head.isdigit():
                if pid_alive(int(head)):
                    continue
                why = f"left by process {head}, which is no longer running"
            else:
                age = now - p.lstat().st_mtime
                if age < max_age_s:
                    continue
                why = f"untouched for {age / 3600:.0f} hours"
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except FileNotFoundError:  # another rerun removed it first
            continue
        log.info("removed %s (%s)", p, why)
        removed.append(p)
    return removed


def file_in(folder: Path, name: Any, what: str) -> Path:
    """`folder / name` for a file name read from a folder's own metadata; anything else is refused.

    A run, export or checkpoint folder names its files in JSON (export.json's "file", a
    checkpoint's finished fits). An edited or hostile entry must not reach outside the folder:
    only a plain file name is accepted (no folder part, no "..", not absolute). A symlink the
    folder's owner placed is followed like any file.
    """
    plain = (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in "/\\\0")
        and Path(name).name == name
    )
    if not plain:
        raise ConfigError(
            f"{folder}: {what} is {name!r}, not a file name inside the folder; a path that leaves the folder is "
            "refused (re-create the folder rather than edit it)"
        )
    return folder / name


def new_file_mode() -> int:
    """0666 less the process's umask: the mode `open(path, "w")` gives a new file."""
    try:
        with open("/proc/self/status") as fh:  # Linux: read without changing it
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, then restore at once
    os.umask(mask)
    return 0o666 & ~mask


def set_new_file_mode(target: int | str | Path) -> None:
    """Give a file made by `tempfile.mkstemp` (always 0600) the mode a plain new file would have."""
    if isinstance(target, int):
        os.fchmod(target, new_file_mode())
    else:
        os.chmod(target, new_file_mode())
