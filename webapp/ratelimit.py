"""Per-user rate limit on analyses and model switches (one shared count): at most N in any sliding
hour, per user.

The user is the login name when the app has one, else the client's IP address as uvicorn reports
it (behind a reverse proxy, uvicorn takes it from X-Forwarded-For when the proxy's address is in
$FORWARDED_ALLOW_IPS; 127.0.0.1 is trusted by default), else the Gradio session. The check is made
before any file is read or checkpoint loaded, so an over-limit request costs nothing and other users
are unaffected.
`0` switches the limit off.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable
from core.types import UserError

ENV = "WORKBENCH_RATE_PER_HOUR"
DEFAULT_PER_HOUR = 30          # app.py's default; a Workbench made in Python has no limit unless given one
IO_ENV = "WORKBENCH_IO_PER_HOUR"
DEFAULT_IO_PER_HOUR = 240      # imports and exports (each a file written on the server)
WINDOW_S = 3600.0
MAX_USERS = 10_000             # users remembered at once; the longest idle are forgotten first


class RateLimited(UserError, RuntimeError):
    """Over the limit; the message (one line) says the limit and when to try again."""


class RateLimiter:
    """A sliding-window counter per key; thread-safe. `clock` is injectable for tests."""

    def __init__(self, per_hour: int = 0, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, max_users: int = MAX_USERS):
        if isinstance(per_hour, bool) or not isinstance(per_hour, int) or per_hour < 0:
            raise ValueError(f"analyses per hour {per_hour!r} is not a whole number >= 0 (0 = no limit)")
        self.per_hour, self.window_s, self.clock, self.max_users = per_hour, window_s, clock, max_users
        self.what = "analyses"
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, per_hour: int | None = None, default: int = DEFAULT_PER_HOUR, env: str = ENV,
                 what: str = "analyses") -> "RateLimiter":
        """`per_hour` if given (a flag), else $`env`, else `default`. ValueError if bad."""
        if per_hour is None:
            raw = os.environ.get(env, "").strip()
            try:
                per_hour = int(raw) if raw else default
            except ValueError:
                raise ValueError(f"${env}={raw[:20]!r} is not a whole number (0 = no limit)") from None
        limiter = cls(per_hour)
        limiter.what = what
        return limiter

    @property
    def enabled(self) -> bool:
        return self.per_hour > 0

    def describe(self) -> str:
        return f"at most {self.per_hour} {self.what} per hour per user" if self.enabled else "no rate limit"

    def check(self, key: str | None) -> None:
        """Count one request for `key`, or raise RateLimited (nothing counted). None: not limited."""
        if not self.enabled or key is None:
            return
        with self._lock:
            now = self.clock()
            hits = self._window(key, now)
            if len(hits) >= self.per_hour:
                wait = hits[0] + self.window_s - now
                raise RateLimited(f"Rate limit reached: {self.describe()}. Try again in {_wait_text(wait)}.")
            hits.append(now)
            self._hits.move_to_end(key)
            while len(self._hits) > self.max_users:
                self._hits.popitem(last=False)

    def remaining(self, key: str | None) -> int | None:
        """How many more requests `key` may make now (None: no limit)."""
        if not self.enabled or key is None:
            return None
        with self._lock:
            if key not in self._hits:
                return self.per_hour
            return max(0, self.per_hour - len(self._window(key, self.clock())))

    def _window(self, key: str, now: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        return hits


def client_key(request: Any) -> str | None:
    """Who is asking, from a gr.Request: login name, else IP address, else Gradio session."""
    if request is None:
        return None
    user = getattr(request, "username", None)
    if user:
        return f"user:{user}"
    client = getattr(request, "client", None)
    host = getattr(client, "host", None) if client is not None else None
    if host:
        return f"ip:{host}"
    session = getattr(request, "session_hash", None)
    return f"session:{session}" if session else None


def _wait_text(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 90:
        return f"{seconds} s"
    return f"{math.ceil(seconds / 60)} min"
