"""Who owns a session: the login that made it, else the browser (or API client) that made it.

- With `--auth`, the owner is the login (`user:NAME`): the same person on any browser.
- Without a login, the page keeps an unguessable token (24 random bytes) in the browser's storage and
  sends it as the cookie COOKIE with every request, from the very first (ui.HEAD sets it before the
  app starts): the owner is `token:HASH`.
- An API client without a login is `token:HASH` too when it sends the header `X-Workbench-Token`
  (keep the same token to come back to one's sessions from a new client), else the client's own
  connection (`client:HASH`: `gradio_client.Client` keeps one session hash for its lifetime).
- A login named with `--admin` reaches every session (owner ANY).
Nothing here trusts a value the client could choose to impersonate someone: tokens are random and
at least TOKEN_MIN characters, logins come from Gradio's authentication.
"""

from __future__ import annotations

import hashlib
from typing import Any

from core.types import UserError

TOKEN_HEADER = "x-workbench-token"
COOKIE = "wb_owner"
TOKEN_MIN = 16
ANY = None


class NoOwner(UserError):
    """The request cannot be tied to anyone (no login, no token, no connection)."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def for_token(token: str) -> str:
    """The owner key of a browser or API token (stored hashed: the database never holds a token)."""
    return f"token:{_digest(token)}"


def owner_of(request: Any, admins: frozenset[str] = frozenset()) -> str | None:
    """The owner key of a request (see the module docstring); ANY for an admin login."""
    user = getattr(request, "username", None) if request is not None else None
    if user:
        return ANY if user in admins else f"user:{user}"
    try:
        cookie = str((getattr(request, "cookies", None) or {}).get(COOKIE, "") or "").strip()
    except AttributeError:
        cookie = ""
    if len(cookie) >= TOKEN_MIN:
        return for_token(cookie)
    headers = getattr(request, "headers", None) or {}
    try:
        header = str(headers.get(TOKEN_HEADER, "") or "").strip()
    except AttributeError:
        header = ""
    if len(header) >= TOKEN_MIN:
        return for_token(header)
    if header:
        raise NoOwner(f"the {TOKEN_HEADER} header must be at least {TOKEN_MIN} characters")
    session_hash = getattr(request, "session_hash", None) if request is not None else None
    if session_hash:
        return f"client:{_digest('hash:' + str(session_hash))}"
    raise NoOwner("this request carries no login and no token, so it cannot own a session")
