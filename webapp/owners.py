"""Who owns a session: the login that made it, else the browser (or API client) that made it.

- With `--auth`, the owner is the login (`user:NAME`): the same person on any browser.
- Without a login, the page keeps an unguessable token in the browser's storage (gr.BrowserState,
  encrypted with the server's key) and sends it with every event: the owner is `browser:TOKEN`.
- An API client without a login is `client:TOKEN` when it sends the header `X-Workbench-Token`
  (keep the same token to come back to one's sessions from a new client), else the client's own
  connection (`gradio_client.Client` keeps one session hash for its lifetime).
- A login named with `--admin` reaches every session (owner ANY).
Nothing here trusts a value the client could choose to impersonate someone: tokens are random and
at least TOKEN_MIN characters, logins come from Gradio's authentication.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from core.types import UserError

TOKEN_HEADER = "x-workbench-token"
TOKEN_MIN = 16
ANY = None


class NoOwner(UserError):
    """The request cannot be tied to anyone (no login, no token, no connection)."""


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _digest(token: str) -> str:
    """Tokens are stored hashed: the database never holds what would let someone act as another."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def owner_of(request: Any, browser_token: str | None = None, admins: frozenset[str] = frozenset()) -> str | None:
    """The owner key of a request (see the module docstring); ANY for an admin login."""
    user = getattr(request, "username", None) if request is not None else None
    if user:
        return ANY if user in admins else f"user:{user}"
    token = str(browser_token or "").strip()
    if len(token) >= TOKEN_MIN:
        return f"browser:{_digest(token)}"
    headers = getattr(request, "headers", None) or {}
    try:
        header = str(headers.get(TOKEN_HEADER, "") or "").strip()
    except AttributeError:
        header = ""
    if len(header) >= TOKEN_MIN:
        return f"client:{_digest(header)}"
    if header:
        raise NoOwner(f"the {TOKEN_HEADER} header must be at least {TOKEN_MIN} characters")
    session_hash = getattr(request, "session_hash", None) if request is not None else None
    if session_hash:
        return f"client:{_digest('hash:' + str(session_hash))}"
    raise NoOwner("this request carries no login and no token, so it cannot own a session")
