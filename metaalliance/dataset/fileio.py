"""Safe file writing: atomic replacement, multi-file transactions and an advisory lock.

Every file the tool writes goes through ``atomic_write`` (a temporary file in the same folder,
flushed and fsynced, then ``os.replace``), so a reader never sees half a file and an interrupted
run leaves the old file in place. ``write_all`` writes several files so that either all change or,
if a step fails, the ones already replaced are put back. ``locked`` serialises writers (two
``metaalliance add`` runs on the same study cannot lose either finding).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _temp_beside(path: Path, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def _replace(src: Path, dst: Path) -> None:
    """os.replace, kept as its own function so tests can make it fail mid-transaction."""
    os.replace(src, dst)


def display_path(path) -> str:
    """A path as the user would type it: relative to the working directory when below it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def is_inside(path, folder) -> bool:
    """True when ``path`` is ``folder`` or lies below it (after resolving links)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def atomic_write(path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (same-folder temp file + os.replace)."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = _temp_beside(path, data)
    try:
        _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_all(files: dict) -> None:
    """Write {path: text} as one transaction: all files change, or none does.

    All temporary files are written first; then each is moved into place. If a move fails, the
    files already replaced get their old bytes back (new files are removed) and the error is
    re-raised.
    """
    items = [(Path(p), d.encode("utf-8") if isinstance(d, str) else d) for p, d in files.items()]
    old = {p: (p.read_bytes() if p.exists() else None) for p, _ in items}
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in items:
            temps.append((_temp_beside(path, data), path))
    except BaseException:
        for tmp, _ in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    done: list[Path] = []
    try:
        for tmp, path in temps:
            _replace(tmp, path)
            done.append(path)
    except BaseException:
        for tmp, path in temps:
            if path not in done:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        for path in done:
            with contextlib.suppress(OSError):
                if old[path] is None:
                    os.unlink(path)
                else:
                    atomic_write(path, old[path])
        raise


@contextlib.contextmanager
def locked(folder, name: str = ".metaalliance.lock"):
    """An exclusive advisory lock on ``folder`` for the duration of the block (POSIX flock)."""
    import fcntl

    lock_path = Path(folder) / name
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
