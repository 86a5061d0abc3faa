"""What the page shows of a session: the transcript table, the selected utterance's modalities,
the model banner, the list of earlier sessions. Pure functions returning plain data."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd

from core.labels import EMOTIONS, SENTIMENTS, unusual_pair

from . import checks
from .session import Session

TABLE_COLUMNS = ["id", "emotion", "sentiment", "confidence", "start", "end", "speaker", "text", "notes"]
TABLE_TYPES = ["str", "str", "str", "str", "number", "number", "str", "str", "str"]
COLUMN_WIDTHS = ["58px", "96px", "96px", "84px", "68px", "68px", "96px", "36%", "160px"]
EDITABLE_COLUMNS = {"start", "end", "speaker", "text", "emotion", "sentiment"}
STATIC_COLUMNS = [i for i, c in enumerate(TABLE_COLUMNS) if c not in EDITABLE_COLUMNS]
MODALITY_NAMES = {"text": "Text", "face": "Face", "audio": "Voice", "video": "Video"}
SELECTED_MARK = "▶ "
TABLE_PAGE = 500        # rows the table shows at once; a longer view is shown a page at a time
ORDERS = {"time": "in time order", "low": "lowest confidence first (review order)",
          "high": "highest confidence first"}
STATES = {"all": "all rows", "todo": "not corrected yet", "corrected": "corrected",
          "problems": "with a problem (⚠)"}


@dataclass(frozen=True)
class TableView:
    """How the table is ordered and filtered; the rows keep their ids (positions) whatever the view."""

    order: str = "time"          # a key of ORDERS
    emotion: str = ""            # "" = any
    state: str = "all"           # a key of STATES

    def describe(self, shown: int, total: int) -> str:
        if shown == total and self == TableView(order=self.order):
            return f"{total} utterances, {ORDERS.get(self.order, self.order)}"
        what = [STATES[self.state]] if self.state != "all" else []
        what += [f"labelled {self.emotion}"] if self.emotion else []
        return f"showing {shown} of {total} utterances ({', '.join(what) or 'all'}), {ORDERS.get(self.order, self.order)}"


def row_notes(session: Session) -> dict[int, list[str]]:
    """Per table id: what is wrong with the row (⚠ overlaps, a label pair MELD never has, what blocks
    an export, import problems)."""
    notes: dict[int, list[str]] = {}
    for issue in checks.overlaps(session) + checks.label_pairs(session) + checks.export_problems(session):
        notes.setdefault(issue.position, []).append(issue.message)
    for i, r in enumerate(session.rows):
        line = r.meta.get("line")
        if line and any(p.startswith(f"row {line}:") or p.startswith(f"row {line},") for p in session.problems):
            notes.setdefault(i, []).append(f"import problem (CSV row {line})")
        if r.error:
            notes.setdefault(i, []).append(r.error)
    return notes


def visible_positions(session: Session, view: TableView, notes: dict[int, list[str]] | None = None) -> list[int]:
    """The table ids shown under `view`, in its order."""
    notes = row_notes(session) if notes is None else notes
    keep = []
    for i, r in enumerate(session.rows):
        if view.emotion and r.emotion != view.emotion:
            continue
        if (view.state == "todo" and r.corrected) or (view.state == "corrected" and not r.corrected):
            continue
        if view.state == "problems" and i not in notes:
            continue
        keep.append(i)
    if view.order in ("low", "high"):
        sign = 1 if view.order == "low" else -1
        keep.sort(key=lambda i: (session.rows[i].confidence is None,
                                 sign * (session.rows[i].confidence or 0.0), i))
    return keep


def page(shown: list[int], selected: int | None, size: int = TABLE_PAGE) -> tuple[list[int], int]:
    """The page of `shown` (table ids in view order) that holds `selected` (else the first page),
    and the index in `shown` where it starts. Pages are fixed slices, so moving the selection
    within a page does not move the table."""
    if len(shown) <= size:
        return shown, 0
    k = shown.index(selected) if selected is not None and selected in shown else 0
    first = k // size * size
    return shown[first:first + size], first


def shown_positions(session: Session, view: TableView, selected: int | None) -> list[int]:
    """The table ids the table shows now: the page of the view holding the selected row."""
    return page(visible_positions(session, view), selected)[0]


def table_frame(session: Session | None, view: TableView = TableView(), selected: int | None = None) -> pd.DataFrame:
    """The transcript table under `view` (the page holding `selected`, a position, marked ▶)."""
    return table_page(session, view, selected)[0]


def table_page(session: Session | None, view: TableView = TableView(),
               selected: int | None = None) -> tuple[pd.DataFrame, str]:
    """The table (the page of the view holding `selected`) and the line that says what it shows."""
    rows = []
    if session is None:
        return pd.DataFrame(rows, columns=TABLE_COLUMNS), ""
    notes = row_notes(session)
    visible = visible_positions(session, view, notes)
    shown, first = page(visible, selected)
    for i in shown:
        r = session.rows[i]
        conf = f"{r.confidence:.2f}" if r.confidence is not None else "—"
        flags = edit_flags(r)
        note = ("✎ " + ", ".join(flags)) if flags else ("imported" if session.origin == "import" else "")
        if i in notes:
            note = (note + " ⚠ " + "; ".join(notes[i])).strip()[:160]
        rows.append([f"{SELECTED_MARK}{i}" if i == selected else str(i), r.emotion, r.sentiment, conf,
                     r.start, r.end, r.speaker, r.text, note])
    info = view.describe(len(visible), len(session.rows))
    if len(shown) < len(visible):
        info += (f"; rows {first + 1}–{first + len(shown)} of them are listed (the page with the selected "
                 "row; ↑/↓ past its edge or “Go to id” turns the page)")
    return pd.DataFrame(rows, columns=TABLE_COLUMNS), info


def parse_id(cell) -> int | None:
    """The position in a table id cell ("3" or "▶ 3")."""
    try:
        return int(str(cell).replace(SELECTED_MARK.strip(), "").strip())
    except (TypeError, ValueError):
        return None


def mix_markdown(session: Session | None) -> str:
    """The emotion and sentiment mix of the session, in counts and shares of its utterances."""
    if session is None or not session.rows:
        return ""
    def mix(values: list[str], labels: tuple[str, ...]) -> str:
        counts = Counter(v for v in values if v)
        total = max(1, len(values))
        return " · ".join(f"{name} {counts[name]} ({100 * counts[name] / total:.0f} %)"
                          for name in sorted(labels, key=lambda n: -counts[n]) if counts[name])
    emotions = mix([r.emotion for r in session.rows], EMOTIONS) or "—"
    sentiments = mix([r.sentiment for r in session.rows], SENTIMENTS) or "—"
    return f"**Mix** of {len(session.rows)} utterances — emotion: {emotions}  \n sentiment: {sentiments}"


def speakers(session: Session | None) -> list[str]:
    """The speakers already used in the session, most used first."""
    if session is None:
        return []
    counts = Counter(r.speaker for r in session.rows if r.speaker)
    return [name for name, _ in counts.most_common()]


def edit_flags(row) -> list[str]:
    """What the annotator changed, short: a split, merged or added row's times and text changed by
    construction, so only its structural edit and its label or speaker changes are listed."""
    flags = row.corrected_fields
    if row.ops:
        flags = list(dict.fromkeys(row.ops)) + [f for f in flags if f in ("emotion", "sentiment", "speaker")]
    return flags


def row_record(session: Session, position: int) -> dict[str, Any]:
    """The API's view of one utterance (`id` is its position, its Utterance_ID in the export)."""
    r = session.rows[position]
    return {"id": position, "start": r.start, "end": r.end, "speaker": r.speaker, "text": r.text,
            "emotion": r.emotion, "sentiment": r.sentiment,
            "confidence": None if r.confidence is None else round(r.confidence, 4),
            "model_emotion": r.model_emotion, "model_sentiment": r.model_sentiment,
            "corrected": r.corrected_fields, "error": r.error}


