"""The page: input (upload, webcam, audio, example, MELD import, earlier sessions) → results (player
with subtitles, chart over time, selected utterance by modality) → corrections (row editor and
table) → export. Layout and event wiring only; the handlers are in handlers.py."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

import gradio as gr

from core.labels import EMOTIONS, SENTIMENTS

from . import api, charts, model_picker, views
from .handlers import Handlers, Page
from .service import ModelHolder, Workbench

TITLE = "Emotion Workbench"
THEME = gr.themes.Soft(primary_hue="indigo", font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "monospace"])
CSS = """
#banner {background: #eef2ff; border-radius: 8px; padding: 4px 12px;}
#banner p {margin: 4px 0;}
#status p {margin: 2px 0;}
#detail table {font-size: 13px;}
#detail blockquote {margin: 4px 0; font-style: italic;}
#editor-title {padding: 6px 12px;}
#editor-head {align-items: center;}
#transcript {font-size: 13px;}
#transcript .add-row-button, #transcript .cell-menu-button {display: none !important;}
"""
HELP = ("Click a row (or ◀ ▶) to select it: the player seeks there. Labels save at once; text, speaker "
        "and times save on Enter or when you leave the field; invalid values are reverted. Cells of the "
        "table can be edited too (double-click). Split cuts at the time given; Undo steps back one change.")


def browser_secret(wb: Workbench) -> str:
    """A key kept in the data folder, so the browser's remembered session survives a restart."""
    path = wb.root / ".browser_secret"
    if not path.is_file():
        path.write_text(secrets.token_hex(16))
    return path.read_text().strip()


