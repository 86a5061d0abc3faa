"""Analyse a folder of videos into one JSON and one CSV per video, on this machine or on Ray.

Every file is checked against the limits (core/limits.py) first, in this process and before any
worker loads a model: a file over a limit is skipped and reported by name, the others go on.
Outputs are named after the file (NAME.json, NAME.csv); files whose names differ only in their
extension (talk.mp4, talk.wav) keep it (talk.mp4.json, talk.wav.json), so no result overwrites
another. The CSV goes through core.csvsafe (formula-safe); a write that fails (disk full) fails
that file with one line, never the batch.

Engines: "local" (worker processes on this machine, the default) and "ray" (Ray actors on this
machine or a cluster, core/ray_engine.py). Either way a worker (BatchWorker) loads the models
once and analyses one file per call; this process writes the outputs. NAME.json records the
file's sha256 and the models' signature (key "batch"), so a second run over the same folder skips
the files already done with the same models (resume) and analyses the rest.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import socket
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol

from .csvsafe import write_csv
from .limits import LimitError, Limits
from .media import MediaError
from .types import Analysis, UserError, error_line
from .writes import os_error_line

MEDIA_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".wav", ".mp3", ".m4a", ".ogg", ".flac"}
CSV_COLUMNS = ["id", "start", "end", "text", "emotion", "emotion_confidence", "sentiment",
               "sentiment_confidence", "face_emotion", "face_confidence", "voice_emotion", "voice_confidence",
               "voice_counted", "error"]
ENGINES = ("local", "ray")
STAMP_KEY = "batch"             # NAME.json's record of what made it: {"sha256": file, "models": signature}
MAX_STAMPED_JSON = 64 << 20     # a NAME.json bigger than this is not read back for resuming
ALREADY_DONE = "already analysed with these models"


@dataclass
class BatchItem:
    source: str
    ok: bool
    message: str        # "N utterances", "No speech found…", or the one-line error
    skipped: bool = False   # refused by a limit before any analysis
    output: str = ""        # NAME of NAME.json / NAME.csv in the output folder ("" when none)
    resumed: bool = False   # done by an earlier run with the same file and models: not analysed again
    worker: str = ""        # "host:pid" of the worker that analysed it


@dataclass
class Outcome:
    """What a worker sends back for one file: its analysis, or why there is none."""

    path: str
    analysis: Analysis | None
    message: str
    sha256: str = ""
    models: dict | None = None      # the signature of the models that made the analysis
    worker: str = ""


class Engine(Protocol):
    """Runs BatchWorkers somewhere; starts nothing until asked for a signature or a run."""

    def signature(self) -> dict | None: ...
    def run(self, paths: list[str]) -> Iterator[Outcome]: ...
    def close(self) -> None: ...


def find_media(folder: str | Path) -> list[Path]:
    """Media files directly in `folder`, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)


def output_names(files: list[Path]) -> dict[Path, str]:
    """NAME for each file's NAME.json / NAME.csv: its stem, or its whole name when another file
    in the batch has the same stem (case-insensitively: talk.mp4 and talk.WAV)."""
    stems: dict[str, int] = {}
    for f in files:
        stems[f.stem.lower()] = stems.get(f.stem.lower(), 0) + 1
    return {f: f.name if stems[f.stem.lower()] > 1 else f.stem for f in files}


def analysis_rows(analysis: Analysis) -> list[list]:
    """One flat row per utterance (CSV_COLUMNS): what a spreadsheet user wants to see."""
    rows = []
    for p in analysis.utterances:
        face, voice = p.opinion("face"), p.opinion("audio")
        face_ok = face is not None and face.present
        voice_ok = voice is not None and voice.present and bool(voice.emotion_probs)
        rows.append([p.index, round(p.utterance.start, 3), round(p.utterance.end, 3), p.utterance.text,
                     p.emotion, round(p.confidence, 4), p.sentiment,
                     round(max(p.sentiment_probs), 4) if p.sentiment_probs else None,
                     face.emotion if face_ok else "", round(max(face.emotion_probs), 4) if face_ok else None,
                     voice.emotion if voice_ok else "", round(max(voice.emotion_probs), 4) if voice_ok else None,
                     # the voice's share of its fusion weight (core.familiarity); 0 when it was not fused
                     (round(voice.fusion_share, 3) if voice.used_in_fusion else 0.0) if voice_ok else None,
                     p.error])
    return rows


# ---------------------------------------------------------------- the worker (process or Ray actor)

def _canonical(signature: dict) -> dict:
    """The signature as it reads back from JSON (tuples become lists), so stamps compare equal."""
    return json.loads(json.dumps(signature, sort_keys=True, default=str))


