"""The annotation session: utterance rows with the model's opinion and the annotator's corrections.

Everything here is a pure function on dataclasses: an edit takes a Session and returns a new one
(the input is never changed), or raises EditError with a one-line message saying why the value
was refused. The UI and the API both go through these functions; the store saves what they return.
An edit copies only the rows it changes (`_fork`): the new session shares every other Row object
with the old one, so one edit costs the same in a session of 20 rows or of 20,000, and the store
finds what changed by identity. Nothing may change a Session or a Row in place once it is saved.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from core.labels import EMOTIONS, SENTIMENTS
from core.meld import MeldRow, parse_time
from core.types import Analysis, UserError

EDITABLE = ("start", "end", "speaker", "text", "emotion", "sentiment")
MIN_LENGTH = 0.05        # seconds: the shortest utterance an edit may leave
MAX_SPEAKER = 80
MAX_TEXT = 2000
NEW_TEXT = "(new utterance: type its words)"   # an added row's text until someone types it
CUE_SETTINGS = "line:78% align:center"         # subtitles sit above the player's controls, not under them


class EditError(UserError, ValueError):
    """A correction was refused; the message (one line) says why."""


@dataclass
class Row:
    """One utterance. `original` holds what the model (or the imported file) said, so that the
    fields the annotator changed can always be told apart (`corrected_fields`)."""

    uid: int                                   # stable within the session (positions shift)
    start: float | None
    end: float | None
    text: str
    speaker: str = ""
    emotion: str = ""
    sentiment: str = ""
    emotion_probs: list[float] = field(default_factory=list)     # the fused model's ([] if imported)
    sentiment_probs: list[float] = field(default_factory=list)
    opinions: list[dict[str, Any]] = field(default_factory=list)  # core.types.ModalityOpinion dicts
    original: dict[str, Any] = field(default_factory=dict)
    ops: list[str] = field(default_factory=list)                  # "split", "merged"
    meta: dict[str, Any] = field(default_factory=dict)            # season, episode, sr_no (import)
    error: str = ""

    @property
    def corrected_fields(self) -> list[str]:
        changed = [f for f in EDITABLE if getattr(self, f) != self.original.get(f)]
        return changed + [op for op in dict.fromkeys(self.ops)]

    @property
    def corrected(self) -> bool:
        return bool(self.corrected_fields)

    @property
    def model_emotion(self) -> str:
        return EMOTIONS[_argmax(self.emotion_probs)] if self.emotion_probs else ""

    @property
    def model_sentiment(self) -> str:
        return SENTIMENTS[_argmax(self.sentiment_probs)] if self.sentiment_probs else ""

    @property
    def confidence(self) -> float | None:
        return max(self.emotion_probs) if self.emotion_probs else None

    def shown_emotion_probs(self) -> list[float]:
        """What the chart draws: the model's distribution while its label stands, else the
        annotator's (or the imported) label with certainty."""
        if self.emotion_probs and self.emotion == self.model_emotion:
            return list(self.emotion_probs)
        return _one_hot(self.emotion, EMOTIONS)

    def shown_sentiment_probs(self) -> list[float]:
        if self.sentiment_probs and self.sentiment == self.model_sentiment:
            return list(self.sentiment_probs)
        return _one_hot(self.sentiment, SENTIMENTS)


@dataclass
class Session:
    """One video (or audio file, or imported CSV) and its utterances: one MELD dialogue."""

    id: str
    title: str
    origin: str = "analysis"                  # "analysis" or "import"
    media: str = ""                           # playable media, relative to the data folder
    source: str = ""                          # media the clips are cut from, relative likewise
    source_name: str = ""                     # the file name as uploaded
    duration: float = 0.0
    has_video: bool = False
    dialogue_id: int = 0
    model: dict[str, Any] = field(default_factory=dict)   # checkpoint summary
    message: str = ""                         # e.g. "No speech found ..."
    problems: list[str] = field(default_factory=list)     # import problems, one line each
    rows: list[Row] = field(default_factory=list)
    next_uid: int = 0
    created: float = 0.0
    updated: float = 0.0
    version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Session":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "rows"}
        rows = [Row(**{k: v for k, v in r.items() if k in Row.__dataclass_fields__})
                for r in d.get("rows", [])]
        return cls(**known, rows=rows)

    def position(self, uid: int) -> int:
        for i, row in enumerate(self.rows):
            if row.uid == uid:
                return i
        raise EditError(f"utterance {uid} is not in this session any more (reload the page)")

    def row(self, uid: int) -> Row:
        return self.rows[self.position(uid)]

    @property
    def corrected_count(self) -> int:
        return sum(r.corrected for r in self.rows)


