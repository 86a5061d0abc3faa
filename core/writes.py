"""One-line messages for files the project could not write (disk full, no permission, ...).

The message names the file, never its absolute path: on a server, paths say too much, and a user
only needs to know which output failed and why.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is too large for the file system",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "its folder does not exist",
    errno.ENOTDIR: "its folder is not a folder",
    errno.EISDIR: "a folder has that name",
    errno.EIO: "input/output error",
}


def os_error_line(err: OSError, path: str | os.PathLike | None = None) -> str:
    """'Could not write NAME: the disk is full.' for an OSError met while writing `path`."""
    name = Path(path).name if path is not None else Path(err.filename or "").name
    reason = REASONS.get(err.errno) or (os.strerror(err.errno) if err.errno else type(err).__name__)
    return f"Could not write {name or 'the output'}: {reason}."
