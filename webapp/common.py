"""Small helpers shared by the page's handlers and the API: one-line errors, row lookups."""

from __future__ import annotations

from typing import Any

import gradio as gr

from core.types import UserError, error_line

from .session import Session

SESSION_WORKERS = 4     # API session reads and edits served at once (the store serialises the writes);
                        # the page's own events stay one at a time: a page sends two events for one
                        # change (input and change), and they must see each other's result


def fail(err: BaseException) -> gr.Error:
    """A core.types.UserError (or a disk error) as Gradio's one-line error, never a traceback."""
    if isinstance(err, OSError) and not isinstance(err, UserError):
        return gr.Error(f"a file could not be read or written ({err.strerror or type(err).__name__})",
                        print_exception=False)
    return gr.Error(error_line(err, 300), print_exception=False)


def position(session: Session | None, uid: int | None) -> int | None:
    if session is None or uid is None:
        return None
    for i, r in enumerate(session.rows):
        if r.uid == uid:
            return i
    return None


def first_uid(session: Session) -> int | None:
    return session.rows[0].uid if session.rows else None


def num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}".rstrip("0").rstrip(".") if value % 1 else f"{value:.1f}"


def same(current: Any, new: Any) -> bool:
    """Is an edited cell unchanged? Numbers compare to the millisecond, text after stripping."""
    if new is None or (isinstance(new, float) and new != new):
        return current is None or current == ""
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        try:
            return abs(float(str(new).replace(",", ".")) - float(current)) < 0.0005
        except ValueError:
            return False
    return str(current if current is not None else "").strip() == str(new).strip()