class BatchWorker:
    """Loads the models once, then analyses one file per call. A bad checkpoint is not fatal:
    every file then fails with the one line that says why. `dialogue` False reads each
    utterance's words alone (core.pipeline.analyze), and the signature says so."""

    def __init__(self, checkpoint: str | None = None, threads: int = 0, dialogue: bool = True):
        import torch
        if threads > 0:
            torch.set_num_threads(threads)
        from .pipeline import load_models
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.models, self.error, self.dialogue = None, "", dialogue
        try:
            self.models = load_models(checkpoint)
        except UserError as err:
            self.error = f"the models could not be loaded: {err}"

    def signature(self) -> dict | None:
        """What decides an analysis besides the file (core.pipeline.Models.signature, and how the
        words were read), or None."""
        if self.models is None:
            return None
        signature = self.models.signature()
        return _canonical(signature if self.dialogue else {**signature, "words": "alone"})

    def run(self, path: str) -> Outcome:
        from .cache import file_digest
        from .pipeline import analyze
        if self.models is None:
            return Outcome(path, None, self.error, worker=self.name)
        try:
            digest = file_digest(path)          # before: a file changed meanwhile is done again next time
            analysis = analyze(path, self.models, dialogue=self.dialogue)
        except UserError as err:                # media, checkpoint, transcription: their own line
            return Outcome(path, None, str(err), worker=self.name)
        except OSError as err:
            return Outcome(path, None, f"Could not read {Path(path).name}: {err.strerror or err}.",
                           worker=self.name)
        except Exception as err:                # one file must never stop the batch
            first = error_line(err) if str(err).strip() else ""
            return Outcome(path, None, f"{type(err).__name__}: {first}".rstrip(": "), worker=self.name)
        count = f"{len(analysis.utterances)} utterances"
        message = (f"{count}. {analysis.message}" if analysis.utterances and analysis.message
                   else analysis.message or count)
        return Outcome(path, analysis, message, digest, self.signature(), self.name)


# ---------------------------------------------------------------- the local engine

_worker: BatchWorker | None = None


def _init_worker(checkpoint: str | None, threads: int, dialogue: bool = True) -> None:
    global _worker
    _worker = BatchWorker(checkpoint, threads, dialogue)


def _worker_signature() -> dict | None:
    return _worker.signature()


def _worker_run(path: str) -> Outcome:
    return _worker.run(path)


class LocalEngine:
    """`jobs` worker processes on this machine sharing its cores (spawned: fork after torch has
    threads can deadlock); each loads the models once, when it first gets work."""

    def __init__(self, jobs: int, checkpoint: str | None, dialogue: bool = True):
        self.jobs = max(1, jobs)
        self.checkpoint, self.dialogue = checkpoint, dialogue
        self._pool: ProcessPoolExecutor | None = None

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            threads = max(1, (os.cpu_count() or 1) // self.jobs)
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker,
                                             initargs=(self.checkpoint, threads, self.dialogue))
        return self._pool

    def signature(self) -> dict | None:
        return self._started().submit(_worker_signature).result()

    def run(self, paths: list[str]) -> Iterator[Outcome]:
        pool = self._started()
        futures = [pool.submit(_worker_run, p) for p in paths]
        for fut in as_completed(futures):
            yield fut.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def make_engine(engine: str, jobs: int | None, checkpoint: str | None, n_files: int,
                address: str | None = None, cpus_per_job: float | None = None,
                gpus_per_job: float | None = None, dialogue: bool = True) -> Engine:
    """The engine by name; jobs=None lets it choose (local: 1 process; Ray: what the cluster fits).
    `address`, `cpus_per_job` and `gpus_per_job` are Ray's (core/ray_engine.py); `dialogue` False
    has the workers read each utterance's words alone."""
    if engine == "local":
        return LocalEngine(min(jobs or 1, max(1, n_files)), checkpoint, dialogue)
    if engine == "ray":
        from .ray_engine import RayEngine
        return RayEngine(jobs, checkpoint, n_files, address, cpus_per_job, gpus_per_job, dialogue)
    raise ValueError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")


# ---------------------------------------------------------------- outputs and resuming

def write_outputs(analysis: Analysis, stem: Path, stamp: dict | None = None) -> None:
    """STEM.csv (one row per utterance, formula-safe cells), then STEM.json (the whole analysis,
    plus `stamp` under "batch"); STEM is a name, not a suffix to replace (talk.mp4 ->
    talk.mp4.json). The JSON comes last, so a stamped JSON means both are whole. An OSError names
    the file, and nothing of this file's outputs is left behind."""
    record = analysis.to_dict()
    if stamp is not None:
        record[STAMP_KEY] = stamp
    written = []
    for suffix, write in ((".csv", lambda p: write_csv(p, CSV_COLUMNS, analysis_rows(analysis),
                                                       lineterminator="\n")),
                          (".json", lambda p: p.write_text(json.dumps(record, indent=1)))):
        target = stem.parent / (stem.name + suffix)
        try:
            write(target)
        except OSError as err:
            for done in (*written, target):
                with contextlib.suppress(OSError):
                    done.unlink(missing_ok=True)
            err.filename = target.name
            raise
        written.append(target)


