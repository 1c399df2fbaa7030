"""Files that survive a crash: their bytes and their names on disk before a caller goes on
(the spool's segments, its dead letters, the ingest layout record)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make the names in `directory` durable (a file created, renamed or removed there)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes) -> None:
    """Replace `path` with `data` durably: a temp file beside it written and fsynced, renamed
    over it, the directory fsynced. A failed write leaves no temp file behind."""
    tmp = path.with_suffix(".tmp")
    fh = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fh, view) :]
        os.fsync(fh)
    except OSError:
        os.close(fh)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fh)
    os.replace(tmp, path)
    fsync_dir(path.parent)