def build_app(wb_or_holder: Workbench | ModelHolder) -> gr.Blocks:
    wb = wb_or_holder if isinstance(wb_or_holder, Workbench) else Workbench(wb_or_holder)
    with gr.Blocks(title=TITLE) as demo:
        sid = gr.State("")
        sel = gr.State(None)
        remembered = gr.BrowserState("", storage_key="emotion-workbench-session", secret=browser_secret(wb))
        gr.Markdown(f"# {TITLE}\nWhat is said, how it sounds and what the face shows — utterance by "
                    "utterance; correct it, export it as MELD, retrain on it.")
        banner = gr.Markdown(views.model_banner(wb.holder.summary()), elem_id="banner")
        picker = model_picker.build(wb)

        with gr.Accordion("1 · Input", open=True) as input_box:
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    with gr.Tabs():
                        with gr.Tab("Video (upload or webcam)"):
                            video_in = gr.Video(sources=["upload", "webcam"], label="Video", height=240,
                                                elem_id="video-in")
                            analyse_video = gr.Button("Analyse video", variant="primary", elem_id="analyse-video")
                        with gr.Tab("Audio file"):
                            audio_in = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio",
                                                elem_id="audio-in")
                            analyse_audio = gr.Button("Analyse audio", variant="primary")
                        with gr.Tab("Import MELD CSV"):
                            with gr.Row():
                                csv_in = gr.File(label="MELD CSV", file_types=[".csv"], height=120, elem_id="csv-in")
                                csv_media = gr.File(label="Its video or audio (optional)", height=120,
                                                    file_types=["video", "audio"])
                            import_btn = gr.Button("Import and annotate", variant="primary", elem_id="import-btn")
                with gr.Column(scale=2):
                    example_btn = gr.Button("▶ Analyse the example video", variant="secondary")
                    sessions = gr.Dropdown(label="Earlier sessions (every correction is autosaved)",
                                           choices=views.session_choices(wb.store.list()), value=None,
                                           interactive=True)
                    gr.Markdown("Analysis runs Whisper, then reads the face, the text and the audio of "
                                "each utterance; a progress bar shows the stage.")

        status = gr.Markdown(views.status_markdown(None), elem_id="status", min_height=72)
        with gr.Row(equal_height=False):
            player = gr.Video(label="Player (utterances as subtitles)", interactive=False, height=320,
                              scale=1, min_width=320, elem_id="player")
            with gr.Column(scale=1, min_width=320):
                detail = gr.Markdown(views.detail_markdown(None, None), elem_id="detail", min_height=120)
        chart = gr.Plot(charts.timeline(None), label="Emotion and sentiment over time", show_label=False,
                        elem_id="chart")

        with gr.Group():
            with gr.Row(equal_height=True, elem_id="editor-head"):
                ed_title = gr.Markdown("**No utterance selected**", elem_id="editor-title", scale=4)
                prev_btn = gr.Button("◀ Prev", size="sm", scale=0, min_width=90)
                next_btn = gr.Button("Next ▶", size="sm", scale=0, min_width=90)
                undo_btn = gr.Button("↶ Undo", size="sm", scale=0, min_width=90, interactive=False,
                                     elem_id="undo-btn")
            with gr.Row(equal_height=True):
                ed_emotion = gr.Dropdown(list(EMOTIONS), label="Emotion", interactive=False, min_width=130,
                                         elem_id="ed-emotion")
                ed_sentiment = gr.Dropdown(list(SENTIMENTS), label="Sentiment", interactive=False, min_width=130,
                                           elem_id="ed-sentiment")
                ed_speaker = gr.Textbox(label="Speaker", interactive=False, min_width=120, elem_id="ed-speaker")
                ed_start = gr.Textbox(label="Start (s)", interactive=False, min_width=90, elem_id="ed-start")
                ed_end = gr.Textbox(label="End (s)", interactive=False, min_width=90, elem_id="ed-end")
            with gr.Row(equal_height=True):
                ed_text = gr.Textbox(label="Text", interactive=False, scale=5, lines=1, max_lines=3, elem_id="ed-text")
                split_at = gr.Textbox(label="Split at (s)", interactive=False, scale=1, min_width=90, elem_id="split-at")
                split_btn = gr.Button("✂ Split", scale=0, min_width=80, elem_id="split-btn")
                merge_btn = gr.Button("⤓ Merge with next", scale=0, min_width=140, elem_id="merge-btn")
                add_btn = gr.Button("+ Add after", scale=0, min_width=110, elem_id="add-btn")
                delete_btn = gr.Button("✕ Delete", scale=0, min_width=90, elem_id="delete-btn",
                                       variant="stop")
        gr.Markdown(HELP)
        table = gr.Dataframe(value=views.table_frame(None), headers=views.TABLE_COLUMNS,
                             datatype=views.TABLE_TYPES, interactive=True, wrap=True, max_height=460,
                             static_columns=views.STATIC_COLUMNS, label="Transcript", elem_id="transcript",
                             column_widths=["52px", "68px", "68px", "90px", "40%", "92px", "96px", "112px", "130px"])
        with gr.Accordion("Import problems", open=False, visible=False) as problems_box:
            problems = gr.Dataframe(headers=["row", "column", "problem"], interactive=False, wrap=True,
                                    max_height=300, label="Rows with problems (all rows were kept)")
        with gr.Accordion("2 · Export (MELD format)", open=True):
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=240):
                    dialogue = gr.Number(label="Dialogue_ID of this video", precision=0, minimum=0)
                    csv_btn = gr.Button("Export MELD CSV", variant="primary", elem_id="export-csv")
                    zip_btn = gr.Button("Export CSV + clips (zip)", elem_id="export-zip")
                export_file = gr.File(label="Download", interactive=False, scale=2, height=150,
                                      elem_id="export-file")
            gr.Markdown("CSV: `Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, "
                        "Season, Episode, StartTime, EndTime`; times `h:mm:ss,mmm`; Utterance_ID from 0; cells "
                        "starting with `= + - @` are escaped against spreadsheet formulas. The zip adds "
                        "`clips/dia{D}_utt{U}.mp4` cut at the corrected times, for `train/`.")

        page = Page(sid=sid, sel=sel, remembered=remembered, banner=banner, status=status, player=player,
                    chart=chart, detail=detail, table=table, ed_title=ed_title, ed_start=ed_start,
                    ed_end=ed_end, ed_speaker=ed_speaker, ed_emotion=ed_emotion, ed_sentiment=ed_sentiment,
                    ed_text=ed_text, split_at=split_at, undo_btn=undo_btn, dialogue=dialogue,
                    export_file=export_file, problems=problems, problems_box=problems_box,
                    sessions=sessions, input_box=input_box)
        api.mount(wb)      # first, so that the API endpoints get the plain names
        controls = dict(demo=demo, video_in=video_in, audio_in=audio_in, csv_in=csv_in, csv_media=csv_media,
                        analyse_video=analyse_video, analyse_audio=analyse_audio, example_btn=example_btn,
                        import_btn=import_btn, prev_btn=prev_btn, next_btn=next_btn, split_btn=split_btn,
                        merge_btn=merge_btn, add_btn=add_btn, delete_btn=delete_btn, csv_btn=csv_btn,
                        zip_btn=zip_btn)
        handlers = Handlers(wb, page)
        _wire(handlers, page, controls)
        model_picker.wire(model_picker.PickerHandlers(wb, picker, banner, sid, handlers.banner_for), demo)
    demo.workbench = wb
    return demo


