"""Named API endpoints for gradio_client, on hidden components (the page's own events are private).

    analyze(media, neighbours=True)         -> session_id, utterances (neighbours False: each line's words read alone)
    edit(session_id, utterance_id, field, value) -> [the utterance as saved]  (a refused value raises an error)
    split(session_id, utterance_id, at)     -> utterances
    merge(session_id, utterance_id)         -> utterances
    undo(session_id)                        -> utterances
    session(session_id)                     -> utterances
    sessions()                              -> list of saved sessions
    export(session_id)                      -> MELD CSV file
    export_zip(session_id)                  -> zip of the CSV and the clips
    import_meld(csv, media)                 -> session ids, problems
    models()                                -> the checkpoints to pick from, with their cards
    use_model(key)                          -> the checkpoint now used for the next analyses

Every session belongs to whoever made it (webapp/owners.py): with a login (`--auth`) the login;
without one, the client: send the header `X-Workbench-Token: <a secret of 16+ characters>` with
every call (`Client(url, headers={...})`) to reach the same sessions from any client, else a
session is reachable from the Client object that made it only. `sessions()` lists one's own;
another's id is answered as if it did not exist.

`edit` answers with the one utterance it changed (a list of one record), so that an edit costs the
same in a session of 20 or 20,000 utterances; split, merge and undo, which move rows, answer with
the whole table. `utterance_id` is the row's position (its Utterance_ID in the export), from 0. `key` is a checkpoint's
key from models() ("shipped", "models/NAME", "checkpoint"); a broken one raises an error and the model
in use is kept. use_model changes the model of every user, so it raises an error (one line, the model
in use kept) when the server refuses switching (`--allow-model-switch`: by default on a public server
without --auth). analyze and use_model are counted against the per-user rate limit (an error when over).
"""

from __future__ import annotations

import functools

import gradio as gr

from core.types import UserError

from .common import SESSION_WORKERS, fail
from .ratelimit import client_key
from .service import Workbench
from .session import merge_next, set_field, split_row
from .views import row_record, table_records


