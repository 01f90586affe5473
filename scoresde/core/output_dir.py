"""Output directories and atomic file writes, shared by ``compare --out``, ``generate``, ``train``.

A file is written to a temporary name beside its destination, flushed to disk and renamed
into place, so a reader (or a resumed run) sees either the old file or the whole new one.
A run that writes a directory over time (generate, train) holds its writer lock, so a second
run started on the same directory (a resume while the first still runs, or the orphaned
workers of a killed torchrun launcher) is refused instead of mixing its files in.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def _umask() -> int:
    # the process umask can only be read by setting it; set it straight back
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename.

    The file gets the permissions a plain ``open(path, "w")`` would give (0666 & ~umask, so
    0644 under umask 022): ``mkstemp`` creates 0600 files, which collaborators cannot read.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_dir(out: str | Path) -> Path:
    """Create ``out`` if needed and prove it writable, before any work is done."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe."):
            pass
    except OSError as e:
        raise ValueError(f"--out {out}: not a writable directory ({e.strerror})") from None
    return path


@contextmanager
def writer_lock(out: Path | None, *, hold: bool = True) -> Iterator[None]:
    """Hold ``out``'s writer lock for the ``with`` block; refuse at once if another holds it.

    The lock is flock(2) on the directory itself, so it leaves no file behind and the kernel
    frees it when its holder dies: a killed run never leaves a stale lock. ``hold=False``
    (ranks other than 0) takes nothing; so does ``out=None`` (nothing written) and a
    platform without flock (Windows).
    """
    if out is None or not hold or fcntl is None:
        yield
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"--out {out}: another process is writing this directory (it holds its "
                "writer lock); wait for it to end, or stop it, before resuming"
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
