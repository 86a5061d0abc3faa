"""Guards in front of the app: a cap on request bodies, and a brake on repeated failed logins.

- BodyLimit (ASGI middleware): a request body over its cap is refused with 413 before it is read
  into memory: by its Content-Length when it gives one, else by counting as it arrives. File
  uploads (`/gradio_api/upload`) have the upload limit (Gradio enforces it while storing the
  file); every other request (an edit, a table, an API call) has API_BODY_MB.
- LoginBrake: after FREE_FAILURES wrong passwords for a login name, the next attempts at that name
  are refused at once, without checking the password, for a pause that doubles with each further
  failure (up to MAX_PAUSE_S); a correct login clears the count. So 300 guesses in 0.4 s get 5
  tries, not 300. (Gradio hands the auth callable the name and password only, so the brake is per
  name, not per address.)
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict
from typing import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_BODY_MB = 16.0               # an edit is a few hundred bytes; a 20,000-row table about 4 MB
UPLOAD_PATH = "/gradio_api/upload"
FREE_FAILURES = 5
FIRST_PAUSE_S = 2.0
MAX_PAUSE_S = 300.0
MAX_TRACKED = 10_000


class BodyLimit:
    """Refuse request bodies over `api_bytes` (over `upload_bytes` for uploads; 0 = no cap)."""

    def __init__(self, app: ASGIApp, api_bytes: int = int(API_BODY_MB * 2**20), upload_bytes: int = 0):
        self.app, self.api_bytes, self.upload_bytes = app, api_bytes, upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.upload_bytes if scope.get("path", "").startswith(UPLOAD_PATH) else self.api_bytes
        if not cap:
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            await _too_large(send, cap)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise _TooLarge()
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await _too_large(send, cap)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, cap: int) -> None:
    body = f"Request body over {cap / 2**20:g} MB: refused.".encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class LoginBrake:
    """Gradio's auth callable with a brake on failures (per login name)."""

    def __init__(self, logins: dict[str, str], clock: Callable[[], float] = time.monotonic):
        self.logins, self.clock = logins, clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()   # key -> (count, blocked until)
        self._lock = threading.Lock()

    def __call__(self, user: str, password: str) -> bool:
        keys = [f"user:{user}"]
        with self._lock:
            now = self.clock()
            if any(self._failures.get(k, (0, 0.0))[1] > now for k in keys):
                return False                       # paused: not even checked
        expected = self.logins.get(str(user))
        ok = expected is not None and hmac.compare_digest(expected.encode(), str(password).encode())
        with self._lock:
            for key in keys:
                if ok:
                    self._failures.pop(key, None)
                    continue
                count = self._failures.get(key, (0, 0.0))[0] + 1
                pause = 0.0 if count < FREE_FAILURES else min(MAX_PAUSE_S, FIRST_PAUSE_S * 2 ** (count - FREE_FAILURES))
                self._failures[key] = (count, self.clock() + pause)
                self._failures.move_to_end(key)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)
        return ok

    def paused(self, user: str) -> bool:
        with self._lock:
            return self._failures.get(f"user:{user}", (0, 0.0))[1] > self.clock()