def read_stamp(stem: Path) -> dict | None:
    """The "batch" record of STEM.json when STEM.json and STEM.csv are both plain files, else None."""
    record_path, csv_path = stem.parent / (stem.name + ".json"), stem.parent / (stem.name + ".csv")
    try:          # is_file() is False for a device or a folder: never read /dev/zero to its end
        if not (record_path.is_file() and csv_path.is_file()) or record_path.stat().st_size > MAX_STAMPED_JSON:
            return None
        stamp = json.loads(record_path.read_text(encoding="utf-8")).get(STAMP_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(stamp, dict) or not isinstance(stamp.get("sha256"), str) \
            or not isinstance(stamp.get("models"), dict):
        return None
    return stamp


def already_done(files: list[Path], names: dict[Path, str], out: Path,
                 engine: Engine) -> tuple[list[BatchItem], list[Path]]:
    """(items for files an earlier run did with the same file content and models, the rest).
    The engine's workers are asked for their models' signature only when some output is stamped."""
    from .cache import file_digest
    stamps = {f: s for f in files if (s := read_stamp(out / names[f])) is not None}
    signature = engine.signature() if stamps else None
    done, rest = [], []
    for f in files:
        stamp = stamps.get(f)
        try:
            same = signature is not None and stamp is not None and stamp["models"] == signature \
                and stamp["sha256"] == file_digest(f)
        except OSError:
            same = False                        # unreadable now: check_files says why
        if same:
            done.append(BatchItem(str(f), True, ALREADY_DONE, output=names[f], resumed=True))
        else:
            rest.append(f)
    return done, rest


def check_files(files: list[Path], limits: Limits) -> tuple[list[Path], list[BatchItem]]:
    """(files to analyse, items for files refused now): over a limit = skipped, unreadable = failed."""
    keep, refused = [], []
    for f in files:
        try:
            limits.check_media(f)
        except LimitError as err:
            refused.append(BatchItem(str(f), False, str(err), skipped=True))
        except MediaError as err:
            refused.append(BatchItem(str(f), False, str(err)))
        else:
            keep.append(f)
    return keep, refused


def _finish(outcome: Outcome, source: Path, name: str, out: Path) -> BatchItem:
    """Write one worker's result into the output folder (this process writes every output)."""
    if outcome.analysis is None:
        return BatchItem(str(source), False, outcome.message, worker=outcome.worker)
    analysis = outcome.analysis
    analysis.source = analysis.media.path = str(source)     # as given, wherever the worker read it
    stamp = {"sha256": outcome.sha256, "models": outcome.models} if outcome.models and outcome.sha256 else None
    try:
        write_outputs(analysis, out / name, stamp)
    except OSError as err:              # disk full, permission: one line, no path
        return BatchItem(str(source), False, os_error_line(err), output=name, worker=outcome.worker)
    return BatchItem(str(source), True, outcome.message, output=name, worker=outcome.worker)


def run_files(engine: Engine, files: Iterable[Path], names: dict[Path, str], out: Path,
              progress: bool = True) -> list[BatchItem]:
    """Analyse `files` on the engine's workers (given absolute paths, so a worker elsewhere reads
    the same file) and write each result as it comes back."""
    from tqdm import tqdm
    by_path = {str(f.absolute()): f for f in files}      # not resolve(): two links stay two files
    items = []
    for outcome in tqdm(engine.run(list(by_path)), total=len(by_path), desc="videos", disable=not progress):
        source = by_path[outcome.path]
        items.append(_finish(outcome, source, names[source], out))
    return items


def analyze_folder(folder: str | Path, out_dir: str | Path, jobs: int | None = 1,
                   checkpoint: str | None = None, progress: bool = True,
                   limits: Limits | None = None, engine: str = "local", address: str | None = None,
                   cpus_per_job: float | None = None, gpus_per_job: float | None = None,
                   dialogue: bool = True) -> list[BatchItem]:
    """Analyse every media file in `folder` on `engine` ("local": `jobs` worker processes sharing
    the CPU cores; "ray": Ray actors, on the cluster at `address` if given). Files done before with
    the same models are skipped; files over `limits` (default: Limits.from_env()) or unreadable
    are reported, not analysed. No model loads when there is nothing to analyse. `dialogue` False
    reads each utterance's words alone (a folder of clips of unrelated lines); a file done the
    other way is analysed again."""
    files = find_media(folder)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = output_names(files)
    runner = make_engine(engine, jobs, checkpoint, len(files), address, cpus_per_job, gpus_per_job, dialogue)
    try:
        results, todo = already_done(files, names, out, runner)
        todo, refused = check_files(todo, limits or Limits.from_env())
        results += refused
        if todo:
            results += run_files(runner, todo, names, out, progress)
    finally:
        runner.close()
    return sorted(results, key=lambda r: r.source)
