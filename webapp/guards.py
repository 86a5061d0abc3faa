"""Guards in front of the app: a cap on request bodies, and brakes on repeated failed logins.

- BodyLimit (ASGI middleware): a request body over its cap is refused with 413 before it is read
  into memory: by its Content-Length when it gives one, else by counting as it arrives; when a
  chunked body passes the cap, the 413 is sent at once and the app is told the client left, so
  nothing after it is read. File uploads (`/gradio_api/upload`) have the upload limit (Gradio
  enforces it while storing the file); every other request (an edit, a table, an API call) has
  API_BODY_MB.
- LoginBrake: after FREE_FAILURES wrong passwords for a login name, the next attempts at that name
  are refused at once, without checking the password, for a pause that doubles with each further
  failure (up to MAX_PAUSE_S); a correct login clears the count. So 300 guesses in 0.4 s get 5
  tries, not 300.
- AddressBrake (ASGI middleware): the same brake per client address, for guesses spread over many
  names (Gradio hands the auth callable the name and password only, so the address is read here,
  from the login request and its answer). A paused address gets 429 with the seconds to wait.
  Behind a proxy the address is the one the ASGI server reports (uvicorn's --proxy-headers).
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
        await run_counted(self.app, scope, receive, send,
                          lambda seen: (413, _too_large_text(cap), []) if seen > cap else None)


async def run_counted(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                      judge: Callable[[int], tuple[int, str, list] | None],
                      done: Callable[[int], None] | None = None) -> None:
    """Run `app` with the request body counted as it arrives: after each piece, `judge(bytes so
    far)` says None (go on) or (status, text, headers): that answer is sent at once and the app is
    told the client left, so nothing after it is read. `done(bytes seen)` is called at the end."""
    seen, refused = 0, False

    async def counted() -> Message:
        nonlocal seen, refused
        if refused:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            verdict = judge(seen)
            if verdict:                         # answer now; the app sees a client that left
                refused = True
                await answer(send, *verdict)
                return {"type": "http.disconnect"}
        return message

    async def unless_refused(message: Message) -> None:
        if not refused:
            await send(message)

    try:
        await app(scope, counted, unless_refused)
    except Exception:
        if not refused:           # after a refusal the app only fails on the "client left" we told it
            raise
    finally:
        if done is not None:
            done(seen)


def _too_large_text(cap: int) -> str:
    return f"Request body over {cap / 2**20:g} MB: refused."


async def _too_large(send: Send, cap: int) -> None:
    await answer(send, 413, _too_large_text(cap))


async def answer(send: Send, status: int, text: str, headers: list | None = None) -> None:
    """Answer a request at once with `status` and one line of text (the app never sees it)."""
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class Failures:
    """Failed attempts per key, with the pause each earns (thread-safe, bounded)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()   # key -> (count, blocked until)
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Seconds `key` must still wait (0: it may try)."""
        with self._lock:
            return max(0.0, self._failures.get(key, (0, 0.0))[1] - self.clock())

    def record(self, key: str, ok: bool) -> None:
        with self._lock:
            if ok:
                self._failures.pop(key, None)
                return
            count = self._failures.get(key, (0, 0.0))[0] + 1
            pause = 0.0 if count < FREE_FAILURES else min(MAX_PAUSE_S, FIRST_PAUSE_S * 2 ** (count - FREE_FAILURES))
            self._failures[key] = (count, self.clock() + pause)
            self._failures.move_to_end(key)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)


class LoginBrake:
    """Gradio's auth callable with a brake on failures (per login name)."""

    def __init__(self, logins: dict[str, str], clock: Callable[[], float] = time.monotonic):
        self.logins = logins
        self.failures = Failures(clock)

    def __call__(self, user: str, password: str) -> bool:
        key = f"user:{user}"
        if self.failures.wait(key) > 0:
            return False                           # paused: not even checked
        expected = self.logins.get(str(user))
        ok = expected is not None and hmac.compare_digest(expected.encode(), str(password).encode())
        self.failures.record(key, ok)
        return ok

    def paused(self, user: str) -> bool:
        return self.failures.wait(f"user:{user}") > 0


LOGIN_PATHS = ("/login", "/login/")


class AddressBrake:
    """Refuse login attempts (429) from a client address while its failures have earned a pause."""

    def __init__(self, app: ASGIApp, clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.failures = Failures(clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope.get("path", "").endswith(LOGIN_PATHS):
            await self.app(scope, receive, send)
            return
        key = "addr:" + str((scope.get("client") or ("?", 0))[0])
        wait = self.failures.wait(key)
        if wait > 0:
            await answer(send, 429, f"Too many failed logins from your address: try again in {wait:.0f} s.",
                          [(b"retry-after", str(int(wait) + 1).encode())])
            return
        status = 0

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watched)
        if status in (200, 400, 401):
            self.failures.record(key, ok=status == 200)
