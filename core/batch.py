"""Analyse a folder of videos into one JSON and one CSV per video, on the cores it is given.

Every file is checked against the limits (core/limits.py) first, in this process and before any
worker loads a model: a file over a limit is skipped and reported by name, the others go on.
Outputs are named after the file (NAME.json, NAME.csv); files whose names differ only in their
extension (talk.mp4, talk.wav) keep it (talk.mp4.json, talk.wav.json), so no result overwrites
another. The CSV goes through core.csvsafe (formula-safe); a write that fails (disk full) fails
that file with one line, never the batch.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from .csvsafe import write_csv
from .limits import LimitError, Limits
from .media import MediaError
from .types import Analysis, error_line
from .writes import os_error_line

MEDIA_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".wav", ".mp3", ".m4a", ".ogg", ".flac"}
CSV_COLUMNS = ["id", "start", "end", "text", "emotion", "emotion_confidence", "sentiment",
               "sentiment_confidence", "face_emotion", "face_confidence", "error"]

_worker_models = None
_worker_error = ""          # why this worker could not load the models (each file then says it)


@dataclass
class BatchItem:
    source: str
    ok: bool
    message: str        # "N utterances", "No speech found…", or the one-line error
    skipped: bool = False   # refused by a limit before any analysis
    output: str = ""        # NAME of NAME.json / NAME.csv in the output folder ("" when none)


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
        face = p.opinion("face")
        face_ok = face is not None and face.present
        rows.append([p.index, round(p.utterance.start, 3), round(p.utterance.end, 3), p.utterance.text,
                     p.emotion, round(p.confidence, 4), p.sentiment,
                     round(max(p.sentiment_probs), 4) if p.sentiment_probs else None,
                     face.emotion if face_ok else "", round(max(face.emotion_probs), 4) if face_ok else None,
                     p.error])
    return rows


def _init_worker(checkpoint: str | None, threads: int) -> None:
    global _worker_models, _worker_error
    import torch
    torch.set_num_threads(threads)
    from .pipeline import load_models
    from .types import UserError
    try:
        _worker_models = load_models(checkpoint)
    except UserError as err:            # a bad checkpoint: every file says so, in one line
        _worker_error = f"the models could not be loaded: {err}"


def _run_one(path: str, out_dir: str, name: str) -> BatchItem:
    from .checkpoint import CheckpointError
    from .pipeline import analyze
    from .transcribe import TranscriptionError
    if _worker_error:
        return BatchItem(path, False, _worker_error)
    try:
        analysis = analyze(path, _worker_models)
    except (MediaError, CheckpointError, TranscriptionError) as err:
        return BatchItem(path, False, str(err))
    except Exception as err:            # one file must never stop the batch
        first = error_line(err) if str(err).strip() else ""
        return BatchItem(path, False, f"{type(err).__name__}: {first}".rstrip(": "))
    try:
        write_outputs(analysis, Path(out_dir) / name)
    except OSError as err:              # disk full, permission: one line, no path
        return BatchItem(path, False, os_error_line(err), output=name)
    return BatchItem(path, True, analysis.message or f"{len(analysis.utterances)} utterances", output=name)


def write_outputs(analysis: Analysis, stem: Path) -> None:
    """STEM.json (the whole analysis) and STEM.csv (one row per utterance, formula-safe cells);
    STEM is a name, not a suffix to replace (talk.mp4 -> talk.mp4.json). An OSError names the file."""
    for suffix, write in ((".json", lambda p: p.write_text(json.dumps(analysis.to_dict(), indent=1))),
                          (".csv", lambda p: write_csv(p, CSV_COLUMNS, analysis_rows(analysis),
                                                       lineterminator="\n"))):
        target = stem.parent / (stem.name + suffix)
        try:
            write(target)
        except OSError as err:
            with contextlib.suppress(OSError):      # no half-written output is left behind
                target.unlink(missing_ok=True)
            err.filename = target.name
            raise


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


def analyze_folder(folder: str | Path, out_dir: str | Path, jobs: int = 1,
                   checkpoint: str | None = None, progress: bool = True,
                   limits: Limits | None = None) -> list[BatchItem]:
    """Analyse every media file in `folder` with `jobs` worker processes sharing the CPU cores;
    files over `limits` (default: Limits.from_env()) or unreadable are reported, not analysed."""
    files, results = check_files(find_media(folder), limits or Limits.from_env())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not files:
        return sorted(results, key=lambda r: r.source)
    jobs = max(1, min(jobs, len(files)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    from tqdm import tqdm
    context = multiprocessing.get_context("spawn")      # fork after torch has threads can deadlock
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                             initargs=(checkpoint, threads)) as pool:
        names = output_names(files)
        futures = [pool.submit(_run_one, str(f), str(out), names[f]) for f in files]
        for fut in tqdm(as_completed(futures), total=len(futures), desc="videos", disable=not progress):
            results.append(fut.result())
    return sorted(results, key=lambda r: r.source)
