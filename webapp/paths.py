"""The data folder (sessions database, uploaded media, exports) and safe names inside it.

The folder is `$WORKBENCH_DATA`, else `data/` at the project root (git-ignored). Every path the app
writes is built here and checked to lie inside it, so an uploaded file name or a session id sent
through the API can never point elsewhere.
"""

from __future__ import annotations

import os
import re
import secrets
import unicodedata
from pathlib import Path
from core.types import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SESSION_ID = re.compile(r"[0-9a-f]{16}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class PathError(UserError, ValueError):
    """A name or id that would leave the data folder, or is malformed."""


def data_dir() -> Path:
    folder = Path(os.environ.get("WORKBENCH_DATA") or PROJECT_ROOT / "data").expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def new_session_id() -> str:
    return secrets.token_hex(8)


def check_session_id(session_id: str) -> str:
    session_id = str(session_id or "").strip()
    if not SESSION_ID.fullmatch(session_id):
        raise PathError(f"{session_id[:40]!r} is not a session id")
    return session_id


def safe_filename(name: str, default: str = "upload") -> str:
    """A plain file name (letters, digits, `._-`) from whatever a browser or client sent."""
    base = unicodedata.normalize("NFKD", Path(str(name).replace("\\", "/")).name)
    base = base.encode("ascii", "ignore").decode()
    stem, dot, suffix = base.rpartition(".")
    stem, suffix = (stem, suffix) if dot else (base, "")
    stem = _UNSAFE.sub("_", stem).strip("._-")[:60] or default
    suffix = _UNSAFE.sub("", suffix).lower()[:8]
    return f"{stem}.{suffix}" if suffix else stem


def inside(root: Path, *parts: str) -> Path:
    """root/parts, refused if it resolves outside root."""
    path = root.joinpath(*parts).resolve()
    if path != root and root not in path.parents:
        raise PathError(f"{'/'.join(parts)[:60]!r} is outside the data folder")
    return path


def session_dir(root: Path, session_id: str) -> Path:
    folder = inside(root, "sessions", check_session_id(session_id))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def relative(root: Path, path: Path) -> str:
    return path.resolve().relative_to(root).as_posix()


def resolve_relative(root: Path, rel: str) -> Path | None:
    return inside(root, rel) if rel else None