def _wire(h: Handlers, p: Page, c: dict) -> None:
    out = p.all()
    private = dict(api_visibility="private")
    serial = dict(concurrency_id="session", concurrency_limit=1, **private)
    quiet = dict(show_progress="hidden")
    serial = dict(serial, **quiet)
    heavy = dict(concurrency_id="analysis", concurrency_limit=1, show_progress_on=[p.status], **private)
    c["analyse_video"].click(h.analyse, [c["video_in"]], out, **heavy)
    c["analyse_audio"].click(h.analyse, [c["audio_in"]], out, **heavy)
    c["example_btn"].click(h.example, None, out, **heavy)
    c["import_btn"].click(h.import_csv, [c["csv_in"], c["csv_media"]], out, **heavy)
    p.sessions.input(h.open, [p.sessions], out, **serial)
    p.sessions.focus(lambda s: h.sessions_update(s or None), [p.sid], [p.sessions], **private)
    c["demo"].load(h.load, [p.remembered], out, **private, **quiet)
    p.table.select(h.select, [p.sid], out, **serial)
    p.table.input(h.table_edit, [p.sid, p.sel, p.table], out, **serial)
    fields = [("emotion", p.ed_emotion, ("input",)), ("sentiment", p.ed_sentiment, ("input",)),
              ("speaker", p.ed_speaker, ("submit", "blur")), ("text", p.ed_text, ("submit", "blur")),
              ("start", p.ed_start, ("submit", "blur")), ("end", p.ed_end, ("submit", "blur"))]
    for name, component, events in fields:
        gr.on([getattr(component, e) for e in events], h.field(name), [p.sid, p.sel, component], out, **serial)
    c["prev_btn"].click(lambda s, u: h.step(s, u, -1), [p.sid, p.sel], out, **serial)
    c["next_btn"].click(lambda s, u: h.step(s, u, +1), [p.sid, p.sel], out, **serial)
    c["split_btn"].click(h.split, [p.sid, p.sel, p.split_at], out, **serial)
    c["merge_btn"].click(h.merge, [p.sid, p.sel], out, **serial)
    c["add_btn"].click(h.add, [p.sid, p.sel], out, **serial)
    c["delete_btn"].click(h.delete, [p.sid, p.sel], out, **serial)
    p.undo_btn.click(h.undo, [p.sid, p.sel], out, **serial)
    gr.on([p.dialogue.submit, p.dialogue.blur], h.dialogue_id, [p.sid, p.sel, p.dialogue], out, **serial)
    c["csv_btn"].click(h.export_csv, [p.sid], [p.export_file], concurrency_id="session", **private)
    c["zip_btn"].click(h.export_zip, [p.sid], [p.export_file], concurrency_id="export",
                       concurrency_limit=1, **private)


def launch_kwargs(wb: Workbench, auth: str | None = None) -> dict:
    """What launch() needs: the theme and css (Gradio 6 takes them there), the data folder, the upload
    limit (Gradio refuses a bigger file before storing it) and, when `auth` is given, a login."""
    kwargs = dict(theme=THEME, css=CSS, allowed_paths=[str(wb.root)],
                  max_file_size=wb.limits.gradio_max_file_size())
    if auth:
        kwargs.update(auth=check_login(parse_auth(auth)), auth_message="Emotion Workbench: please log in.")
    return kwargs


def parse_auth(spec: str) -> dict[str, str]:
    """Logins from `user:pass`, `user1:pass1,user2:pass2`, or `@FILE` (one `user:pass` a line).
    ValueError (one line, never echoing a password) if malformed."""
    spec = spec.strip()
    if spec.startswith("@"):
        try:
            lines = Path(spec[1:]).expanduser().read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise ValueError(f"cannot read the login file {spec[1:]}: {err.strerror}") from None
        entries = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    else:
        entries = [e.strip() for e in spec.split(",") if e.strip()]
    logins: dict[str, str] = {}
    for n, entry in enumerate(entries, 1):
        user, sep, password = entry.partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError(f"login {n} is not of the form user:password")
        logins[user.strip()] = password
    if not logins:
        raise ValueError("no login given (expected user:password)")
    return logins


def check_login(logins: dict[str, str]):
    """Gradio's auth callable: constant-time comparison of the password."""
    def check(user: str, password: str) -> bool:
        expected = logins.get(str(user))
        return expected is not None and hmac.compare_digest(expected.encode(), str(password).encode())
    return check
