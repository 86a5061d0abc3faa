"""Event handlers of the page. Each returns a dict {component: update} over the Page's components.

This half renders, opens (analyse, example, import, reopen, restore on reload) and selects; the
corrections and exports are in corrections.py. A file that cannot be used is a one-line gr.Error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from . import charts, views
from .common import USER_ERRORS, fail, first_uid, num, position
from .corrections import Corrections
from .ratelimit import client_key
from .service import Workbench
from .session import Session

EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "examples" / "example.mp4"


@dataclass
class Page:
    """The components handlers update (built by ui.build_app)."""

    sid: Any
    sel: Any
    remembered: Any
    banner: Any
    status: Any
    player: Any
    chart: Any
    detail: Any
    table: Any
    ed_title: Any
    ed_start: Any
    ed_end: Any
    ed_speaker: Any
    ed_emotion: Any
    ed_sentiment: Any
    ed_text: Any
    split_at: Any
    undo_btn: Any
    dialogue: Any
    export_file: Any
    problems: Any
    problems_box: Any
    sessions: Any
    input_box: Any

    def all(self) -> list:
        return [getattr(self, name) for name in self.__dataclass_fields__]


class Handlers(Corrections):
    def __init__(self, wb: Workbench, page: Page):
        self.wb, self.p = wb, page
        self._last_warning: dict[str, tuple[str, float]] = {}

    # ------------------------------------------------------------ rendering

    def nothing(self) -> dict:
        """No change anywhere (an empty dict would be taken for one output value)."""
        return {self.p.status: gr.skip()}

    def editor(self, session: Session | None, uid: int | None) -> dict:
        p = self.p
        pos = position(session, uid)
        if pos is None:
            blank = gr.update(value="", interactive=False)
            return {p.ed_title: "**No utterance selected**", p.ed_start: blank, p.ed_end: blank,
                    p.ed_speaker: blank, p.ed_text: blank, p.split_at: blank,
                    p.ed_emotion: gr.update(value=None, interactive=False),
                    p.ed_sentiment: gr.update(value=None, interactive=False)}
        r = session.rows[pos]
        mid = "" if r.start is None or r.end is None else f"{(r.start + r.end) / 2:.2f}"
        fix = views.edit_flags(r)
        title = f"**Utterance {pos}** of {len(session.rows)}" + (f" · ✎ {', '.join(fix)}" if fix else "")
        live = dict(interactive=True)
        return {p.ed_title: title, p.ed_start: gr.update(value=num(r.start), **live),
                p.ed_end: gr.update(value=num(r.end), **live),
                p.ed_speaker: gr.update(value=r.speaker, **live), p.ed_text: gr.update(value=r.text, **live),
                p.ed_emotion: gr.update(value=r.emotion or None, **live),
                p.ed_sentiment: gr.update(value=r.sentiment or None, **live),
                p.split_at: gr.update(value=mid, **live)}

    def player(self, session: Session | None, seek: float | None = None, reload: bool = True):
        if session is None:
            return gr.Video(value=None)
        subs = self.wb.subtitles(session)
        if not reload:
            return gr.Video(subtitles=str(subs) if subs else None)
        media = self.wb.playable(session)
        return gr.Video(value=str(media) if media else None, subtitles=str(subs) if subs else None,
                        playback_position=seek or 0.0)

    def view(self, session: Session | None, uid: int | None = None, note: str = "",
             player: str = "none", full: bool = False) -> dict:
        """Everything that depends on the session. player: "none", "subtitles" or "reload"."""
        p = self.p
        pos = position(session, uid)
        out = {p.sid: session.id if session else "", p.sel: uid if pos is not None else None,
               p.status: views.status_markdown(session, note),
               p.chart: charts.timeline(session, pos), p.table: views.table_frame(session),
               p.detail: views.detail_markdown(session, pos),
               p.undo_btn: gr.update(interactive=bool(session and self.wb.store.can_undo(session.id, session.version)))}
        out.update(self.editor(session, uid))
        if player != "none":
            out[p.player] = self.player(session, reload=player == "reload")
        if full:
            problems = session.problems if session else []
            out.update({p.remembered: session.id if session else "",
                        p.dialogue: session.dialogue_id if session else None,
                        p.banner: self.banner(session),
                        p.problems: views.problems_frame(problems),
                        p.problems_box: gr.update(visible=bool(problems), open=bool(problems)),
                        p.sessions: self.sessions_update(session.id if session else None),
                        p.export_file: None})
            if session is not None:
                out[p.input_box] = gr.update(open=False)
        return out

    def banner(self, session: Session | None) -> str:
        """The model that made this session's predictions (said when it is not the loaded one)."""
        current = self.wb.holder.summary()
        if session is None or not session.model:
            return views.model_banner(current)
        text = views.model_banner(session.model)
        if session.model.get("name") != current.get("name") or session.model.get("trained") != current.get("trained"):
            text += (f"  \n*This session was analysed with that model; the model loaded now is "
                     f"**{current.get('name')}**.*")
        return text

    def banner_for(self, session_id: str | None) -> str:
        """The banner for the open session (by id), e.g. after the model in use changed."""
        return self.banner(self._session(session_id))

    def sessions_update(self, current: str | None = None):
        return gr.update(choices=views.session_choices(self.wb.store.list()), value=current)

    # ------------------------------------------------------------ opening

    def analyse(self, upload: str | None, request: gr.Request = None, progress=gr.Progress()) -> dict:
        if not upload:
            raise gr.Error("Upload or record a file first.", print_exception=False)
        try:
            session = self.wb.analyze(upload, lambda f, stage: progress(f, desc=stage),
                                      user=client_key(request))
        except USER_ERRORS as err:
            raise fail(err) from None
        note = "" if session.rows else "Nothing to annotate."
        return self.view(session, first_uid(session), note, player="reload", full=True)

    def example(self, request: gr.Request = None, progress=gr.Progress()) -> dict:
        if not EXAMPLE.is_file():
            raise gr.Error("The example video is missing: run scripts/make_example.py.", print_exception=False)
        return self.analyse(str(EXAMPLE), request, progress)

    def import_csv(self, csv_file: str | None, media_file: str | None, progress=gr.Progress()) -> dict:
        if not csv_file:
            raise gr.Error("Choose a MELD CSV file to import.", print_exception=False)
        progress(0.1, desc="reading the CSV")
        try:
            sessions, imported = self.wb.import_csv(csv_file, media_file)
        except USER_ERRORS as err:
            raise fail(err) from None
        if not sessions:
            raise gr.Error("The CSV holds no utterances.", print_exception=False)
        n_problems = len(imported.problems)
        note = (f"Imported {imported.row_count} row(s) in {len(sessions)} dialogue(s)"
                + (f" as {len(sessions)} sessions (this one is the first)" if len(sessions) > 1 else "")
                + (f"; **{n_problems} problem(s)** listed below, every row kept." if n_problems else "; no problems."))
        if n_problems:
            gr.Warning(f"{n_problems} problem(s) in the CSV: see the list under the table.")
        return self.view(sessions[0], first_uid(sessions[0]), note, player="reload", full=True)

    def open(self, session_id: str | None) -> dict:
        if not session_id:
            return self.nothing()
        try:
            session = self.wb.store.load(session_id)
        except USER_ERRORS as err:
            raise fail(err) from None
        return self.view(session, first_uid(session), "Reopened.", player="reload", full=True)

    def load(self, remembered: str | None) -> dict:
        session = None
        if remembered:
            try:
                session = self.wb.store.load(remembered)
            except USER_ERRORS:
                session = None
        if session is None:
            out = self.view(None, full=True)
            out[self.p.player] = gr.Video(value=None)
            return out
        return self.view(session, first_uid(session), "Restored from the autosave.", player="reload", full=True)

    # ------------------------------------------------------------ selecting

    def select(self, session_id: str, evt: gr.SelectData) -> dict:
        session = self._session(session_id)
        if session is None:
            return self.nothing()
        row_id = evt.row_value[0] if evt.row_value else evt.index[0]
        try:
            pos = int(row_id)
            uid = session.rows[pos].uid
        except (TypeError, ValueError, IndexError):
            return self.nothing()
        return self._focus(session, uid)

    def step(self, session_id: str, uid: int | None, delta: int) -> dict:
        session = self._session(session_id)
        if session is None or not session.rows:
            return self.nothing()
        pos = position(session, uid)
        pos = 0 if pos is None else min(max(pos + delta, 0), len(session.rows) - 1)
        return self._focus(session, session.rows[pos].uid)

    def _focus(self, session: Session, uid: int) -> dict:
        p, pos = self.p, position(session, uid)
        out = {p.sel: uid, p.chart: charts.timeline(session, pos), p.detail: views.detail_markdown(session, pos)}
        out.update(self.editor(session, uid))
        start = session.rows[pos].start
        if start is not None and self.wb.playable(session):
            out[p.player] = gr.Video(playback_position=float(start))
        return out

    def _session(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        try:
            return self.wb.store.load(session_id)
        except USER_ERRORS:
            return None

