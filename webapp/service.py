"""The workbench's operations, shared by the page and the API: analyse, import, open, edit, undo,
rename, delete, export. `Workbench` is the one door into sessions: the page and the API never
reach the store themselves, and every call names the owner asking (webapp/owners.py), so nobody
opens, lists or changes a session that is not theirs.

Nothing here knows about Gradio components; errors are one-line core.types.UserError subclasses
(MediaError, MeldFormatError, EditError, StoreError, PathError, ModelError, RateLimited,
ExportRefused) that the UI turns into messages. Switching the server's model obeys `model_switch` (switch_policy.py: refused on a public
server without a login unless --allow-model-switch yes) and counts against the per-user rate limit.
"""

from __future__ import annotations

import hmac
import os
import secrets
import shutil
import threading
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, TypeVar

from core.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, ModelCard, read_card
from core.limits import Limits
from core.types import UserError, Utterance, error_line
from core.pipeline import Models, analyze, load_models

from . import checkpoints, checks, export, importer, media_prep, owners, paths
from .ratelimit import RateLimiter
from .session import EditError, Session, from_analysis, vtt_text
from .store import Store
from .switch_policy import ALLOWED, SwitchPolicy

Progress = Callable[[float, str], None]
T = TypeVar("T")
MAX_TITLE = 120
MAX_DIALOGUES = 500           # sessions one CSV import may create
MODELS_FOLDER = "models"
SERVED_FOLDER = "served"      # the only folder of the data folder the browser may fetch from
SECRET_FILE = ".browser_secret"      # checkpoints copied here (a folder each) are offered by the picker


class ModelError(UserError, RuntimeError):
    """The models could not be loaded; one line."""


class SwitchRefused(ModelError):
    """Switching models is off on this server (switch_policy); one line, the model in use is kept."""


class ModelHolder:
    """Loads the models once (in the background at start-up) and hands them to every request.
    `switch` replaces them for the next requests; analyses already running keep the old ones."""

    def __init__(self, checkpoint: str | None = None, models: Models | None = None):
        self.checkpoint = checkpoint
        self.given = checkpoint            # the --checkpoint folder, listed by the picker
        self._models = models
        self._error = ""
        self._lock = threading.Lock()
        self._switch_lock = threading.Lock()

    def warm_up(self) -> None:
        threading.Thread(target=self._try_get, daemon=True).start()

    def _try_get(self) -> None:
        try:
            self.get()
        except ModelError:
            pass

    def get(self) -> Models:
        with self._lock:
            if self._models is None and not self._error:
                try:
                    self._models = load_models(self.checkpoint)
                except Exception as err:   # CheckpointError, TranscriptionError, a broken install
                    self._error = error_line(err)
            if self._error:
                raise ModelError(f"The model could not be loaded: {self._error}")
            return self._models

    def switch(self, folder: str | Path) -> ModelCard:
        """Load the checkpoint in `folder` and use it from the next request on. ModelError (one
        line) if it cannot be loaded: the model in use is kept."""
        with self._switch_lock:
            current = self._models
            same = dict(whisper_name=current.whisper_name, language=current.language,
                        device=current.device) if current is not None else {}
            try:
                models = load_models(str(folder), **same)
            except Exception as err:       # CheckpointError, a text encoder not to be had offline
                why = error_line(err).replace(str(folder), Path(folder).name)
                raise ModelError(f"{Path(folder).name} could not be loaded, the model in use is kept: {why}") from None
            with self._lock:
                self._models, self._error, self.checkpoint = models, "", str(folder)
            return models.card

    @property
    def folder(self) -> Path | None:
        """The folder the model in use comes from (None: given already loaded, or untrained)."""
        if self.checkpoint:
            return Path(self.checkpoint).expanduser().resolve()
        if self._models is None and (DEFAULT_CHECKPOINT / "card.json").is_file():
            return DEFAULT_CHECKPOINT
        return None

    def summary(self) -> dict:
        """The checkpoint summary, read from its card without waiting for the weights."""
        if self._models is not None:
            return dict(self._models.card.summary(), created=self._models.card.created)
        folder = self.checkpoint or (DEFAULT_CHECKPOINT if (DEFAULT_CHECKPOINT / "card.json").is_file() else None)
        try:
            card = read_card(folder) if folder else ModelCard()
            return dict(card.summary(), created=card.created)
        except CheckpointError as err:
            return {"name": "unreadable", "trained": False, "error": str(err)}