def table_records(session: Session) -> list[dict[str, Any]]:
    """The API's view of the table: one dict per utterance."""
    return [row_record(session, i) for i in range(len(session.rows))]


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
        lines.append(f"| **Fused** | {_top(r.emotion_probs, EMOTIONS)} · "
                     f"{_top(r.sentiment_probs, SENTIMENTS, 1)} | {_trained_note(session.model)} |")
    fixed = [f for f in ("emotion", "sentiment") if f in r.corrected_fields]
    who = "Annotator" if fixed or session.origin != "import" else "Imported label"
    status = "corrected" if fixed else "as predicted" if r.emotion_probs else ""
    unusual = unusual_pair(r.emotion, r.sentiment)
    lines.append(f"| **{who}** | **{r.emotion or '—'}**{' ✎' if 'emotion' in fixed else ''} · "
                 f"**{r.sentiment or '—'}**{' ✎' if 'sentiment' in fixed else ''} | "
                 f"{status}{' · ⚠ ' + unusual if unusual else ''} |")
    decided = decided_line(r.opinions)
    if decided:
        lines += ["", decided]
    if r.error:
        lines += ["", f"⚠ {r.error}"]
    return "\n".join(lines)


def decided_line(opinions: list[dict]) -> str:
    """In plain words: which modalities decided this utterance, where the voice and the words
    differ, and whether an unfamiliar-sounding voice was counted less."""
    used = [o for o in opinions if o.get("used_in_fusion") and o.get("present")]
    voice = next((o for o in opinions if o.get("modality") == "audio" and o.get("present")
                  and o.get("emotion_probs")), None)
    share = float(voice.get("fusion_share", 1.0)) if voice else 1.0
    if not used:
        return ""
    names = [PLAIN_NAMES.get(o["modality"], o["modality"]) for o in used]
    line = f"**Decided from** {_plain_list(names)}."
    top = {o["modality"]: EMOTIONS[max(range(len(o["emotion_probs"])), key=o["emotion_probs"].__getitem__)]
           for o in used if o.get("emotion_probs")}
    if "text" in top and "audio" in top and top["text"] != top["audio"]:
        line += f" The voice says **{top['audio']}**, the words say **{top['text']}**."
    if voice is not None and share < 0.995:
        counted = "was set aside" if share <= 0.005 else f"counted at {share:.0%} of its weight"
        line += (f" The voice {counted}: it sounds unlike the voices the voice model learned from "
                 "(a synthetic voice, music or noise?).")
    return line


