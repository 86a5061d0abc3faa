"""Event handlers that correct and export: a field of the row editor, cells of the table, split,
merge, add, delete, undo, the Dialogue_ID, bulk relabelling of chosen rows, the keyboard's label
keys, and the MELD exports.

Every change goes through Workbench.apply: one transaction, saved before the handler returns, so
what the page shows after an edit is what is on disk. A refused value is reverted on the page and
said in the status line and a toast. The editor's fields are saved for the row they were typed
for: each save carries that row's uid (the hidden `ed_uid`, sent by the browser with the field's
value), never "whatever is selected when the save arrives".
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from core.labels import EMOTIONS

from . import checks, views
from .common import first_uid, position, same
from .ratelimit import client_key
from .render import Ctx, Renderer
from .session import (EDITABLE, EditError, Session, add_row, delete_row, merge_next, set_dialogue_id,
                      set_field, split_row)

MAX_BULK = 5000          # rows one bulk change may touch


class Corrections:
    def __init__(self, render: Renderer):
        self.r, self.wb, self.p = render, render.wb, render.p
        self._last_warning: dict[str, tuple[str, float]] = {}

    def warn_once(self, session_id: str, message: str) -> None:
        """A warning toast, not repeated when the table sends the same refused edit twice."""
        last = self._last_warning.get(session_id)
        if last is None or last[0] != message or time.monotonic() - last[1] > 5:
            gr.Warning(message)
        self._last_warning[session_id] = (message, time.monotonic())

    # ------------------------------------------------------------ the one way a change is made

    def _change(self, ctx: Ctx, uid: int | None, change, player: str = "none", what: str = "The change") -> dict:
        if not ctx.sid:
            return self.r.failed(what, EditError("open a session first"))
        try:
            before = self.wb.session(ctx.sid, ctx.owner)
            session, note = self.wb.apply(ctx.sid, change, ctx.owner)
        except EditError as err:
            gr.Warning(f"Reverted: {err}")
            return self.r.view(self.r.session(ctx), ctx, uid, f"↩ Reverted: {err}")
        except Exception as err:
            return self.r.failed(what, err)
        if uid is not None and position(session, uid) is None:
            uid = first_uid(session)
        note = (f"{'✓ Saved.' if session.version != before.version else ''} {note}").strip()
        warning = " ".join(filter(None, [self._new_overlaps(before, session), self._new_pairs(before, session)]))
        if warning:
            gr.Warning(warning)
            note = f"{note} ⚠ {warning}".strip()
        return self.r.view(session, ctx, uid, note, player=player)

    @staticmethod
    def _new_overlaps(before: Session, after: Session) -> str:
        old = {(before.rows[i.position].uid) for i in checks.overlaps(before)}
        new = [i for i in checks.overlaps(after) if after.rows[i.position].uid not in old]
        return ("Times overlap: " + checks.summary(new) + ".") if new else ""

    @staticmethod
    def _new_pairs(before: Session, after: Session) -> str:
        old = {(before.rows[i.position].uid, i.message) for i in checks.label_pairs(before)}
        new = [i for i in checks.label_pairs(after) if (after.rows[i.position].uid, i.message) not in old]
        return ("Check the labels: " + checks.summary(new) + ".") if new else ""

    # ------------------------------------------------------------ the row editor and the table

    def field(self, name: str):
        """A handler that saves `name` for the row the editor showed when it was typed (ed_uid)."""
        def handler(sid: str, ed_uid: str, tview, value: Any,
                    request: gr.Request = None) -> dict:
            ctx = self.r.ctx(request, sid, ed_uid, tview)
            uid = ctx.sel
            session = self.r.session(ctx)
            if uid is None or session is None or position(session, uid) is None:
                return self.r.nothing()
            if same(getattr(session.row(uid), name), value):
                return self.r.nothing()
            return self._change(ctx, uid, lambda s: (set_field(s, uid, name, value), ""),
                                player="subtitles" if name != "sentiment" else "none", what=f"Saving the {name}")
        return handler

    def table_edit(self, sid: str, sel, tview, frame, request: gr.Request = None) -> dict:
        """Cells edited in the table: valid ones are saved, the others reverted with a message."""
        ctx = self.r.ctx(request, sid, sel, tview)
        columns = list(getattr(frame, "columns", []))
        records = frame.values.tolist() if columns else []

        def change(s: Session) -> tuple[Session, str]:
            shown = [views.parse_id(dict(zip(columns, rec)).get("id")) for rec in records]
            if shown != views.shown_positions(s, ctx.view, position(s, ctx.sel)):
                return s, ("↩ The table was out of date (rows are added, split, merged or deleted with "
                           "the buttons above); it has been refreshed, nothing was changed.")
            refused = []
            for pos, record in zip(shown, records):
                cells = dict(zip(columns, record))
                row = s.rows[pos]
                for name in EDITABLE:
                    if name in cells and not same(getattr(row, name), cells[name]):
                        try:
                            s = set_field(s, row.uid, name, cells[name])
                        except EditError as err:
                            refused.append(f"utterance {pos} {name}: {err}")
            if refused:
                self.warn_once(sid, "Reverted: " + "; ".join(refused)[:400])
            return s, ("↩ Reverted: " + "; ".join(refused)) if refused else ""
        return self._change(ctx, ctx.sel, change, player="subtitles", what="Saving the table")

    def split(self, sid: str, sel, tview, at: str, request: gr.Request = None) -> dict:
        ctx = self.r.ctx(request, sid, sel, tview)
        if ctx.sel is None:
            return self.r.failed("Split", EditError("select an utterance to split"))
        uid = ctx.sel
        return self._change(ctx, uid, lambda s: (split_row(s, uid, at), "Split in two."), player="subtitles",
                            what="Split")

    def merge(self, sid: str, sel, tview, request: gr.Request = None) -> dict:
        ctx = self.r.ctx(request, sid, sel, tview)
        if ctx.sel is None:
            return self.r.failed("Merge", EditError("select an utterance to merge with the next"))
        uid = ctx.sel

        def change(s):
            new, note = merge_next(s, uid)
            return new, f"Merged with the next utterance. {note}".strip()
        return self._change(ctx, uid, change, player="subtitles", what="Merge")

    def add(self, sid: str, sel, tview, request: gr.Request = None) -> dict:
        ctx = self.r.ctx(request, sid, sel, tview)
        created = {}

        def change(s):
            new, created["uid"] = add_row(s, ctx.sel)
            return new, "Added an utterance: type its words, set its times and labels."
        out = self._change(ctx, ctx.sel, change, player="subtitles", what="Adding an utterance")
        session = self.r.session(ctx)
        if "uid" in created and session is not None:
            out.update(self.r.focus(session, ctx, created["uid"]))
        return out

    def delete(self, sid: str, sel, tview, request: gr.Request = None) -> dict:
        ctx = self.r.ctx(request, sid, sel, tview)
        if ctx.sel is None:
            return self.r.failed("Delete", EditError("select an utterance to delete"))
        uid, session = ctx.sel, self.r.session(ctx)
        pos = position(session, uid)
        nxt = None
        if session is not None and pos is not None and len(session.rows) > 1:
            nxt = session.rows[pos + 1 if pos + 1 < len(session.rows) else pos - 1].uid
        out = self._change(ctx, uid, lambda s: (delete_row(s, uid), "Deleted (Undo brings it back)."),
                           player="subtitles", what="Delete")
        session = self.r.session(ctx)
        if session is not None and position(session, uid) is None and nxt is not None:
            out.update(self.r.focus(session, ctx, nxt, seek=False))
        return out

    def undo(self, sid: str, sel, tview, request: gr.Request = None) -> dict:
        ctx = self.r.ctx(request, sid, sel, tview)
        try:
            session = self.wb.undo(sid, ctx.owner)
        except Exception as err:
            return self.r.failed("Undo", err)
        uid = ctx.sel if position(session, ctx.sel) is not None else first_uid(session)
        return self.r.view(session, ctx, uid, "↶ Undone (saved).", player="subtitles")

    def dialogue_id(self, sid: str, sel, tview, value, request: gr.Request = None) -> dict:
        ctx = self.r.ctx(request, sid, sel, tview)
        session = self.r.session(ctx)
        if session is None or value is None or same(session.dialogue_id, value):
            return self.r.nothing()

        def change(s):
            new = set_dialogue_id(s, value)
            clash = [x["title"] for x in self.wb.sessions(ctx.owner)
                     if x["dialogue_id"] == new.dialogue_id and x["id"] != s.id]
            note = (f"Dialogue_ID set; note that {clash[0]!r}{' and others' if len(clash) > 1 else ''} "
                    "uses it too: give each video its own before merging exports.") if clash else "Dialogue_ID set."
            return new, note
        out = self._change(ctx, ctx.sel, change, what="Setting the Dialogue_ID")
        current = self.r.session(ctx)
        out[self.p.dialogue] = current.dialogue_id if current else None
        return out

    # ------------------------------------------------------------ several rows at once, and keys

    def bulk(self, sid: str, sel, tview, rows: str, emotion: str | None,
             sentiment: str | None, speaker: str | None, request: gr.Request = None) -> dict:
        """Set emotion, sentiment and/or speaker of the rows named in `rows` ("0-4, 7", "shown", "all",
        or a speaker's name)."""
        ctx = self.r.ctx(request, sid, sel, tview)
        session = self.r.session(ctx)
        if session is None:
            return self.r.failed("Bulk change", EditError("open a session first"))
        try:
            positions = parse_rows(rows, session, ctx.view)
        except EditError as err:
            return self.r.failed("Bulk change", err)
        values = [(n, v) for n, v in (("emotion", emotion), ("sentiment", sentiment), ("speaker", speaker))
                  if v not in (None, "")]
        if not values:
            return self.r.failed("Bulk change", EditError("choose an emotion, a sentiment or a speaker to set"))

        def change(s: Session) -> tuple[Session, str]:
            for pos in positions:
                for name, value in values:
                    s = set_field(s, s.rows[pos].uid, name, value)
            what = ", ".join(f"{n} = {v}" for n, v in values)
            return s, f"Set {what} on {len(positions)} utterance(s)."
        return self._change(ctx, ctx.sel, change, player="subtitles", what="Bulk change")

    def key(self, sid: str, sel, tview, command: str, request: gr.Request = None) -> dict:
        """A label key pressed on the page (the hook sends "emotion:NAME@NONCE"): set it on the selection."""
        name, _, value = str(command or "").partition("@")[0].partition(":")
        if name != "emotion" or value not in EMOTIONS:
            return self.r.nothing()
        ctx = self.r.ctx(request, sid, sel, tview)
        if ctx.sel is None:
            return self.r.nothing()
        uid = ctx.sel
        return self._change(ctx, uid, lambda s: (set_field(s, uid, "emotion", value), ""), player="subtitles",
                            what="Setting the emotion")

    # ------------------------------------------------------------ export

    def export_csv(self, sid: str, request: gr.Request = None) -> dict:
        owner = self.wb.owner(request)
        try:
            path = self.wb.export_csv(sid, owner, user=client_key(request))
        except Exception as err:
            out = self.r.failed("Export", err)
            out[self.p.export_file] = None
            return out
        return {self.p.export_file: str(path), self.p.status: f"✓ Exported {path.name}."}

    def export_zip(self, sid: str, request: gr.Request = None, progress=gr.Progress()) -> dict:
        owner = self.wb.owner(request)
        try:
            report = self.wb.export_zip(sid, owner, lambda f, s: progress(f, desc=s), user=client_key(request))
        except Exception as err:
            out = self.r.failed("Export", err)
            out[self.p.export_file] = None
            return out
        note = f"✓ Exported {report.path.name}: {report.clips} clip(s)."
        if report.skipped:
            gr.Warning(f"{len(report.skipped)} clip(s) left out: see MISSING_CLIPS.txt in the zip.")
            note += f" {len(report.skipped)} left out (see MISSING_CLIPS.txt)."
        return {self.p.export_file: str(report.path), self.p.status: note}


def parse_rows(text: str, session: Session, view: views.TableView) -> list[int]:
    """Table ids from "0-4, 7", "shown" (the rows the table shows now), "all", or a speaker's name
    (that speaker's rows: "Speaker 2" -> "Ross" names a suggested speaker everywhere); EditError if bad."""
    text = str(text or "").strip().lower()
    n = len(session.rows)
    if text in ("all", "*"):
        return list(range(n))
    if text in ("shown", "filtered", "visible"):
        return views.visible_positions(session, view)
    spoken = [i for i, row in enumerate(session.rows) if row.speaker.strip().lower() == text]
    if text and spoken:
        return spoken
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
        lo, dash, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise EditError(f"{part[:20]!r} is not a row id, a range like 2-5 or a speaker of this session") from None
        if not (0 <= a <= b < n):
            raise EditError(f"rows {part[:20]} are not in this session (ids 0 to {n - 1})")
        out.extend(range(a, b + 1))
        if len(out) > MAX_BULK:
            raise EditError(f"at most {MAX_BULK} rows at once")
    if not out:
        raise EditError("name the rows to change: ids like 0-4, 7, or 'shown', 'all' or a speaker's name")
    return sorted(set(out))