def mount(wb: Workbench) -> None:
    """Add the endpoints to the Blocks being built (call inside `with gr.Blocks()`)."""
    with gr.Column(visible=False):
        media = gr.File(label="media")
        csv = gr.File(label="csv", file_types=[".csv"])
        sid = gr.Textbox(label="session_id")
        pos = gr.Number(label="utterance_id", precision=0)
        name = gr.Textbox(label="field")
        value = gr.Textbox(label="value")
        at = gr.Textbox(label="at")
        rows = gr.JSON(label="utterances")
        listing = gr.JSON(label="sessions")
        problems = gr.JSON(label="problems")
        file_out = gr.File(label="file")
        key = gr.Textbox(label="key")
        model_list = gr.JSON(label="checkpoints")
        model_info = gr.JSON(label="checkpoint")
        together = gr.Checkbox(True, label="neighbours")
        as_heard = gr.Checkbox(False, label="any_language")

    def guarded(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (UserError, OSError) as err:
                raise fail(err) from None
        return run

    def uid_at(session, position) -> int:
        try:
            if int(position) < 0:
                raise IndexError(position)
            return session.rows[int(position)].uid
        except (TypeError, ValueError, IndexError, OverflowError):
            raise gr.Error(f"no utterance {position} in this session ({len(session.rows)} utterances)",
                           print_exception=False) from None

    def change(session_id, position, op, request):
        session, _ = wb.apply(session_id, lambda s: (op(s, uid_at(s, position)), ""), wb.owner(request))
        return table_records(session)

    def analyze(media, neighbours=True, any_language=False, request: gr.Request = None, progress=gr.Progress()):
        """Analyse a video or audio file: a new session and its utterance table. `neighbours` False:
        each utterance's words are read alone, not with the lines around it (unrelated lines).
        `any_language` True: Whisper writes the language it hears instead of English."""
        if not media:
            raise gr.Error("no file given", print_exception=False)
        session = wb.analyze(media, lambda f, stage: progress(f, desc=stage), user=client_key(request),
                             owner=wb.owner(request), dialogue=neighbours is not False,
                             any_language=any_language is True)
        return session.id, table_records(session)

    def edit(session_id, utterance_id, field, value, request: gr.Request = None):
        """Set one field (start, end, speaker, text, emotion, sentiment) of one utterance; returns
        that utterance as saved (a list of one record)."""
        def op(s):
            uid = uid_at(s, utterance_id)
            return set_field(s, uid, field, value), uid
        session, uid = wb.apply(session_id, op, wb.owner(request))
        return [row_record(session, int(utterance_id))]

    def split(session_id, utterance_id, at, request: gr.Request = None):
        """Split an utterance at `at` seconds ("" = its middle)."""
        return change(session_id, utterance_id, lambda s, uid: split_row(s, uid, at or None), request)

    def merge(session_id, utterance_id, request: gr.Request = None):
        """Merge an utterance with the next one."""
        return change(session_id, utterance_id, lambda s, uid: merge_next(s, uid)[0], request)

    def undo(session_id, request: gr.Request = None):
        """Undo the last change of a session."""
        return table_records(wb.undo(session_id, wb.owner(request)))

    def session(session_id, request: gr.Request = None):
        """The utterance table of one of your sessions."""
        return table_records(wb.session(session_id, wb.owner(request)))

    def sessions(request: gr.Request = None):
        """Your saved sessions, newest first."""
        return wb.sessions(wb.owner(request))

    def export(session_id, request: gr.Request = None):
        """The session as a MELD-format CSV file (refused, naming the rows, while a row lacks a label,
        a time or words)."""
        return str(wb.export_csv(session_id, wb.owner(request), user=client_key(request)))

    def export_zip(session_id, request: gr.Request = None, progress=gr.Progress()):
        """A zip of the MELD CSV and one clip per utterance (dia{D}_utt{U}.mp4)."""
        return str(wb.export_zip(session_id, wb.owner(request), lambda f, s: progress(f, desc=s),
                                 user=client_key(request)).path)

    def import_meld(csv, media, request: gr.Request = None):
        """Import a MELD CSV (with its video, optionally): one session per dialogue."""
        if not csv:
            raise gr.Error("no CSV given", print_exception=False)
        created, imported = wb.import_csv(csv, media, owner=wb.owner(request), user=client_key(request))
        return [s.id for s in created], [str(p) for p in imported.problems] + imported.notes

    def models():
        """The checkpoints to pick from (shipped, the data folder's models/, --checkpoint), with their cards."""
        entries = wb.checkpoints()
        current = wb.current_model(entries)
        return [e.to_dict(current=e.key == current) for e in entries]

    def use_model(key, request: gr.Request = None):
        """Use the checkpoint `key` (from /models) for the next analyses of every user; its card.
        Refused when the server does not allow switching (see --allow-model-switch)."""
        return wb.use_model(key, user=client_key(request)).to_dict(current=True)

    endpoints = [
        (analyze, [media, together, as_heard], [sid, rows]),
        (edit, [sid, pos, name, value], [rows]),
        (split, [sid, pos, at], [rows]),
        (merge, [sid, pos], [rows]),
        (undo, [sid], [rows]),
        (session, [sid], [rows]),
        (sessions, [], [listing]),
        (export, [sid], [file_out]),
        (export_zip, [sid], [file_out]),
        (import_meld, [csv, media], [listing, problems]),
        (models, [], [model_list]),
        (use_model, [key], [model_info]),
    ]
    queues = {"analyze": "analysis", "export_zip": "export", "use_model": "model"}
    with gr.Column(visible=False):
        buttons = [gr.Button(visible=False) for _ in endpoints]
    for button, (fn, inputs, outputs) in zip(buttons, endpoints):
        button.click(guarded(fn), inputs, outputs, api_name=fn.__name__,
                     concurrency_id=queues.get(fn.__name__, "api-session"),
                     concurrency_limit=1 if fn.__name__ in queues else SESSION_WORKERS)
