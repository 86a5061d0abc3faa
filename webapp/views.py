"""What the page shows of a session: the transcript table, the selected utterance's modalities,
the model banner, the list of earlier sessions. Pure functions returning plain data."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from core.labels import EMOTIONS, SENTIMENTS

from .session import Session

TABLE_COLUMNS = ["id", "start", "end", "speaker", "text", "emotion", "sentiment", "confidence", "edited"]
TABLE_TYPES = ["number", "number", "number", "str", "str", "str", "str", "str", "str"]
EDITABLE_COLUMNS = {"start", "end", "speaker", "text", "emotion", "sentiment"}
STATIC_COLUMNS = [i for i, c in enumerate(TABLE_COLUMNS) if c not in EDITABLE_COLUMNS]
MODALITY_NAMES = {"text": "Text", "face": "Face", "audio": "Audio", "video": "Video"}


def table_frame(session: Session | None) -> pd.DataFrame:
    rows = []
    for i, r in enumerate(session.rows if session else []):
        conf = f"{r.confidence:.2f}" if r.confidence is not None else "—"
        flags = edit_flags(r)
        edited = ("✎ " + ", ".join(flags)) if flags else ("imported" if session.origin == "import" else "")
        if r.error:
            edited = (edited + " ⚠ " + r.error)[:120]
        rows.append([i, r.start, r.end, r.speaker, r.text, r.emotion, r.sentiment, conf, edited])
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def edit_flags(row) -> list[str]:
    """What the annotator changed, short: a split, merged or added row's times and text changed by
    construction, so only its structural edit and its label or speaker changes are listed."""
    flags = row.corrected_fields
    if row.ops:
        flags = list(dict.fromkeys(row.ops)) + [f for f in flags if f in ("emotion", "sentiment", "speaker")]
    return flags


def table_records(session: Session) -> list[dict[str, Any]]:
    """The API's view of the table: one dict per utterance."""
    out = []
    for i, r in enumerate(session.rows):
        out.append({"id": i, "start": r.start, "end": r.end, "speaker": r.speaker, "text": r.text,
                    "emotion": r.emotion, "sentiment": r.sentiment,
                    "confidence": None if r.confidence is None else round(r.confidence, 4),
                    "model_emotion": r.model_emotion, "model_sentiment": r.model_sentiment,
                    "corrected": r.corrected_fields, "error": r.error})
    return out


def _top(probs: list[float], labels: tuple[str, ...], k: int = 2) -> str:
    if not probs:
        return "—"
    ranked = sorted(zip(labels, probs), key=lambda t: -t[1])[:k]
    return f"**{ranked[0][0]}** {ranked[0][1]:.2f}" + "".join(f", {n} {p:.2f}" for n, p in ranked[1:])


def detail_markdown(session: Session | None, position: int | None) -> str:
    """What text, face and audio each said about the selected utterance and what fusion decided."""
    if session is None or position is None or not (0 <= position < len(session.rows)):
        return "*Select an utterance in the table to see what each modality said.*"
    r = session.rows[position]
    span = (f"{r.start:.2f}–{r.end:.2f} s" if r.start is not None and r.end is not None else "no times")
    lines = [f"#### Utterance {position} · {span}", f"> {r.text}", "",
             "| | says | note |", "|---|---|---|"]
    if not r.opinions:
        lines.append("| *model* | — | imported row: no model opinion |")
    for o in r.opinions:
        name = MODALITY_NAMES.get(o["modality"], o["modality"])
        note = o.get("note") or ("" if o.get("present") else "absent")
        if o.get("present") and o.get("emotion_probs"):
            says = (f"{_top(o['emotion_probs'], EMOTIONS)} · {_top(o.get('sentiment_probs', []), SENTIMENTS, 1)}")
        else:
            says = "—"
        fused = "fused" if o.get("used_in_fusion") and o.get("present") else "not fused"
        lines.append(f"| {name} | {says} | {note}{' · ' if note else ''}{fused} |")
    if r.emotion_probs:
        lines.append(f"| **Fusion decided** | {_top(r.emotion_probs, EMOTIONS)} · "
                     f"{_top(r.sentiment_probs, SENTIMENTS, 1)} | {_trained_note(session.model)} |")
    fixed = [f for f in ("emotion", "sentiment") if f in r.corrected_fields]
    who = "Annotator" if fixed or session.origin != "import" else "Imported label"
    lines.append(f"| **{who}** | **{r.emotion or '—'}**{' ✎' if 'emotion' in fixed else ''} · "
                 f"**{r.sentiment or '—'}**{' ✎' if 'sentiment' in fixed else ''} | "
                 f"{'corrected' if fixed else 'as predicted' if r.emotion_probs else ''} |")
    if r.error:
        lines += ["", f"⚠ {r.error}"]
    return "\n".join(lines)


def _trained_note(model: dict) -> str:
    return "" if model.get("trained") else "untrained model"


def model_banner(summary: dict) -> str:
    """One paragraph saying plainly what the model is and what it was trained on."""
    face = ("The **face** column is the pretrained FER2013 face-expression net's own opinion "
            "(not trained by this project)")
    if not summary.get("trained"):
        return ("⚠️ **The fusion model is untrained**: its emotion and sentiment predictions are not "
                f"meaningful yet; correct them, export, and retrain. {face}.")
    modalities = list(summary.get("trained_modalities", []))
    scores = []
    for split in ("test", "dev"):
        m = summary.get("metrics", {}).get(split, {})
        if isinstance(m, dict) and "emotion_weighted_f1" in m:
            scores.append(f"{split}: emotion weighted F1 {m['emotion_weighted_f1']:.1f}"
                          + (f", sentiment {m['sentiment_weighted_f1']:.1f}" if "sentiment_weighted_f1" in m else ""))
    fused_face = "face" in modalities
    untrained = [m for m in ("text", "face", "audio") if m not in modalities]
    return (f"Fusion model **{summary.get('name', '?')}**, trained on **{', '.join(modalities)}**"
            + (f" ({'; '.join(scores)})" if scores else "") + ". "
            + f"{face}{', and it is fused' if fused_face else ', shown beside the fused result but not fused'}. "
            + (f"No trained head for {', '.join(untrained)}: not fused." if untrained else ""))


def status_markdown(session: Session | None, note: str = "") -> str:
    if session is None:
        return note or "Upload or record a video (or an audio file), or import a MELD CSV, to start."
    saved = time.strftime("%H:%M:%S", time.localtime(session.updated)) if session.updated else "—"
    parts = [f"**{session.title}** · {len(session.rows)} utterances · {session.corrected_count} corrected"
             f" · Dialogue_ID {session.dialogue_id} · saved {saved} (v{session.version})"]
    if session.message:
        parts.append(session.message)
    if note:
        parts.append(note)
    return "  \n".join(parts)


def session_choices(summaries: list[dict]) -> list[tuple[str, str]]:
    out = []
    for s in summaries:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["updated"]))
        out.append((f"{when} · {s['title']} · {s['n_rows']} utt. · {s['n_corrected']} corrected", s["id"]))
    return out


def problems_frame(lines: list[str]) -> pd.DataFrame:
    rows = []
    for line in lines:
        head, _, message = line.partition(": ")
        if head.startswith("row ") and message:
            where, _, column = head.partition(", ")
            rows.append([where[4:], column or "(whole row)", message])
        else:
            rows.append(["", "", line])
    return pd.DataFrame(rows, columns=["row", "column", "problem"])