# ------------------------------------------------------------------ building sessions

def from_analysis(analysis: Analysis, session_id: str, title: str, dialogue_id: int = 0) -> Session:
    rows = []
    for i, pred in enumerate(analysis.utterances):
        u = pred.utterance
        row = Row(uid=i, start=round(u.start, 3), end=round(u.end, 3), text=u.text.strip(),
                  speaker=u.speaker, emotion=pred.emotion, sentiment=pred.sentiment,
                  emotion_probs=list(pred.emotion_probs), sentiment_probs=list(pred.sentiment_probs),
                  opinions=[asdict(o) for o in pred.opinions], error=pred.error)
        row.original = {f: getattr(row, f) for f in EDITABLE}
        rows.append(row)
    return Session(id=session_id, title=title, duration=analysis.media.duration,
                   has_video=analysis.media.has_video, dialogue_id=dialogue_id,
                   model=dict(analysis.model), message=analysis.message, rows=rows,
                   next_uid=len(rows))


def from_meld_rows(rows: list[MeldRow], session_id: str, title: str, dialogue_id: int) -> Session:
    out = []
    for i, m in enumerate(rows):
        row = Row(uid=i, start=m.start, end=m.end, text=m.utterance, speaker=m.speaker,
                  emotion=m.emotion, sentiment=m.sentiment,
                  meta={"season": m.season, "episode": m.episode, "sr_no": m.sr_no,
                        "line": m.line or None})
        row.original = {f: getattr(row, f) for f in EDITABLE}
        out.append(row)
    return Session(id=session_id, title=title, origin="import", dialogue_id=dialogue_id,
                   rows=out, next_uid=len(out))


def to_meld_rows(session: Session) -> list[MeldRow]:
    """The rows as MELD writes them: one Dialogue_ID, Utterance_ID = position from 0."""
    return [MeldRow(utterance=r.text, speaker=r.speaker, emotion=r.emotion, sentiment=r.sentiment,
                    dialogue_id=session.dialogue_id, utterance_id=i,
                    season=r.meta.get("season"), episode=r.meta.get("episode"),
                    start=r.start, end=r.end, sr_no=i + 1)
            for i, r in enumerate(session.rows)]


# ------------------------------------------------------------------ edits

MAX_SECONDS = 30 * 86400       # no media lasts longer; bigger numbers are mistakes or abuse


