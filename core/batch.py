"""Analyse a folder of videos into one JSON and one CSV per video, on the cores it is given."""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .types import Analysis

MEDIA_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".wav", ".mp3", ".m4a", ".ogg", ".flac"}
CSV_COLUMNS = ["id", "start", "end", "text", "emotion", "emotion_confidence", "sentiment",
               "sentiment_confidence", "face_emotion", "face_confidence", "error"]

_worker_models = None


@dataclass
class BatchItem:
    source: str
    ok: bool
    message: str        # "N utterances", "No speech found…", or the one-line error


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
    from .media import MediaError
    from .meld import escape_cell
    from .pipeline import analyze
    try:
        analysis = analyze(path, _worker_models)
    except (MediaError, CheckpointError) as err:
        return BatchItem(path, False, str(err))
    stem = Path(out_dir) / Path(path).stem
    stem.with_suffix(".json").write_text(json.dumps(analysis.to_dict(), indent=1))
    frame = analysis_frame(analysis)
    frame["text"] = frame["text"].map(escape_cell)          # formula-safe for spreadsheets
    frame.to_csv(stem.with_suffix(".csv"), index=False)
    return BatchItem(path, True, analysis.message or f"{len(analysis.utterances)} utterances")


def analyze_folder(folder: str | Path, out_dir: str | Path, jobs: int = 1,
                   checkpoint: str | None = None, progress: bool = True) -> list[BatchItem]:
    """Analyse every media file in `folder` with `jobs` worker processes sharing the CPU cores."""
    files = find_media(folder)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = max(1, min(jobs, len(files) or 1))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    results: list[BatchItem] = []
    from tqdm import tqdm
    context = multiprocessing.get_context("spawn")      # fork after torch has threads can deadlock
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                             initargs=(checkpoint, threads)) as pool:
        futures = [pool.submit(_run_one, str(f), str(out)) for f in files]
        for fut in tqdm(as_completed(futures), total=len(futures), desc="videos", disable=not progress):
            results.append(fut.result())
    return sorted(results, key=lambda r: r.source)
