"""Analysis cache keyed by file content: reopening an analysed video is instant.

Key = sha256 of the file's bytes + a signature of the models that produced the analysis (checkpoint
name and date, weights, Whisper model, language) + a digest of core/'s source, so neither a new
checkpoint nor new analysis code (an upgraded app over the same cache folder) serves stale results.
Entries are JSON files written atomically under `$WORKBENCH_ANALYSIS_CACHE`, else
`$WORKBENCH_CACHE/analyses`, else ~/.cache/emotion-workbench/analyses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from functools import lru_cache

from .types import Analysis
from .whisper_convert import CACHE_ENV, DEFAULT_CACHE

CACHE_VERSION = 5              # the entry format; code changes are caught by code_digest
CODE = Path(__file__).resolve().parent          # the analysis code whose source keys the cache
CHUNK = 1 << 20
ANALYSIS_CACHE_ENV = "WORKBENCH_ANALYSIS_CACHE"
log = logging.getLogger(__name__)


def cache_root() -> Path:
    if os.environ.get(ANALYSIS_CACHE_ENV):
        return Path(os.environ[ANALYSIS_CACHE_ENV]).expanduser()
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else DEFAULT_CACHE).expanduser() / "analyses"


def file_digest(path: str | Path) -> str:
    """sha256 of a file's content, read in 1 MB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tensors_digest(state: dict) -> str:
    """sha256 over a state dict's names, shapes, dtypes and bytes (in name order): the same
    weights give the same digest whatever file or format they came from."""
    import torch
    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if tensor.numel():
            h.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def source_digest(folder: Path) -> str:
    """sha256 over the names and bytes of the .py files in `folder`."""
    h = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@lru_cache(maxsize=1)
def code_digest() -> str:
    """The analysis code's digest (core/'s source, read once per process): any change to it gives
    new cache keys, with no version to remember to bump."""
    return source_digest(CODE)


def cache_key(digest: str, signature: dict) -> str:
    """The cache entry's name for a file's content digest and the models' signature."""
    blob = json.dumps({"v": CACHE_VERSION, "code": code_digest(), "file": digest, "models": signature},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load(key: str) -> Analysis | None:
    """The cached analysis for `key`, or None (a damaged entry counts as a miss)."""
    path = cache_root() / f"{key}.json"
    try:
        return Analysis.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):   # e.g. "null" or a list
        return None


def store(key: str, analysis: Analysis) -> None:
    """Write an entry atomically. A cache that cannot be written only costs speed: it is logged."""
    root = cache_root()
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(analysis.to_dict(), f)
        os.replace(tmp, root / f"{key}.json")
    except OSError as err:
        log.warning("analysis cache not written (%s)", err)
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
