"""Export a session: the MELD CSV, and a zip of that CSV with one clip per utterance.

The CSV is written by core.meld.write_meld_csv (exact MELD columns, `h:mm:ss,mmm` times, cells
escaped against spreadsheet formula injection). Clips are cut by core.media.cut_clip at the
corrected boundaries and named `dia{D}_utt{U}.mp4`; a clip whose times did not change since the
last export is reused from the session's clip cache.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core import media
from core.meld import clip_name, write_meld_csv

from .session import Session, to_meld_rows

Progress = Callable[[float, str], None]


@dataclass
class ZipReport:
    path: Path
    clips: int = 0
    skipped: list[str] = field(default_factory=list)   # one line per utterance without a clip


def base_name(session: Session) -> str:
    stem = Path(session.source_name or session.title or "session").stem
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem).strip("_")[:40] or "session"
    return f"{stem}_dia{session.dialogue_id}"


def label_gaps(session: Session) -> list[str]:
    """One line per row a retraining run would skip or reject (no label, no time)."""
    gaps = []
    for i, r in enumerate(session.rows):
        missing = [n for n, v in (("emotion", r.emotion), ("sentiment", r.sentiment)) if not v]
        missing += [n for n, v in (("start", r.start), ("end", r.end)) if v is None]
        if missing:
            gaps.append(f"utterance {i}: no {', '.join(missing)}")
    return gaps


def export_csv(session: Session, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{base_name(session)}.csv"
    tmp = out.with_suffix(".csv.tmp")
    write_meld_csv(to_meld_rows(session), tmp)
    tmp.replace(out)
    return out


def export_zip(session: Session, source: Path | None, folder: Path,
               progress: Progress | None = None) -> ZipReport:
    """The CSV and the clips in one zip: `{base}/{base}.csv`, `{base}/clips/dia{D}_utt{U}.mp4`."""
    report_progress = progress or (lambda f, s: None)
    base = base_name(session)
    csv_path = export_csv(session, folder)
    cache = folder / "clip_cache"
    cache.mkdir(parents=True, exist_ok=True)
    report = ZipReport(folder / f"{base}.zip")
    tmp = report.path.with_suffix(".zip.tmp")
    n = len(session.rows)
    with zipfile.ZipFile(tmp, "w") as z:
        z.write(csv_path, f"{base}/{csv_path.name}", compress_type=zipfile.ZIP_DEFLATED)
        for i, row in enumerate(session.rows):
            report_progress(i / max(n, 1), f"cutting clip {i + 1} of {n}")
            name = clip_name(session.dialogue_id, i)
            if source is None:
                report.skipped.append(f"{name}: the session has no video or audio file")
                continue
            if row.start is None or row.end is None:
                report.skipped.append(f"{name}: utterance {i} has no start or end time")
                continue
            cached = cache / f"{round(row.start * 1000)}_{round(row.end * 1000)}.mp4"
            try:
                if not cached.is_file():
                    part = cached.with_name(cached.stem + ".part.mp4")
                    media.cut_clip(source, row.start, row.end, part)
                    part.replace(cached)
            except media.MediaError as err:
                report.skipped.append(f"{name}: {err}")
                continue
            z.write(cached, f"{base}/clips/{name}", compress_type=zipfile.ZIP_STORED)
            report.clips += 1
        if report.skipped:
            z.writestr(f"{base}/MISSING_CLIPS.txt", "\n".join(report.skipped) + "\n")
    tmp.replace(report.path)
    report_progress(1.0, "zip ready")
    return report
