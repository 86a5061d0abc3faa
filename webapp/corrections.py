"""The correcting and exporting half of the page's handlers (a mixin of handlers.Handlers).

Every change goes through Workbench.apply: one transaction, saved before the handler returns, so
what the page shows after an edit is what is on disk. A refused value is reverted on the page and
said in a warning.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from . import charts, export, views
from .common import USER_ERRORS, fail, first_uid, position, same
from .session import (EDITABLE, EditError, Session, add_row, delete_row, merge_next, set_dialogue_id,
                      set_field, split_row)


class Corrections:
    def warn_once(self, session_id: str, message: str) -> None:
        """A warning toast, not repeated when the table sends the same refused edit twice."""
        last = self._last_warning.get(session_id)
        if last is None or last[0] != message or time.monotonic() - last[1] > 5:
            gr.Warning(message)
        self._last_warning[session_id] = (message, time.monotonic())

    # ------------------------------------------------------------ correcting

    def _change(self, session_id: str, uid: int | None, change, player: str = "none") -> dict:
        if not session_id:
            raise gr.Error("Open a session first.", print_exception=False)
        try:
            before = self.wb.store.load(session_id).version
            session, note = self.wb.apply(session_id, change)
        except EditError as err:
            gr.Warning(f"Reverted: {err}")
            session, note = self._session(session_id), f"↩ Reverted: {err}"
            return self.view(session, uid, note)
        except USER_ERRORS as err:
            raise fail(err) from None
        if uid is not None and position(session, uid) is None:
            uid = first_uid(session)
        saved = "✓ Saved." if session.version != before else ""
        return self.view(session, uid, f"{saved} {note}".strip(), player=player)

    def field(self, name: str):
        """A handler that sets `name` of the selected utterance."""
        def handler(session_id: str, uid: int | None, value: Any) -> dict:
            if uid is None:
                return self.nothing()
            session = self._session(session_id)
            if session is None or position(session, uid) is None:
                return self.nothing()
            if same(getattr(session.row(uid), name), value):
                return self.nothing()
            return self._change(session_id, uid, lambda s: (set_field(s, uid, name, value), ""),
                                player="subtitles" if name != "sentiment" else "none")
        return handler

    def table_edit(self, session_id: str, uid: int | None, frame) -> dict:
        """Cells edited in the table: valid ones are saved, the others reverted with a message."""
        columns = list(getattr(frame, "columns", []))
        records = frame.values.tolist() if columns else []

        def change(s: Session) -> tuple[Session, str]:
            if len(records) != len(s.rows):    # rows added or removed elsewhere: positions differ
                return s, ("↩ The table was out of date (rows are added, split, merged or deleted with "
                           "the buttons above); it has been refreshed, nothing was changed.")
            refused = []
            for record in records:
                cells = dict(zip(columns, record))
                try:
                    pos = int(cells.get("id"))
                    row = s.rows[pos]
                except (TypeError, ValueError, IndexError):
                    continue
                for name in EDITABLE:
                    if name in cells and not same(getattr(row, name), cells[name]):
                        try:
                            s = set_field(s, row.uid, name, cells[name])
                        except EditError as err:
                            refused.append(f"utterance {pos} {name}: {err}")
            if refused:
                self.warn_once(session_id, "Reverted: " + "; ".join(refused)[:400])
            return s, ("↩ Reverted: " + "; ".join(refused)) if refused else ""
        return self._change(session_id, uid, change, player="subtitles")

    def split(self, session_id: str, uid: int | None, at: str) -> dict:
        if uid is None:
            raise gr.Error("Select an utterance to split.", print_exception=False)
        return self._change(session_id, uid, lambda s: (split_row(s, uid, at), "Split in two."), player="subtitles")

    def merge(self, session_id: str, uid: int | None) -> dict:
        if uid is None:
            raise gr.Error("Select an utterance to merge with the next.", print_exception=False)
        def change(s):
            new, note = merge_next(s, uid)
            return new, f"Merged with the next utterance. {note}".strip()
        return self._change(session_id, uid, change, player="subtitles")

    def add(self, session_id: str, uid: int | None) -> dict:
        created = {}

        def change(s):
            new, created["uid"] = add_row(s, uid)
            return new, "Added an utterance: type its words, set its times and labels."
        out = self._change(session_id, uid, change, player="subtitles")
        if "uid" in created:
            session = self.wb.store.load(session_id)
            out.update(self._focus(session, created["uid"]))
        return out

    def delete(self, session_id: str, uid: int | None) -> dict:
        if uid is None:
            raise gr.Error("Select an utterance to delete.", print_exception=False)
        session = self._session(session_id)
        pos = position(session, uid)
        nxt = None
        if session is not None and pos is not None and len(session.rows) > 1:
            nxt = session.rows[pos + 1 if pos + 1 < len(session.rows) else pos - 1].uid
        out = self._change(session_id, uid, lambda s: (delete_row(s, uid), "Deleted (Undo brings it back)."),
                           player="subtitles")
        session = self._session(session_id)
        if session is not None and position(session, uid) is None:
            out.update(self.editor(session, nxt))
            out[self.p.sel] = nxt
            out[self.p.detail] = views.detail_markdown(session, position(session, nxt))
            out[self.p.chart] = charts.timeline(session, position(session, nxt))
        return out

    def undo(self, session_id: str, uid: int | None) -> dict:
        try:
            session = self.wb.undo(session_id)
        except USER_ERRORS as err:
            raise fail(err) from None
        if position(session, uid) is None:
            uid = first_uid(session)
        return self.view(session, uid, "↶ Undone (saved).", player="subtitles")

    def dialogue_id(self, session_id: str, uid: int | None, value) -> dict:
        session = self._session(session_id)
        if session is None or value is None or same(session.dialogue_id, value):
            return self.nothing()
        def change(s):
            new = set_dialogue_id(s, value)
            clash = [x["title"] for x in self.wb.store.list()
                     if x["dialogue_id"] == new.dialogue_id and x["id"] != s.id]
            note = (f"Dialogue_ID set; note that {clash[0]!r}{' and others' if len(clash) > 1 else ''} "
                    "uses it too: give each video its own before merging exports.") if clash else "Dialogue_ID set."
            return new, note
        out = self._change(session_id, uid, change)
        out[self.p.dialogue] = self._session(session_id).dialogue_id
        return out

    # ------------------------------------------------------------ export

    def export_csv(self, session_id: str):
        if not session_id:
            raise gr.Error("Open a session first.", print_exception=False)
        try:
            path = self.wb.export_csv(session_id)
        except USER_ERRORS as err:
            raise fail(err) from None
        self._warn_gaps(session_id)
        return str(path)

    def export_zip(self, session_id: str, progress=gr.Progress()):
        if not session_id:
            raise gr.Error("Open a session first.", print_exception=False)
        try:
            report = self.wb.export_zip(session_id, lambda f, s: progress(f, desc=s))
        except USER_ERRORS as err:
            raise fail(err) from None
        if report.skipped:
            gr.Warning(f"{len(report.skipped)} clip(s) left out: see MISSING_CLIPS.txt in the zip.")
        self._warn_gaps(session_id)
        return str(report.path)

    def _warn_gaps(self, session_id: str) -> None:
        session = self._session(session_id)
        gaps = export.label_gaps(session) if session else []
        if gaps:
            gr.Warning(f"{len(gaps)} utterance(s) lack a label or a time ({gaps[0]}"
                       f"{', …' if len(gaps) > 1 else ''}): training will skip them.")