class ExportRefused(UserError):
    """A MELD export was refused: the message names the table's rows that need fixing."""


class Workbench:
    def __init__(self, holder: ModelHolder, root: str | Path | None = None, limits: Limits | None = None,
                 rate: RateLimiter | None = None, model_switch: SwitchPolicy | None = None,
                 admins: frozenset[str] = frozenset(), io_rate: RateLimiter | None = None):
        self.holder = holder
        self.limits = limits or Limits.from_env()
        self.rate = rate or RateLimiter(0)      # no limit unless given one (app.py gives one)
        self.model_switch = model_switch or ALLOWED     # app.py decides from --allow-model-switch
        self.admins = frozenset(admins)         # logins that reach every session (--admin)
        self.io_rate = io_rate or RateLimiter(0)   # imports and exports per user (app.py gives a limit)
        self.root = Path(root).resolve() if root else paths.data_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.models_dir = self.root / MODELS_FOLDER
        self.models_dir.mkdir(exist_ok=True)
        self.store = Store(self.root / "workbench.sqlite3")
        self.served_root = self.root / SERVED_FOLDER
        self.served_root.mkdir(exist_ok=True)
        self.secret = _secret(self.root / SECRET_FILE)

    def owner(self, request) -> str | None:
        """The owner key of a request (a login, else the browser's or client's token)."""
        return owners.owner_of(request, self.admins)

    # ------------------------------------------------------------ models

    def checkpoints(self) -> list[checkpoints.Entry]:
        """The checkpoints the picker offers (shipped, models/ folder, --checkpoint), scanned now."""
        return checkpoints.scan(self.models_dir, self.holder.given)

    def current_model(self, entries: list[checkpoints.Entry] | None = None) -> str | None:
        """The key of the checkpoint in use, among `entries` (None when it is none of them)."""
        return checkpoints.current_key(self.checkpoints() if entries is None else entries,
                                       self.holder.folder, self.holder.summary())

    def use_model(self, key: str, user: str | None = None) -> checkpoints.Entry:
        """Switch to the listed checkpoint `key` for the next analyses (ModelError: the current is
        kept). Refused first when switching is off (SwitchRefused), then `user` (ratelimit.client_key)
        is counted against the rate limit like an analysis (RateLimited when over)."""
        if not self.model_switch.allowed:
            raise SwitchRefused(self.model_switch.refusal)
        self.rate.check(user)
        entries = self.checkpoints()
        entry = checkpoints.find(entries, key)
        if entry is None:
            known = ", ".join(e.key for e in entries)
            raise ModelError(f"no checkpoint {str(key)[:60]!r} (listed: {known}); the model in use is kept")
        if not entry.usable:
            raise ModelError(f"{entry.folder.name} cannot be used ({entry.problem}); the model in use is kept")
        self.holder.switch(entry.folder)
        return entry

    # ------------------------------------------------------------ paths

    def folder(self, session_id: str) -> Path:
        return paths.session_dir(self.root, session_id)

    def playable(self, session: Session) -> Path | None:
        path = paths.resolve_relative(self.root, session.media)
        return path if path and path.is_file() else None

    def served(self, session_id: str) -> Path:
        """The folder of what a page may fetch for this session. Its name is an HMAC of the session
        id under the server's secret: it cannot be guessed, and only launch(allowed_paths=...) names
        the served root, so the database, the secret, uploads and other sessions are never served."""
        key = hmac.new(self.secret.encode(), paths.check_session_id(session_id).encode(), "sha256").hexdigest()[:32]
        folder = paths.inside(self.served_root, key)
        folder.mkdir(exist_ok=True)
        return folder

    def publish(self, session_id: str, path: Path, name: str) -> Path:
        """`path` (a file the app made) under `name` in the session's served folder (a hard link)."""
        out = paths.inside(self.served(session_id), paths.safe_filename(name))
        if out.is_file() and out.stat().st_ino == path.stat().st_ino:
            return out
        tmp = out.with_name(out.name + ".part")
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:                       # another file system, or no hard links: a copy
            shutil.copyfile(path, tmp)
        tmp.replace(out)
        return out

    def player_file(self, session: Session) -> Path | None:
        """The session's playable media as the page may fetch it."""
        media = self.playable(session)
        return self.publish(session.id, media, "playable" + media.suffix.lower()) if media else None

    def source(self, session: Session) -> Path | None:
        path = paths.resolve_relative(self.root, session.source)
        return path if path and path.is_file() else None

    def subtitles(self, session: Session) -> Path | None:
        """A .vtt of the current rows, in the served folder (named by version, so the browser never
        shows a stale one)."""
        if not session.rows:
            return None
        folder = self.served(session.id)
        out = folder / f"v{session.version}.vtt"
        if not out.is_file():
            for old in folder.glob("*.vtt"):
                old.unlink(missing_ok=True)
            out.write_text(vtt_text(session), encoding="utf-8")
        return out

    # ------------------------------------------------------------ creating sessions

    def analyze(self, upload: str | Path, progress: Progress | None = None, user: str | None = None,
                owner: str | None = "", dialogue: bool = True, any_language: bool = False) -> Session:
        """Analyse a file into a new session of `owner`. `user` (ratelimit.client_key) is counted
        against the rate limit first, before the file is even read (RateLimited when over). A failed
        analysis leaves nothing behind. `dialogue` False reads each utterance's words alone;
        `any_language` lets Whisper write the language it hears (core.pipeline.analyze)."""
        self.rate.check(user)
        report = progress or (lambda f, s: None)
        report(0.0, "checking the file")
        self.limits.check_media(upload)      # size, duration, frame size: before any heavy work
        report(0.01, "loading the models")
        models = self.holder.get()
        sid = paths.new_session_id()
        folder = self.folder(sid)
        try:
            report(0.02, "preparing the file")
            staged = media_prep.stage(upload, folder / "media")
            result = analyze(staged.source, models, lambda f, stage: report(0.05 + 0.93 * f, stage),
                             dialogue=dialogue, any_language=any_language)
            session = from_analysis(result, sid, Path(str(upload)).name, self.store.next_dialogue_id(owner))
            session.source_name = paths.safe_filename(Path(str(upload)).name)
            session.source = paths.relative(self.root, staged.source)
            session.media = paths.relative(self.root, staged.playable)
            return self.store.create(session, owner or "")
        except BaseException:
            _remove_tree(folder)
            raise

    def import_csv(self, csv_path: str | Path, media_upload: str | Path | None = None,
                   csv_name: str | None = None, owner: str | None = "", user: str | None = None,
                   run_model: bool = False, progress: Progress | None = None) -> tuple[list[Session], importer.Imported]:
        """One session per dialogue of the CSV (at most MAX_DIALOGUES). `user` is counted against
        the import/export rate limit first (RateLimited when over). With its media and `run_model`,
        the model reads the first dialogue's rows (their times and words, no transcription): their
        confidences and each modality's opinion are filled in, the imported labels stay the
        annotation (counted against the analysis rate limit too)."""
        self.io_rate.check(user)
        if run_model and media_upload:
            self.rate.check(user)
        self.limits.check_size(csv_path, "CSV file")
        if media_upload:
            self.limits.check_media(media_upload)
        imported = importer.read(csv_path, fallback_dialogue=self.store.next_dialogue_id(owner))
        self.limits.check_rows(imported.row_count)
        if len(imported.dialogues) > MAX_DIALOGUES:
            raise EditError(f"the CSV holds {len(imported.dialogues)} dialogues; at most {MAX_DIALOGUES} are "
                            "imported at once (split the file)")
        name = csv_name or Path(str(csv_path)).name
        sessions = importer.sessions_from(imported, name, paths.new_session_id)
        if media_upload and sessions:
            first = sessions[0]
            folder = self.folder(first.id)
            try:
                staged = media_prep.stage(media_upload, folder / "media")
            except BaseException:
                _remove_tree(folder)
                raise
            first.source = paths.relative(self.root, staged.source)
            first.media = paths.relative(self.root, staged.playable)
            first.source_name = paths.safe_filename(Path(str(media_upload)).name)
            first.duration, first.has_video = staged.info.duration, staged.info.has_video
            late = [i for i, r in enumerate(first.rows) if r.end is not None and r.end > first.duration + 0.5]
            if late:
                first.problems.append(f"{len(late)} utterance(s) end after the media does "
                                      f"({first.duration:.2f} s): first is utterance {late[0]}")
            if len(sessions) > 1:
                first.problems.append(f"the media file was attached to dialogue {first.dialogue_id} "
                                      "(the first in the CSV)")
            if run_model:
                try:
                    self._predict_imported(first, staged.source, progress)
                except BaseException:
                    _remove_tree(folder)
                    raise
        return [self.store.create(s, owner or "") for s in sessions], imported

    def _predict_imported(self, session: Session, source: Path, progress: Progress | None) -> None:
        """The model's view of each imported row that has times and words (in place); the labels
        stay as imported. Rows it cannot read are said in the session's message."""
        report = progress or (lambda f, s: None)
        report(0.1, "loading the models")
        models = self.holder.get()
        timed = [(i, r) for i, r in enumerate(session.rows)
                 if r.start is not None and r.end is not None and r.end > r.start and r.text.strip()]
        spans = [Utterance(start=r.start, end=min(r.end, session.duration or r.end), text=r.text, speaker=r.speaker)
                 for _, r in timed]
        result = analyze(source, models, lambda f, stage: report(0.15 + 0.8 * f, stage), utterances=spans)
        for (i, row), pred in zip(timed, result.utterances):
            row.emotion_probs, row.sentiment_probs = list(pred.emotion_probs), list(pred.sentiment_probs)
            row.opinions = [asdict(o) for o in pred.opinions]
            row.error = pred.error
        session.model = dict(result.model)
        skipped = len(session.rows) - len(timed)
        session.message = (f"The model read {len(timed)} row(s) with their video"
                           + (f"; {skipped} row(s) without times or words were not read." if skipped else ".")
                           + " The imported labels are kept as the annotation.")

    # ------------------------------------------------------------ opening and listing

    def session(self, session_id: str, owner: str | None) -> Session:
        """The session, if `owner` may see it (StoreError otherwise, as if it did not exist)."""
        return self.store.load(session_id, owner)

    def sessions(self, owner: str | None) -> list[dict]:
        """`owner`'s sessions, newest first (store.list's fields)."""
        return self.store.list(owner)

    def can_undo(self, session: Session) -> bool:
        return self.store.can_undo(session.id, session.version)

    # ------------------------------------------------------------ editing

    def apply(self, session_id: str, change: Callable[[Session], tuple[Session, T]],
              owner: str | None) -> tuple[Session, T]:
        return self.store.update(session_id, change, owner)

    def undo(self, session_id: str, owner: str | None) -> Session:
        return self.store.undo(session_id, owner)

    def rename(self, session_id: str, title: str, owner: str | None) -> Session:
        clean = " ".join(str(title or "").split())[:MAX_TITLE]
        if not clean:
            raise EditError("a session name cannot be empty")
        return self.apply(session_id, lambda s: (replace(s, title=clean), None), owner)[0]

    def delete(self, session_id: str, owner: str | None) -> Session:
        """Hide the session (restore() brings it back; purged after store.PURGE_AFTER)."""
        return self.store.set_deleted(session_id, True, owner)

    def restore(self, session_id: str, owner: str | None) -> Session:
        return self.store.set_deleted(session_id, False, owner)

    # ------------------------------------------------------------ export

    def export_csv(self, session_id: str, owner: str | None, user: str | None = None) -> Path:
        """The MELD CSV; ExportRefused naming the rows a MELD export must not write. `user` is
        counted against the import/export rate limit."""
        session = self._exportable(session_id, owner, user)
        path = export.export_csv(session, self.folder(session_id) / "exports")
        return self.publish(session_id, path, path.name)

    def export_zip(self, session_id: str, owner: str | None, progress: Progress | None = None,
                   user: str | None = None) -> export.ZipReport:
        """The zip of the CSV and the clips (ExportRefused like export_csv); its path is the served one."""
        session = self._exportable(session_id, owner, user)
        report = export.export_zip(session, self.source(session), self.folder(session_id) / "exports", progress)
        report.path = self.publish(session_id, report.path, report.path.name)
        return report

    def _exportable(self, session_id: str, owner: str | None, user: str | None) -> Session:
        session = self.session(session_id, owner)
        self.io_rate.check(user)
        problems = checks.export_problems(session)
        if problems:
            raise ExportRefused(f"Not exported: {len(problems)} problem(s) to fix first (marked ⚠ in the "
                                f"table): {checks.summary(problems)}")
        return session


def _remove_tree(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _secret(path: Path) -> str:
    """The server's secret (made once, kept in the data folder, never served)."""
    if not path.is_file():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()