def parse_seconds(value: Any) -> float:
    """Seconds from a number, "12.5", "12,5" or "0:00:12,500"; EditError otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value if value is not None else "").strip()
        try:
            seconds = parse_time(text) if ":" in text else float(text.replace(",", "."))
        except ValueError:
            raise EditError(f"{text[:40]!r} is not a time: use seconds (12.5) or h:mm:ss,mmm") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise EditError(f"{str(value)[:40]!r} is not a time: it must be a number of seconds >= 0")
    if seconds > MAX_SECONDS:
        raise EditError(f"{str(value)[:40]!r} is not a time: more than {MAX_SECONDS // 86400} days")
    return round(seconds, 3)


def _label(value: Any, labels: tuple[str, ...], kind: str) -> str:
    key = str(value if value is not None else "").strip().lower()
    if key not in labels:
        raise EditError(f"{str(value)[:40]!r} is not {kind}: choose one of {', '.join(labels)}")
    return key


def _clean_text(value: Any, limit: int) -> str:
    text = " ".join(str(value if value is not None else "").split())
    return text[:limit]


def set_field(session: Session, uid: int, name: str, value: Any) -> Session:
    """A new session with one field of one utterance changed, or EditError."""
    if name not in EDITABLE:
        raise EditError(f"{name!r} cannot be edited; editable: {', '.join(EDITABLE)}")
    new, row = _fork(session, uid)
    if name == "emotion":
        row.emotion = _label(value, EMOTIONS, "an emotion")
    elif name == "sentiment":
        row.sentiment = _label(value, SENTIMENTS, "a sentiment")
    elif name == "speaker":
        row.speaker = _clean_text(value, MAX_SPEAKER)
    elif name == "text":
        text = _clean_text(value, MAX_TEXT)
        if not text:
            raise EditError("the text cannot be empty (merge the utterance into a neighbour instead)")
        row.text = text
    else:
        seconds = parse_seconds(value)
        start, end = (seconds, row.end) if name == "start" else (row.start, seconds)
        _check_span(new, start, end)
        setattr(row, name, seconds)
    return new


def _check_span(session: Session, start: float | None, end: float | None) -> None:
    limit = session.duration
    for label, t in (("start", start), ("end", end)):
        if t is not None and limit > 0 and t > limit + 0.001:
            raise EditError(f"{label} {t:.3f} s is past the end of the media ({limit:.3f} s)")
    if start is not None and end is not None and end - start < MIN_LENGTH:
        raise EditError(f"start ({start:.3f} s) must be at least {MIN_LENGTH} s before end ({end:.3f} s)")


def split_row(session: Session, uid: int, at: Any = None) -> Session:
    """Split an utterance in two at `at` seconds (default: its middle). The words are shared out in
    proportion to the time; both halves keep the labels and are marked as split."""
    new, row = _fork(session, uid)
    i = new.position(uid)
    if row.start is None or row.end is None:
        raise EditError("set the start and end times before splitting this utterance")
    t = round((row.start + row.end) / 2, 3) if at in (None, "") else parse_seconds(at)
    if not (row.start + MIN_LENGTH <= t <= row.end - MIN_LENGTH):
        raise EditError(f"split point {t:.3f} s is not inside the utterance "
                        f"({row.start:.3f}–{row.end:.3f} s)")
    words = row.text.split()
    if len(words) < 2:
        raise EditError("a one-word utterance cannot be split; edit its times instead")
    k = min(max(1, round(len(words) * (t - row.start) / (row.end - row.start))), len(words) - 1)
    second = copy.deepcopy(row)
    second.uid, new.next_uid = new.next_uid, new.next_uid + 1
    row.end, row.text = t, " ".join(words[:k])
    second.start, second.text = t, " ".join(words[k:])
    second.meta = {**row.meta, "sr_no": None}
    for half in (row, second):
        half.ops.append("split")
    new.rows.insert(i + 1, second)
    return new


def merge_next(session: Session, uid: int) -> tuple[Session, str]:
    """Merge an utterance with the one after it; returns the new session and a note for the user."""
    new, a = _fork(session, uid)
    i = new.position(uid)
    if i + 1 >= len(new.rows):
        raise EditError("this is the last utterance: there is nothing after it to merge with")
    b = new.rows.pop(i + 1)
    notes = []
    starts = [t for t in (a.start, b.start) if t is not None]
    ends = [t for t in (a.end, b.end) if t is not None]
    da, db = _duration(a), _duration(b)
    a.start, a.end = (min(starts) if starts else None), (max(ends) if ends else None)
    a.text = f"{a.text} {b.text}".strip()
    if b.speaker and a.speaker and b.speaker != a.speaker:
        notes.append(f"speakers differed ({a.speaker} / {b.speaker}): kept {a.speaker}")
    a.speaker = a.speaker or b.speaker
    if a.emotion_probs and b.emotion_probs:
        a.emotion_probs = _mix(a.emotion_probs, b.emotion_probs, da, db)
        a.sentiment_probs = _mix(a.sentiment_probs, b.sentiment_probs, da, db)
    for name in ("emotion", "sentiment"):
        va, vb = getattr(a, name), getattr(b, name)
        if va != vb and vb:
            notes.append(f"{name} differed ({va or '—'} / {vb}): kept {va or vb}, check it")
            setattr(a, name, va or vb)
    a.ops = a.ops + b.ops + ["merged"]
    a.error = "; ".join(e for e in (a.error, b.error) if e)
    return new, "; ".join(notes)


def add_row(session: Session, after_uid: int | None) -> tuple[Session, int]:
    """A new utterance after `after_uid` (None: at the start), filling the gap there (at most 2 s,
    at least MIN_LENGTH), with a placeholder text and no labels. Returns (session, new uid)."""
    new, _ = _fork(session)
    i = -1 if after_uid is None else new.position(after_uid)
    before = new.rows[i] if i >= 0 else None
    after = new.rows[i + 1] if i + 1 < len(new.rows) else None
    start = before.end if before and before.end is not None else 0.0
    limit = (after.start if after and after.start is not None else
             new.duration if new.duration > 0 else start + 2.0)
    end = round(min(start + 2.0, limit), 3)
    if end - start < MIN_LENGTH:
        raise EditError("there is no room after this utterance: shorten it or its neighbour first")
    row = Row(uid=new.next_uid, start=round(start, 3), end=end, text=NEW_TEXT,
              ops=["added"], meta={"season": (before or after).meta.get("season") if (before or after) else None,
                                   "episode": (before or after).meta.get("episode") if (before or after) else None})
    row.original = {f: getattr(row, f) for f in EDITABLE}
    new.next_uid += 1
    new.rows.insert(i + 1, row)
    return new, row.uid


def delete_row(session: Session, uid: int) -> Session:
    new, _ = _fork(session)
    new.rows.pop(new.position(uid))
    return new


def set_dialogue_id(session: Session, value: Any) -> Session:
    try:
        number = int(float(str(value).strip()))
    except ValueError:
        raise EditError(f"{value!r} is not a Dialogue_ID: use a whole number >= 0") from None
    if number < 0:
        raise EditError("Dialogue_ID must be >= 0")
    return replace(session, dialogue_id=number, rows=list(session.rows))


def _fork(session: Session, uid: int | None = None) -> tuple[Session, Row | None]:
    """A new session sharing the old one's rows, with a fresh copy of row `uid` (if given) in its
    place: the only row the caller may change. Returns (session, that row or None)."""
    new = replace(session, rows=list(session.rows))
    if uid is None:
        return new, None
    i = new.position(uid)
    new.rows[i] = copy.deepcopy(new.rows[i])
    return new, new.rows[i]


# ------------------------------------------------------------------ subtitles

def vtt_text(session: Session) -> str:
    """WebVTT cues for the utterances, each with its current labels."""
    def stamp(t: float) -> str:
        ms = round(t * 1000)
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"
    cues = ["WEBVTT", ""]
    for i, r in enumerate(session.rows):
        if r.start is None or r.end is None or r.end <= r.start:
            continue
        who = f"{r.speaker}: " if r.speaker else ""
        label = " · ".join(x for x in (r.emotion, r.sentiment) if x)
        text = re.sub(r"-->", "→", f"{who}{r.text}" + (f"  [{label}]" if label else ""))
        cues += [str(i), f"{stamp(r.start)} --> {stamp(r.end)} {CUE_SETTINGS}", text, ""]
    return "\n".join(cues)


def _duration(row: Row) -> float:
    return max(0.0, row.end - row.start) if row.start is not None and row.end is not None else 0.0


def _mix(p: list[float], q: list[float], wp: float, wq: float) -> list[float]:
    if wp + wq <= 0:
        wp = wq = 1.0
    return [(a * wp + b * wq) / (wp + wq) for a, b in zip(p, q)]


def _one_hot(label: str, labels: tuple[str, ...]) -> list[float]:
    return [1.0 if x == label else 0.0 for x in labels]


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)