def _trained_note(model: dict) -> str:
    return "" if model.get("trained") else "untrained model"


PLAIN_NAMES = {"text": "the words", "audio": "the voice", "face": "the face", "video": "the video"}


def _plain_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def model_banner(summary: dict) -> str:
    """One plain sentence: what the labels are decided from (details are in the Model panel)."""
    if not summary.get("trained"):
        return ("⚠️ The model is untrained: its labels are placeholders until you correct some, "
                "export them and retrain (see Model).")
    fused = [m for m in ("text", "audio", "face", "video") if m in summary.get("trained_modalities", [])]
    shown = [PLAIN_NAMES[m] for m in ("audio", "face") if m not in fused]
    return (f"Emotion and sentiment are decided from {_plain_list([PLAIN_NAMES[m] for m in fused]) or 'nothing'}"
            + (f"; what {_plain_list(shown)} {'says' if len(shown) == 1 else 'say'} on {'its' if len(shown) == 1 else 'their'} "
               "own is shown beside each utterance." if shown else ".")
            + " Details: Model.")


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
        counts = (f"{s['n_rows']} utt. · {s['n_corrected']} corrected" if s["n_rows"]
                  else "∅ empty: no speech found")
        out.append((f"{when} · {s['title']} · {counts}", s["id"]))
    return out


PROBLEM_COLUMNS = ["CSV row", "table id", "column", "problem"]


def problems_frame(session: Session | None) -> pd.DataFrame:
    """The import problems of a session, each with its CSV row and the table id of that row."""
    if session is None:
        return pd.DataFrame([], columns=PROBLEM_COLUMNS)
    by_line = {r.meta.get("line"): i for i, r in enumerate(session.rows) if r.meta.get("line")}
    rows = []
    for line in session.problems:
        head, _, message = line.partition(": ")
        if head.startswith("row ") and message:
            where, _, column = head.partition(", ")
            number = where[4:]
            table_id = by_line.get(int(number)) if number.isdigit() else None
            rows.append([number, "" if table_id is None else str(table_id), column or "(whole row)", message])
        else:
            rows.append(["", "", "", line])
    return pd.DataFrame(rows, columns=PROBLEM_COLUMNS)
