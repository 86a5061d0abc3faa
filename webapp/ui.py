"""The page: input (upload, webcam, audio, example, MELD import, earlier sessions) → results (player
with subtitles, chart over time, selected utterance by modality) → corrections (row editor and
table) → export. Layout and event wiring only; the handlers are in handlers.py."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from core.labels import EMOTIONS, SENTIMENTS

from . import api, charts, guards, model_picker, owners, views
from .corrections import Corrections
from .handlers import Handlers
from .player import Player
from .render import Page, Renderer
from .service import ModelHolder, Workbench
from .upload_guard import DELETE_CACHE, UploadGuard
from .upload_guard import settings as upload_settings

HERE = Path(__file__).resolve().parent
TITLE = "Emotion Workbench"
THEME = gr.themes.Soft(primary_hue="indigo", font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "monospace"])
CSS = (HERE / "page.css").read_text(encoding="utf-8")
HELP = ("Click a row, a bar of the chart, or use ◀ ▶: the player seeks there. Labels save at once; text, "
        "speaker and times save on Enter or when you leave the field, for the row they were typed for; "
        "invalid values are reverted. **Keys** (not while typing in a field): ↑/↓ or k/j previous/next, "
        "1–7 set the emotion (1 anger, 2 disgust, 3 fear, 4 joy, 5 neutral, 6 sadness, 7 surprise), "
        "p play the utterance, Ctrl+Z undo.")

HEAD = ("<script>\n" + (HERE / "page.js").read_text(encoding="utf-8") + "</script>\n").replace(
    "__OWNER_COOKIE__", owners.COOKIE)
PLAY_JS = (HERE / "play.js").read_text(encoding="utf-8")


def build_app(wb_or_holder: Workbench | ModelHolder) -> gr.Blocks:
    wb = wb_or_holder if isinstance(wb_or_holder, Workbench) else Workbench(wb_or_holder)
    secret = wb.secret             # kept in the data folder: a browser's state survives a restart
    with gr.Blocks(title=TITLE, delete_cache=DELETE_CACHE) as demo:
        sid, sel, tview, deleted = gr.State(""), gr.State(None), gr.State(views.TableView()), gr.State("")
        remembered = gr.BrowserState("", storage_key="emotion-workbench-session", secret=secret)
        gr.Markdown(f"# {TITLE}\nWhat is said, how it sounds and what the face shows — utterance by "
                    "utterance; correct it, export it as MELD, retrain on it.")
        banner = gr.Markdown(views.model_banner(wb.holder.summary()), elem_id="banner")
        picker = model_picker.build(wb)

        with gr.Accordion("1 · Input", open=True) as input_box:
            with gr.Row(equal_height=False):
                with gr.Column(scale=3, min_width=300):
                    with gr.Tabs():
                        with gr.Tab("Video (upload or webcam)"):
                            video_in = gr.Video(sources=["upload", "webcam"], label="Video", height=300,
                                                elem_id="video-in")
                            analyse_video = gr.Button("Analyse video", variant="primary", elem_id="analyse-video")
                        with gr.Tab("Audio file"):
                            audio_in = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio",
                                                elem_id="audio-in")
                            analyse_audio = gr.Button("Analyse audio", variant="primary", elem_id="analyse-audio")
                        with gr.Tab("Import MELD CSV"):
                            with gr.Row():
                                csv_in = gr.File(label="MELD CSV", file_types=[".csv"], height=120, elem_id="csv-in")
                                csv_media = gr.File(label="Its video or audio (optional)", height=120,
                                                    file_types=["video", "audio"], elem_id="csv-media")
                            run_model = gr.Checkbox(True, label="Run the model on the imported rows (needs the "
                                                    "video or audio: fills confidences and each modality's view; "
                                                    "the imported labels stay the annotation)", elem_id="run-model")
                            import_btn = gr.Button("Import and annotate", variant="primary", elem_id="import-btn")
                with gr.Column(scale=2, min_width=280):
                    example_btn = gr.Button("▶ Analyse the example video", variant="secondary", elem_id="example-btn")
                    neighbours = gr.Checkbox(True, label="Read each line with its neighbours (one conversation); "
                                             "untick for a video of unrelated lines", elem_id="neighbours")
                    any_language = gr.Checkbox(False, label="Write the language spoken, not English (the words "
                                               "model reads English only)", elem_id="any-language")
                    sessions = gr.Dropdown(label="Your earlier sessions (every correction is autosaved)",
                                           choices=[], value=None, interactive=True, elem_id="sessions")
                    with gr.Row(equal_height=True):
                        session_name = gr.Textbox(label="Name of this session", interactive=False, scale=3,
                                                  elem_id="session-name")
                        rename_btn = gr.Button("Rename", size="sm", scale=0, min_width=80, elem_id="rename-btn")
                    with gr.Row():
                        delete_session_btn = gr.Button("✕ Delete this session", size="sm", variant="stop",
                                                       elem_id="delete-session")
                        restore_btn = gr.Button("↶ Undo delete", size="sm", visible=False, elem_id="restore-session")
                    with gr.Row(visible=False, elem_id="confirm-delete") as confirm_box:
                        gr.Markdown("Delete this session and its corrections?")
                        confirm_btn = gr.Button("Yes, delete it", size="sm", variant="stop", elem_id="confirm-delete-btn")
                        cancel_btn = gr.Button("Cancel", size="sm", elem_id="cancel-delete-btn")

        status = gr.Markdown(views.status_markdown(None), elem_id="status", min_height=72)
        with gr.Row(equal_height=False):
            player = Player(label="Player (utterances as subtitles)", interactive=False, height=320,
                            scale=1, min_width=300, elem_id="player")
            with gr.Column(scale=1, min_width=300):
                detail = gr.Markdown(views.detail_markdown(None, None), elem_id="detail", min_height=120)
        gr.Markdown("**Emotion probabilities over time · sentiment** (click a bar to select its utterance)",
                    elem_id="chart-title")
        chart = gr.Plot(charts.timeline(None), show_label=False, elem_id="chart")
        mix = gr.Markdown("", elem_id="mix")

        with gr.Group():
            with gr.Row(equal_height=True, elem_id="editor-head"):
                ed_title = gr.Markdown("**No utterance selected**", elem_id="editor-title")
                prev_btn = gr.Button("◀ Prev", size="sm", scale=0, min_width=76, elem_id="prev-btn")
                next_btn = gr.Button("Next ▶", size="sm", scale=0, min_width=76, elem_id="next-btn")
                play_btn = gr.Button("▶ Play this utterance", size="sm", scale=0, min_width=150, elem_id="play-utt")
                undo_btn = gr.Button("↶ Undo", size="sm", scale=0, min_width=76, interactive=False,
                                     elem_id="undo-btn")
            with gr.Row(equal_height=True):
                ed_emotion = gr.Dropdown(list(EMOTIONS), label="Emotion", interactive=False, min_width=130,
                                         elem_id="ed-emotion")
                ed_sentiment = gr.Dropdown(list(SENTIMENTS), label="Sentiment", interactive=False, min_width=130,
                                           elem_id="ed-sentiment")
                ed_speaker = gr.Dropdown([], label="Speaker", allow_custom_value=True, interactive=False,
                                         min_width=130, elem_id="ed-speaker")
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
        gr.Markdown(HELP, elem_id="help")
        with gr.Accordion("Several rows at once", open=False, elem_id="bulk-box"):
            with gr.Row(equal_height=True):
                bulk_rows = gr.Textbox(label="Rows (ids like 0-4, 7; shown; all; or a speaker)", scale=2,
                                       min_width=180, elem_id="bulk-rows")
                bulk_emotion = gr.Dropdown([""] + list(EMOTIONS), value="", label="Set emotion", min_width=120,
                                           elem_id="bulk-emotion")
                bulk_sentiment = gr.Dropdown([""] + list(SENTIMENTS), value="", label="Set sentiment",
                                             min_width=120, elem_id="bulk-sentiment")
                bulk_speaker = gr.Dropdown([], value=None, label="Set speaker", allow_custom_value=True,
                                           min_width=120, elem_id="bulk-speaker")
                bulk_btn = gr.Button("Apply to these rows", variant="primary", scale=0, min_width=150,
                                     elem_id="bulk-btn")
        with gr.Row(equal_height=True, elem_id="table-view"):
            order = gr.Dropdown([(v, k) for k, v in views.ORDERS.items()], value="time", label="Order",
                                min_width=160, elem_id="table-order")
            only_emotion = gr.Dropdown([("any emotion", "")] + [(e, e) for e in EMOTIONS], value="",
                                       label="Emotion", min_width=120, elem_id="table-emotion")
            only_state = gr.Dropdown([(v, k) for k, v in views.STATES.items()], value="all", label="Rows",
                                     min_width=140, elem_id="table-state")
            goto = gr.Number(None, label="Go to id", precision=0, minimum=0, min_width=90, elem_id="table-goto")
            table_info = gr.Markdown("", elem_id="table-info")
        table = gr.Dataframe(value=views.table_frame(None), headers=views.TABLE_COLUMNS,
                             datatype=views.TABLE_TYPES, interactive=True, wrap=True, max_height=460,
                             static_columns=views.STATIC_COLUMNS, label="Transcript", elem_id="transcript",
                             column_widths=views.COLUMN_WIDTHS)
        with gr.Accordion("Import problems", open=False, visible=False, elem_id="problems-box") as problems_box:
            problems = gr.Dataframe(headers=views.PROBLEM_COLUMNS, interactive=False, wrap=True,
                                    max_height=300, label="Problems found in the CSV (every row was kept; "
                                    "the table marks their rows ⚠)", elem_id="problems")
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
                        "that a spreadsheet would run as a formula are escaped. Rows without a label, a time "
                        "or words are refused, by id. The zip adds `clips/dia{D}_utt{U}.mp4` cut at the "
                        "corrected times, for `train/`.")
        with gr.Column(elem_id="wb-hidden"):
            ed_uid = gr.Textbox(elem_id="ed-uid")
            table_place = gr.Textbox(elem_id="wb-table-place")
            pick, pick_go = gr.Textbox(elem_id="wb-pick"), gr.Button(elem_id="wb-pick-go")
            keys, keys_go = gr.Textbox(elem_id="wb-key"), gr.Button(elem_id="wb-key-go")

        page = Page(sid=sid, sel=sel, tview=tview, deleted=deleted, remembered=remembered,
                    banner=banner, status=status, player=player, chart=chart, mix=mix, detail=detail,
                    table=table, table_info=table_info, table_place=table_place, ed_uid=ed_uid, ed_title=ed_title, ed_start=ed_start,
                    ed_end=ed_end, ed_speaker=ed_speaker, ed_emotion=ed_emotion, ed_sentiment=ed_sentiment,
                    ed_text=ed_text, split_at=split_at, undo_btn=undo_btn, bulk_speaker=bulk_speaker,
                    dialogue=dialogue, export_file=export_file, problems=problems, problems_box=problems_box,
                    sessions=sessions, session_name=session_name, confirm_box=confirm_box,
                    restore_btn=restore_btn, input_box=input_box)
        api.mount(wb)      # first, so that the API endpoints get the plain names
        controls = dict(demo=demo, video_in=video_in, audio_in=audio_in, csv_in=csv_in, csv_media=csv_media,
                        analyse_video=analyse_video, analyse_audio=analyse_audio, example_btn=example_btn, neighbours=neighbours, any_language=any_language,
                        import_btn=import_btn, run_model=run_model, prev_btn=prev_btn, next_btn=next_btn, play_btn=play_btn,
                        split_btn=split_btn, merge_btn=merge_btn, add_btn=add_btn, delete_btn=delete_btn,
                        csv_btn=csv_btn, zip_btn=zip_btn, pick=pick, pick_go=pick_go, goto=goto, keys=keys, keys_go=keys_go,
                        order=order,
                        only_emotion=only_emotion, only_state=only_state, bulk_rows=bulk_rows,
                        bulk_emotion=bulk_emotion, bulk_sentiment=bulk_sentiment, bulk_btn=bulk_btn,
                        rename_btn=rename_btn, delete_session_btn=delete_session_btn, confirm_btn=confirm_btn,
                        cancel_btn=cancel_btn)
        render = Renderer(wb, page)
        _wire(Handlers(render), Corrections(render), page, controls)
        model_picker.wire(model_picker.PickerHandlers(wb, picker, banner, sid, render.banner_for), demo)
    demo.workbench = wb
    return demo


def _wire(h: Handlers, c: Corrections, p: Page, ui: dict) -> None:
    out = p.all()
    private = dict(api_visibility="private")
    quiet = dict(show_progress="hidden")
    serial = dict(concurrency_id="session", concurrency_limit=1, **private, **quiet)
    heavy = dict(concurrency_id="analysis", concurrency_limit=1, show_progress_on=[p.status], **private)
    ctx = [p.sid, p.sel, p.tview]
    asked = [ui["neighbours"], ui["any_language"], p.tview]
    ui["analyse_video"].click(h.analyse, [ui["video_in"], *asked], out, **heavy)
    ui["analyse_audio"].click(h.analyse, [ui["audio_in"], *asked], out, **heavy)
    ui["example_btn"].click(h.example, asked, out, **heavy)
    ui["import_btn"].click(h.import_csv, [ui["csv_in"], ui["csv_media"], ui["run_model"], p.tview], out, **heavy)
    p.sessions.input(h.open, [p.sessions, p.tview], out, **serial)
    ui["demo"].load(h.load, [p.remembered], out, **private, **quiet)
    p.table.select(h.select, ctx, out, **serial)
    p.table.input(c.table_edit, ctx + [p.table], out, **serial)
    ui["goto"].submit(h.goto, ctx + [ui["goto"]], out, **serial)
    ui["pick_go"].click(h.pick, ctx + [ui["pick"]], out, **serial)      # the page's hooks (HEAD) click these
    ui["keys_go"].click(c.key, ctx + [ui["keys"]], out, **serial)
    fields = [("emotion", p.ed_emotion, ("input",)), ("sentiment", p.ed_sentiment, ("input",)),
              ("speaker", p.ed_speaker, ("input", "blur")), ("text", p.ed_text, ("submit", "blur")),
              ("start", p.ed_start, ("submit", "blur")), ("end", p.ed_end, ("submit", "blur"))]
    for name, component, events in fields:     # saved for the row in ed_uid, as the browser had it
        gr.on([getattr(component, e) for e in events], c.field(name),
              [p.sid, p.ed_uid, p.tview, component], out, **serial)
    ui["prev_btn"].click(h.previous, ctx, out, **serial)
    ui["next_btn"].click(h.next, ctx, out, **serial)
    ui["play_btn"].click(None, None, None, js=PLAY_JS)
    ui["split_btn"].click(c.split, ctx + [p.split_at], out, **serial)
    ui["merge_btn"].click(c.merge, ctx, out, **serial)
    ui["add_btn"].click(c.add, ctx, out, **serial)
    ui["delete_btn"].click(c.delete, ctx, out, **serial)
    p.undo_btn.click(c.undo, ctx, out, **serial)
    ui["bulk_btn"].click(c.bulk, ctx + [ui["bulk_rows"], ui["bulk_emotion"], ui["bulk_sentiment"], p.bulk_speaker],
                         out, **serial)
    view_inputs = [p.sid, p.sel, ui["order"], ui["only_emotion"], ui["only_state"]]
    for control in (ui["order"], ui["only_emotion"], ui["only_state"]):
        control.input(h.set_view, view_inputs, [p.table, p.table_info, p.table_place, p.tview], **serial)
    gr.on([p.dialogue.submit, p.dialogue.blur], c.dialogue_id, ctx + [p.dialogue], out, **serial)
    gr.on([p.session_name.submit, ui["rename_btn"].click], h.rename, ctx + [p.session_name], out, **serial)
    ui["delete_session_btn"].click(h.ask_delete, ctx, out, **serial)
    ui["cancel_btn"].click(h.cancel_delete, None, out, **serial)
    ui["confirm_btn"].click(h.delete_session, ctx, out, **serial)
    p.restore_btn.click(h.restore_session, [p.deleted, p.tview], out, **serial)
    ui["csv_btn"].click(c.export_csv, [p.sid], [p.export_file, p.status], concurrency_id="session",
                        **private)
    ui["zip_btn"].click(c.export_zip, [p.sid], [p.export_file, p.status], concurrency_id="export",
                        concurrency_limit=1, **private)


def launch_kwargs(wb: Workbench, auth: str | None = None) -> dict:
    """What launch() needs: the theme, css and page hooks (Gradio 6 takes them there), the one folder
    the browser may fetch from (each session's served files, not the data folder: service.served),
    the upload limit (Gradio refuses a bigger file before storing it), a cap on every other request
    body (guards.BodyLimit), an hourly upload allowance per address and a free-disk reserve
    (upload_guard.UploadGuard) and, when `auth` is given, a login with brakes on failures per name
    (guards.LoginBrake) and per address (guards.AddressBrake)."""
    kwargs = dict(theme=THEME, css=CSS, head=HEAD, allowed_paths=[str(wb.served_root)],
                  max_file_size=wb.limits.gradio_max_file_size(),
                  app_kwargs={"middleware": [Middleware(guards.BodyLimit),
                                             Middleware(UploadGuard, **upload_settings(wb.limits.max_bytes))]})
    if auth:
        kwargs.update(auth=guards.LoginBrake(parse_auth(auth)), auth_message="Emotion Workbench: please log in.")
        kwargs["app_kwargs"]["middleware"].append(Middleware(guards.AddressBrake))
    return kwargs


def parse_auth(spec: str) -> dict[str, str]:
    """Logins from `user:pass`, `user1:pass1,user2:pass2`, or `@FILE` (one `user:pass` a line).
    ValueError (one line, never echoing a password) if malformed."""
    spec = spec.strip()
    if spec.startswith("@"):
        try:
            lines = Path(spec[1:]).expanduser().read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise ValueError(f"--auth: cannot read the login file {spec[1:]}: {err.strerror}") from None
        entries = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    else:
        entries = [e.strip() for e in spec.split(",") if e.strip()]
    logins: dict[str, str] = {}
    for n, entry in enumerate(entries, 1):
        user, sep, password = entry.partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError(f"--auth: login {n} is not of the form user:password")
        logins[user.strip()] = password
    if not logins:
        raise ValueError("--auth: no login given (expected user:password)")
    return logins
