"""What the page shows for a session: each function returns a dict {component: update} over the
Page's components. No event logic here (handlers.py opens and selects, corrections.py edits)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.types import UserError, error_line

from . import charts, owners, views
from .common import first_uid, num, position
from .player import Player
from .service import Workbench
from .session import Session

LOG = logging.getLogger("workbench")


@dataclass
class Page:
    """The components handlers update (built by ui.build_app)."""

    sid: Any                 # gr.State: the open session's id
    sel: Any                 # gr.State: the selected utterance's uid
    tview: Any               # gr.State: views.TableView
    deleted: Any             # gr.State: the id of the session deleted last (for "Undo delete")
    remembered: Any          # gr.BrowserState: the session to reopen on the next visit
    banner: Any
    status: Any
    player: Any
    chart: Any
    mix: Any
    detail: Any
    table: Any
    table_info: Any
    table_place: Any         # hidden: "INDEX:ROWS", where the selected row is in the table's page (ui.HEAD scrolls to it)
    ed_uid: Any              # hidden: the uid the editor's fields belong to (sent with each field's save)
    ed_title: Any
    ed_start: Any
    ed_end: Any
    ed_speaker: Any
    ed_emotion: Any
    ed_sentiment: Any
    ed_text: Any
    split_at: Any
    undo_btn: Any
    bulk_speaker: Any
    dialogue: Any
    export_file: Any
    problems: Any
    problems_box: Any
    sessions: Any
    session_name: Any
    confirm_box: Any
    restore_btn: Any
    input_box: Any

    def all(self) -> list:
        return [getattr(self, name) for name in self.__dataclass_fields__]


@dataclass
class Ctx:
    """Who is asking and what their page shows: passed to every handler."""

    sid: str
    sel: int | None
    owner: str | None
    view: views.TableView


class Renderer:
    def __init__(self, wb: Workbench, page: Page):
        self.wb, self.p = wb, page

    def ctx(self, request, sid: str | None, sel: Any, tview: Any) -> Ctx:
        view = tview if isinstance(tview, views.TableView) else views.TableView()
        try:
            uid = None if sel in (None, "") else int(sel)
        except (TypeError, ValueError):
            uid = None
        return Ctx(sid or "", uid, self.wb.owner(request), view)

    def session(self, ctx: Ctx) -> Session | None:
        """The open session, or None (not open, gone, or not this owner's)."""
        if not ctx.sid:
            return None
        try:
            return self.wb.session(ctx.sid, ctx.owner)
        except UserError:
            return None

    # ------------------------------------------------------------ messages

    def nothing(self) -> dict:
        """No change anywhere (an empty dict would be taken for one output value)."""
        return {self.p.status: gr.skip()}

    def failed(self, what: str, err: BaseException) -> dict:
        """A failure, kept readable in the status line until the next action (and a toast)."""
        if isinstance(err, UserError):
            line = error_line(err, 300)
        elif isinstance(err, OSError):
            line = f"a file could not be read or written ({err.strerror or type(err).__name__})"
        else:
            LOG.exception("%s failed", what)
            line = f"an unexpected {type(err).__name__} (written to the server's log)"
        gr.Warning(f"{what} failed: {line}")
        return {self.p.status: f"✖ **{what} failed:** {line}"}

    # ------------------------------------------------------------ pieces

    def editor(self, session: Session | None, uid: int | None) -> dict:
        p = self.p
        pos = position(session, uid)
        if pos is None:
            def blank():      # one dict per field: Gradio pops "value" from an update as it applies it
                return gr.update(value="", interactive=False)
            return {p.ed_title: "**No utterance selected**", p.ed_uid: "", p.ed_start: blank(), p.ed_end: blank(),
                    p.ed_speaker: blank(), p.ed_text: blank(), p.split_at: blank(),
                    p.ed_emotion: gr.update(value=None, interactive=False),
                    p.ed_sentiment: gr.update(value=None, interactive=False)}
        r = session.rows[pos]
        mid = "" if r.start is None or r.end is None else f"{(r.start + r.end) / 2:.2f}"
        fix = views.edit_flags(r)
        title = f"**Utterance {pos}** of {len(session.rows)}" + (f" · ✎ {', '.join(fix)}" if fix else "")
        live = dict(interactive=True)
        return {p.ed_title: title, p.ed_uid: str(r.uid),
                p.ed_start: gr.update(value=num(r.start), **live), p.ed_end: gr.update(value=num(r.end), **live),
                p.ed_speaker: gr.update(value=r.speaker, choices=views.speakers(session), **live),
                p.ed_text: gr.update(value=r.text, **live),
                p.ed_emotion: gr.update(value=r.emotion or None, **live),
                p.ed_sentiment: gr.update(value=r.sentiment or None, **live),
                p.split_at: gr.update(value=mid, **live)}

    def player(self, session: Session | None, reload: bool = True):
        if session is None:
            return Player(value=None)
        subs = self.wb.subtitles(session)
        if not reload:
            return Player(subtitles=str(subs) if subs else None)
        media = self.wb.player_file(session)
        return Player(value=str(media) if media else None, subtitles=str(subs) if subs else None,
                      playback_position=0.0)

    def table(self, session: Session | None, ctx: Ctx, pos: int | None) -> dict:
        frame, info = views.table_page(session, ctx.view, pos)
        marked = [i for i, cell in enumerate(frame["id"]) if str(cell).startswith(views.SELECTED_MARK)]
        place = f"{marked[0]}:{len(frame)}" if marked and session else ""
        return {self.p.table: frame, self.p.table_info: info,
                self.p.table_place: f"{place}:{session.id}:{pos}" if place else ""}

    def view(self, session: Session | None, ctx: Ctx, uid: int | None = None, note: str = "",
             player: str = "none", full: bool = False) -> dict:
        """Everything that depends on the session. player: "none", "subtitles" or "reload"."""
        p = self.p
        pos = position(session, uid)
        out = {p.sid: session.id if session else "", p.sel: uid if pos is not None else None,
               p.status: views.status_markdown(session, note), p.mix: views.mix_markdown(session),
               p.chart: charts.timeline(session, pos), p.detail: views.detail_markdown(session, pos),
               p.undo_btn: gr.update(interactive=bool(session and self.wb.can_undo(session))),
               p.bulk_speaker: gr.update(choices=views.speakers(session))}
        out.update(self.table(session, ctx, pos))
        out.update(self.editor(session, uid))
        if player != "none":
            out[p.player] = self.player(session, reload=player == "reload")
        if full:
            problems = views.problems_frame(session)
            out.update({p.remembered: session.id if session else "",
                        p.dialogue: session.dialogue_id if session else None,
                        p.banner: self.banner(session),
                        p.problems: problems,
                        p.problems_box: gr.update(visible=len(problems) > 0, open=len(problems) > 0),
                        p.sessions: self.sessions_update(ctx.owner, session.id if session else None),
                        p.session_name: gr.update(value=session.title if session else "",
                                                  interactive=session is not None),
                        p.confirm_box: gr.update(visible=False),
                        p.export_file: None})
            if session is not None:
                out[p.input_box] = gr.update(open=False)
        return out

    def focus(self, session: Session, ctx: Ctx, uid: int, seek: bool = True) -> dict:
        """Select `uid`: editor, chart shading, table mark, detail; the player seeks to it."""
        p, pos = self.p, position(session, uid)
        out = {p.sel: uid, p.chart: charts.timeline(session, pos), p.detail: views.detail_markdown(session, pos)}
        out.update(self.table(session, ctx, pos))
        out.update(self.editor(session, uid))
        start = session.rows[pos].start if pos is not None else None
        if seek and start is not None and self.wb.playable(session):
            out[p.player] = Player(playback_position=float(start))
        return out

    def banner(self, session: Session | None) -> str:
        """The model that made this session's predictions (said when it is not the loaded one)."""
        current = self.wb.holder.summary()
        if session is None or not session.model:
            return views.model_banner(current)
        text = views.model_banner(session.model)
        if session.model.get("name") != current.get("name") or session.model.get("trained") != current.get("trained"):
            text += " *This session was analysed with an earlier model than the one loaded now.*"
        return text

    def banner_for(self, session_id: str | None) -> str:
        """The banner for the page's open session (its id comes from the page's server-side state)."""
        try:
            session = self.wb.session(session_id, owners.ANY) if session_id else None
        except UserError:
            session = None
        return self.banner(session)

    def sessions_update(self, owner: str | None, current: str | None = None):
        return gr.update(choices=views.session_choices(self.wb.sessions(owner)), value=current)


def first(session: Session | None) -> int | None:
    return first_uid(session) if session is not None else None
