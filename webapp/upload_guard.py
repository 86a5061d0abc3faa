"""Uploads cannot fill the server's disk (ASGI middleware in front of `/gradio_api/upload`).

Gradio stores every file posted to /gradio_api/upload in its cache before any handler sees it,
for anyone who can reach the page, each as large as the upload limit; nothing has to be analysed
for it to stay there. On a public Space a loop of such posts would fill the disk and take the app
down for everyone. So, before a byte is stored:

- a client address may upload at most `per_hour` bytes in any sliding hour (default: 4 times the
  upload limit, $WORKBENCH_UPLOAD_MB_PER_HOUR): over it, 429 with the seconds to wait;
- an upload that would leave less than `reserve` bytes free where Gradio stores uploads is refused
  with 507 (default 1 GB, $WORKBENCH_DISK_RESERVE_MB), whoever sends it.

Both are judged on the Content-Length when the request gives one, else counted while the body
streams in (the answer is sent the moment it passes, and the app is told the client left). The
bytes of an upload cut short count too. Gradio leaves the partial file of an upload cut short (by
this guard or by a client that went away) in its folder: such files, not written for
SWEEP_IDLE_S, are deleted after later uploads (`sweep_abandoned`). Files in Gradio's cache are
swept a day after they were made (`DELETE_CACHE`, given to gr.Blocks).
`0` switches a limit off. The address is the one the ASGI server reports (behind a proxy, list it
in FORWARDED_ALLOW_IPS), as for the login brakes (webapp/guards.py).
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from .guards import UPLOAD_PATH, answer, run_counted

PER_HOUR_ENV = "WORKBENCH_UPLOAD_MB_PER_HOUR"
RESERVE_ENV = "WORKBENCH_DISK_RESERVE_MB"
UPLOADS_PER_LIMIT = 4             # default hourly allowance: this many uploads of the largest size
DEFAULT_RESERVE_MB = 1024.0
WINDOW_S = 3600.0
MAX_ADDRESSES = 10_000
DELETE_CACHE = (3600, 86400)      # gr.Blocks(delete_cache=...): every hour, files older than a day
SWEEP_IDLE_S = 600.0              # a partial upload not written for this long was abandoned
SWEEP_EVERY_S = 60.0
PARTIAL_PREFIX = "tmp"            # Gradio streams an upload into NamedTemporaryFile(dir=its folder)
MB = 2 ** 20


def _env_mb(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of MB") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r} is negative (0 switches it off)")
    return value


def upload_folder() -> Path:
    """Where Gradio stores uploads ($GRADIO_TEMP_DIR, else the system temp folder's gradio/)."""
    from gradio.utils import get_upload_folder
    return Path(get_upload_folder())


def settings(max_upload_bytes: int | None) -> dict:
    """UploadGuard's limits from the environment: {"per_hour_bytes", "reserve_bytes"}. ValueError
    (one line, naming the variable) when one is not a number of MB >= 0."""
    default_mb = UPLOADS_PER_LIMIT * (max_upload_bytes or 0) / MB
    return {"per_hour_bytes": int(_env_mb(PER_HOUR_ENV, default_mb) * MB),
            "reserve_bytes": int(_env_mb(RESERVE_ENV, DEFAULT_RESERVE_MB) * MB)}


def sweep_abandoned(folder: str | os.PathLike, idle_s: float = SWEEP_IDLE_S, now: float | None = None) -> int:
    """Delete the partial uploads Gradio left in its upload folder (files directly in it, named
    tmp*, not written for `idle_s`; finished uploads live in sub-folders). Returns how many."""
    now = time.time() if now is None else now
    gone = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.name.startswith(PARTIAL_PREFIX) and entry.is_file(follow_symlinks=False) \
                    and now - entry.stat(follow_symlinks=False).st_mtime > idle_s:
                os.unlink(entry.path)
                gone += 1
        except OSError:
            pass                              # gone already, or not ours to delete
    return gone


class UploadLedger:
    """Bytes uploaded per address in a sliding window; thread-safe, bounded, clock injectable."""

    def __init__(self, per_window: int, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, max_addresses: int = MAX_ADDRESSES):
        self.per_window, self.window_s, self.clock, self.max_addresses = per_window, window_s, clock, max_addresses
        self._sent: OrderedDict[str, deque[tuple[float, int]]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, address: str) -> deque[tuple[float, int]]:
        sent = self._sent.setdefault(address, deque())
        self._sent.move_to_end(address)
        horizon = self.clock() - self.window_s
        while sent and sent[0][0] <= horizon:
            sent.popleft()
        while len(self._sent) > self.max_addresses:
            self._sent.popitem(last=False)
        return sent

    def wait(self, address: str, more: int) -> float:
        """Seconds until `address` may send `more` bytes (0: now; inf: never, more than a window's worth)."""
        if not self.per_window:
            return 0.0
        if more > self.per_window:
            return float("inf")
        with self._lock:
            sent = self._recent(address)
            total = sum(n for _, n in sent)
            if total + more <= self.per_window:
                return 0.0
            for at, n in sent:                  # the oldest uploads leave the window first
                total -= n
                if total + more <= self.per_window:
                    break
            return max(0.0, at + self.window_s - self.clock())

    def record(self, address: str, sent_bytes: int) -> None:
        if self.per_window and sent_bytes > 0:
            with self._lock:
                self._recent(address).append((self.clock(), sent_bytes))


class UploadGuard:
    """The middleware: hourly bytes per address, and a free-space reserve, for uploads only."""

    def __init__(self, app: ASGIApp, per_hour_bytes: int = 0, reserve_bytes: int = 0,
                 folder: str | os.PathLike | None = None, clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.reserve = reserve_bytes
        self.folder = Path(folder) if folder is not None else None
        self.ledger = UploadLedger(per_hour_bytes, clock=clock)
        self._swept = 0.0

    def _free(self) -> int:
        folder = self.folder or upload_folder()
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent             # not made yet: the disk it will be on
        return shutil.disk_usage(folder).free

    def _refusal(self, address: str, more: int, free: int | None) -> tuple[int, str, list] | None:
        """(status, message, headers) when `more` bytes from `address` may not be stored, else None;
        `free`: the bytes free before this upload began (None: the reserve is off)."""
        if free is not None and free - more < self.reserve:
            return 507, "The server is short of disk space: uploads are refused for now. Try again later.", []
        wait = self.ledger.wait(address, more)
        if wait > 0:
            limit = self.ledger.per_window / MB
            if wait == float("inf"):
                return 429, f"Over the upload allowance of {limit:g} MB per hour for this address.", []
            seconds = int(wait) + 1
            when = f"{seconds} s" if seconds < 120 else f"{math.ceil(seconds / 60)} min"
            return 429, (f"Over the upload allowance of {limit:g} MB per hour for this address: "
                         f"try again in {when}."), [(b"retry-after", str(seconds).encode())]
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(UPLOAD_PATH) \
                or (not self.reserve and not self.ledger.per_window):
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("?", 0))[0]
        length = dict(scope.get("headers") or []).get(b"content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        free = self._free() if self.reserve else None
        refusal = self._refusal(address, declared or 0, free)
        if refusal:
            await answer(send, *refusal)
            return
        await run_counted(self.app, scope, receive, send,
                          lambda seen: self._refusal(address, seen, free) if declared is None or seen > declared else None,
                          done=self._done(address))

    def _done(self, address: str) -> Callable[[int], None]:
        def done(seen: int) -> None:            # the bytes of an upload cut short count too
            self.ledger.record(address, seen)
            if time.monotonic() - self._swept > SWEEP_EVERY_S:
                self._swept = time.monotonic()
                sweep_abandoned(self.folder or upload_folder())
        return done
