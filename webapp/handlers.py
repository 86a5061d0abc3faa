"""Event handlers that open and select: analyse, the example, import, reopen, restore on reload,
select a row (table, chart click, ◀ ▶ and keys), order and filter the table, and the sessions
panel (rename, delete with confirmation, undo a delete). Each returns a dict {component: update};
render.py builds them. Corrections and exports are in corrections.py.

Every handler takes the page's context inputs (session id, selection, the table view) and the
gr.Request, whose login or browser cookie (owners.py) names the owner, so it only ever reaches the
asker's own sessions. A failure is
written in the status line, where it stays until the next action.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from core.labels import EMOTIONS
from core.types import UserError

from . import views
from .common import first_uid, position
from .ratelimit import client_key
from .render import Ctx, Renderer

EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "examples" / "example.mp4"


class Handlers:
    def __init__(self, render: Renderer):
        self.r, self.wb, self.p = render, render.wb, render.p

    # ------------------------------------------------------------ opening

    def analyse(self, upload: str | None, neighbours: bool, any_language: bool, tview,
                request: gr.Request = None, progress=gr.Progress()) -> dict:
        if not upload:
            return self.r.failed("Analysis", _Missing("upload or record a file first"))
        ctx = self.r.ctx(request, "", None, tview)
        try:
            session = self.wb.analyze(upload, lambda f, stage: progress(f, desc=stage),
                                      user=client_key(request), owner=ctx.owner, dialogue=neighbours is not False,
                                      any_language=any_language is True)
        except Exception as err:            # shown in the status line, never a bare "Error"
            return self.r.failed(f"Analysis of {Path(str(upload)).name[:60]}", err)
        note = "" if session.rows else "Nothing to annotate."
        return self.r.view(session, ctx, first_uid(session), note, player="reload", full=True)

    def example(self, neighbours: bool, any_language: bool, tview, request: gr.Request = None,
                progress=gr.Progress()) -> dict:
        if not EXAMPLE.is_file():
            return self.r.failed("The example", _Missing("the example video is missing: run scripts/make_example.py"))
        return self.analyse(str(EXAMPLE), neighbours, any_language, tview, request, progress)

    def import_csv(self, csv_file: str | None, media_file: str | None, run_model: bool, tview, request: gr.Request = None, progress=gr.Progress()) -> dict:
        if not csv_file:
            return self.r.failed("Import", _Missing("choose a MELD CSV file to import"))
        ctx = self.r.ctx(request, "", None, tview)
        progress(0.05, desc="reading the CSV")
        try:
            sessions, imported = self.wb.import_csv(csv_file, media_file, owner=ctx.owner, user=client_key(request),
                                                    run_model=bool(run_model),
                                                    progress=lambda f, stage: progress(f, desc=stage))
        except Exception as err:
            return self.r.failed("Import", err)
        if not sessions:
            return self.r.failed("Import", _Missing("the CSV holds no utterances"))
        n_problems = len(imported.problems)
        first = sessions[0]
        note = (f"Imported {imported.row_count} row(s) in {len(sessions)} dialogue(s)"
                + (f" as {len(sessions)} sessions (this one is the first)" if len(sessions) > 1 else "")
                + (f"; **{n_problems} problem(s)** listed below the table (⚠ rows), every row kept."
                   if n_problems else "; no problems."))
        if not media_file:
            note += (" No video or audio was given: the player, the model's opinions and the clips of the "
                     "zip export need it (import again with the file).")
        elif first.message:
            note += f" {first.message}"
        if n_problems:
            gr.Warning(f"{n_problems} problem(s) in the CSV: see the list under the table.")
        return self.r.view(first, ctx, first_uid(first), note, player="reload", full=True)

    def open(self, session_id: str | None, tview, request: gr.Request = None) -> dict:
        if not session_id:
            return self.r.nothing()
        ctx = self.r.ctx(request, session_id, None, tview)
        try:
            session = self.wb.session(session_id, ctx.owner)
        except Exception as err:
            return self.r.failed("Opening the session", err)
        return self.r.view(session, ctx, first_uid(session), "Reopened.", player="reload", full=True)

    def load(self, remembered: str | None, request: gr.Request = None) -> dict:
        """A page load: reopen this browser's last session (if it is still this browser's)."""
        ctx = self.r.ctx(request, remembered, None, None)
        session = self.r.session(ctx) if remembered else None
        if session is None:
            out = self.r.view(None, ctx, full=True)
            out[self.p.player] = self.r.player(None)
        else:
            out = self.r.view(session, ctx, first_uid(session), "Restored from the autosave.",
                              player="reload", full=True)
        out[self.p.tview] = ctx.view
        return out

    # ------------------------------------------------------------ selecting

    def select(self, sid: str, sel, tview, evt: gr.SelectData,
               request: gr.Request = None) -> dict:
        """A cell of the table clicked: select its row (by its id, whatever the order shown)."""
        row_id = evt.row_value[0] if evt.row_value else None
        return self._select_position(self.r.ctx(request, sid, sel, tview), views.parse_id(row_id))

    def pick(self, sid: str, sel, tview, picked: str, request: gr.Request = None) -> dict:
        """A bar of the chart clicked (the page's hook sends "POSITION@NONCE")."""
        return self._select_position(self.r.ctx(request, sid, sel, tview),
                                     views.parse_id(str(picked or "").partition("@")[0]))

    def goto(self, sid: str, sel, tview, value, request: gr.Request = None) -> dict:
        """The "Go to id" box: select that utterance (its page of the table, its part of the chart)."""
        try:
            pos = int(value)
        except (TypeError, ValueError, OverflowError):
            return self.r.nothing()
        return self._select_position(self.r.ctx(request, sid, sel, tview), pos)

    def _select_position(self, ctx: Ctx, pos: int | None) -> dict:
        session = self.r.session(ctx)
        if session is None or pos is None or not 0 <= pos < len(session.rows):
            return self.r.nothing()
        return self.r.focus(session, ctx, session.rows[pos].uid)

    def previous(self, sid: str, sel, tview, request: gr.Request = None) -> dict:
        """◀ (and ↑, k): the row before, in the order the table shows."""
        return self._step(self.r.ctx(request, sid, sel, tview), -1)

    def next(self, sid: str, sel, tview, request: gr.Request = None) -> dict:
        """▶ (and ↓, j): the row after, in the order the table shows."""
        return self._step(self.r.ctx(request, sid, sel, tview), +1)

    def _step(self, ctx: Ctx, delta: int) -> dict:
        session = self.r.session(ctx)
        if session is None or not session.rows:
            return self.r.nothing()
        shown = views.visible_positions(session, ctx.view) or list(range(len(session.rows)))
        pos = position(session, ctx.sel)
        if pos not in shown:
            k = 0
        else:
            k = min(max(shown.index(pos) + delta, 0), len(shown) - 1)
        return self.r.focus(session, ctx, session.rows[shown[k]].uid)

    def set_view(self, sid: str, sel, order: str, emotion: str, state: str,
                 request: gr.Request = None) -> dict:
        view = views.TableView(order=order if order in views.ORDERS else "time",
                               emotion=emotion if emotion in EMOTIONS else "",
                               state=state if state in views.STATES else "all")
        ctx = self.r.ctx(request, sid, sel, view)
        session = self.r.session(ctx)
        out = self.r.table(session, ctx, position(session, ctx.sel))
        out[self.p.tview] = view
        return out

    # ------------------------------------------------------------ the sessions panel

    def rename(self, sid: str, sel, tview, title: str, request: gr.Request = None) -> dict:
        ctx = self.r.ctx(request, sid, sel, tview)
        session = self.r.session(ctx)
        if session is None or not str(title or "").strip() or title == session.title:
            return self.r.nothing()
        try:
            session = self.wb.rename(sid, title, ctx.owner)
        except Exception as err:
            return self.r.failed("Renaming", err)
        return {self.p.status: views.status_markdown(session, "Renamed (saved)."),
                self.p.sessions: self.r.sessions_update(ctx.owner, sid)}

    def ask_delete(self, sid: str, sel, tview, request: gr.Request = None) -> dict:
        if not self.r.session(self.r.ctx(request, sid, sel, tview)):
            return self.r.nothing()
        return {self.p.confirm_box: gr.update(visible=True)}

    def cancel_delete(self) -> dict:
        return {self.p.confirm_box: gr.update(visible=False)}

    def delete_session(self, sid: str, sel, tview, request: gr.Request = None) -> dict:
        ctx = self.r.ctx(request, sid, sel, tview)
        try:
            gone = self.wb.delete(sid, ctx.owner)
        except Exception as err:
            return self.r.failed("Deleting the session", err)
        out = self.r.view(None, ctx, full=True, note=f"Deleted **{gone.title}**. “↶ Undo delete” brings it back.")
        out[self.p.player] = self.r.player(None)
        out[self.p.deleted] = gone.id
        out[self.p.restore_btn] = gr.update(visible=True)
        return out

    def restore_session(self, deleted: str, tview, request: gr.Request = None) -> dict:
        ctx = self.r.ctx(request, deleted, None, tview)
        try:
            session = self.wb.restore(deleted, ctx.owner)
        except Exception as err:
            return self.r.failed("Undoing the delete", err)
        out = self.r.view(session, ctx, first_uid(session), "Restored.", player="reload", full=True)
        out[self.p.deleted] = ""
        out[self.p.restore_btn] = gr.update(visible=False)
        return out


class _Missing(UserError):
    """Nothing to work on (no file chosen): said in the status line like any failure."""
