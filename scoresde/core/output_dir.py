"""Output directories and atomic file writes, shared by ``compare --out`` and ``generate``.

A file is written to a temporary name beside its destination, flushed to disk and renamed
into place, so a reader (or a resumed run) sees either the old file or the whole new one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
