"""Analyse a folder of videos into one JSON and one CSV per video, on the cores it is given.

Every file is checked against the limits (core/limits.py) first, in this process and before any
worker loads a model: a file over a limit is skipped and reported by name, the others go on.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .limits import LimitError, Limits
from .media import MediaError
from .types import Analysis, error_line

MEDIA_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".wav", ".mp3", ".m4a", ".ogg", ".flac"}
CSV_COLUMNS = ["id", "start", "end", "text", "emotion", "emotion_confidence", "sentiment",
               "sentiment_confidence", "face_emotion", "face_confidence", "error"]

_worker_models = None


@dataclass
class BatchItem:
    source: str
    ok: bool
    message: str        # "N utterances", "No speech found…", or the one-line error
    skipped: bool = False   # refused by a limit before any analysis


def find_media(folder: str | Path) -> list[Path]:
    """Media files directly in `folder`, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)


def analysis_frame(analysis: Analysis) -> pd.DataFrame:
    """One flat row per utterance: what a spreadsheet user wants to see."""
    rows = []
    for p in analysis.utterances:
        face = p.opinion("face")
        face_ok = face is not None and face.present
        rows.append([p.index, round(p.utterance.start, 3), round(p.utterance.end, 3), p.utterance.text,
                     p.emotion, round(p.confidence, 4), p.sentiment,
                     round(max(p.sentiment_probs), 4) if p.sentiment_probs else None,
                     face.emotion if face_ok else "", round(max(face.emotion_probs), 4) if face_ok else None,
                     p.error])
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def _init_worker(checkpoint: str | None, threads: int) -> None:
    global _worker_models
    import torch
    torch.set_num_threads(threads)
    from .pipeline import load_models
    _worker_models = load_models(checkpoint)


def _run_one(path: str, out_dir: str) -> BatchItem:
    from .checkpoint import CheckpointError
    from .pipeline import analyze
    from .transcribe import TranscriptionError
    try:
        analysis = analyze(path, _worker_models)
    except (MediaError, CheckpointError, TranscriptionError) as err:
        return BatchItem(path, False, str(err))
    except Exception as err:            # one file must never stop the batch
        first = error_line(err) if str(err).strip() else ""
        return BatchItem(path, False, f"{type(err).__name__}: {first}".rstrip(": "))
    write_outputs(analysis, Path(out_dir) / Path(path).stem)
    return BatchItem(path, True, analysis.message or f"{len(analysis.utterances)} utterances")


def write_outputs(analysis: Analysis, stem: Path) -> None:
    """STEM.json (the whole analysis) and STEM.csv (one row per utterance, formula-safe cells)."""
    from .meld import escape_cell
    stem.with_suffix(".json").write_text(json.dumps(analysis.to_dict(), indent=1))
    frame = analysis_frame(analysis)
    for column in ("text", "error"):                       # free text: never run as a formula
        frame[column] = frame[column].map(lambda v: escape_cell(v) if isinstance(v, str) else v)
    frame.to_csv(stem.with_suffix(".csv"), index=False)


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
        futures = [pool.submit(_run_one, str(f), str(out)) for f in files]
        for fut in tqdm(as_completed(futures), total=len(futures), desc="videos", disable=not progress):
            results.append(fut.result())
    return sorted(results, key=lambda r: r.source)
