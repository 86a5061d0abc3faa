"""Whisper's segments -> utterances a person can label: cut at pauses and, when long, at sentence
ends, then at pauses and clause boundaries; each edge snapped to the speech around its words.

An utterance is a run of words with no pause of SPLIT_PAUSE or more inside it; one whose words
span more than MAX_WORDS_SPAN is cut at its sentence ends, and a piece still too long at its best
boundary (a long pause, a clause boundary, near the middle), until every piece fits, unless one
word runs on. Every piece keeps its own words with Whisper's times; nothing is re-transcribed.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_SECONDS = 12.0            # no utterance runs past this (unless one word does)
MAX_WORDS_SPAN = 11.0         # words spanning more than this are cut (the edges add padding)
MIN_PART = 1.0                # seconds: a cut never leaves a piece shorter than this
SPLIT_PAUSE = 0.7             # a pause this long inside a Whisper segment starts a new utterance
MERGE_PAUSE = 0.3             # segments cut mid-sentence with a shorter pause are joined
SNAP_REACH = 1.0              # seconds around Whisper's words searched for speech edges
PAD = 0.15                    # seconds of context kept before and after the detected speech
WORD_SLACK = 0.6              # Whisper's word times are often up to 0.5 s off; words further out
                              # than this are speech the detector missed: the utterance reaches them
MIN_REGION = 0.06             # seconds; shorter speech regions are ignored when snapping
SENTENCE_END = ".!?…。？！"
CLAUSE_END = ",;:–—"
CLAUSE_WORDS = {"and", "but", "so", "because", "or", "then", "which", "while", "although", "though",
                "if", "when", "whereas", "yet", "since", "unless", "until"}
CLAUSE_BONUS = 0.3            # a clause boundary counts like this many seconds of pause
BALANCE_WEIGHT = 0.5          # penalty for a cut at the piece's edge rather than its middle

Region = tuple[float, float]


@dataclass
class Piece:
    """A run of Whisper words that becomes one utterance, with the segment it came from."""

    words: list[dict]
    segment: dict

    @property
    def text(self) -> str:
        return "".join(w["word"] for w in self.words).strip()

    @property
    def start(self) -> float:
        return float(self.words[0]["start"])

    @property
    def end(self) -> float:
        return float(self.words[-1]["end"])


def gaps(regions: list[Region], duration: float) -> list[Region]:
    """The silences between speech regions (and before the first, after the last)."""
    edges = [0.0] + [t for r in regions for t in r] + [duration]
    return [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b > a]


def overlap(regions: list[Region], start: float, end: float) -> float:
    """Seconds of `regions` inside [start, end]."""
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in regions)


def _mid(word: dict) -> float:
    return (float(word["start"]) + float(word["end"])) / 2.0


def _pause_between(left: dict, right: dict, silences: list[Region]) -> Region | None:
    """The longest silence whose centre lies between the two words' midpoints."""
    lo, hi = _mid(left), _mid(right)
    inside = [g for g in silences if lo <= (g[0] + g[1]) / 2.0 <= hi]
    return max(inside, key=lambda g: g[1] - g[0]) if inside else None


def _pause_length(left: dict, right: dict, silences: list[Region]) -> float:
    pause = _pause_between(left, right, silences)
    heard = pause[1] - pause[0] if pause else 0.0
    return max(heard, float(right["start"]) - float(left["end"]))


def pieces(segments: list[dict], silences: list[Region]) -> list[Piece]:
    """Split Whisper segments at long pauses and long ones at sentence ends, pauses and clauses;
    join segments cut mid-sentence without a pause."""
    found: list[Piece] = []
    for seg in segments:
        words = [w for w in seg.get("words") or [] if w.get("word", "").strip()]
        if not words:
            words = [{"word": seg["text"], "start": seg["start"], "end": seg["end"]}]
        current = [words[0]]
        for left, right in zip(words, words[1:]):
            if _pause_length(left, right, silences) >= SPLIT_PAUSE:
                found.append(Piece(current, seg))
                current = []
            current.append(right)
        found.append(Piece(current, seg))
    joined: list[Piece] = []
    for piece in found:
        prev = joined[-1] if joined else None
        if prev and prev.segment is not piece.segment and not prev.text.endswith(tuple(SENTENCE_END)):
            pause = _pause_between(prev.words[-1], piece.words[0], silences)
            if pause is None or pause[1] - pause[0] < MERGE_PAUSE:
                joined[-1] = Piece(prev.words + piece.words, prev.segment)
                continue
        joined.append(piece)
    return [part for piece in joined for part in split_long(piece, silences)]


def split_long(piece: Piece, silences: list[Region], limit: float = MAX_WORDS_SPAN) -> list[Piece]:
    """`piece` cut until no part's words span more than `limit` seconds: at its sentence ends first,
    then, in a part still too long, at the boundary with the longest pause (a clause boundary
    counts CLAUSE_BONUS seconds), nearest the middle; never leaving a part under MIN_PART."""
    if piece.end - piece.start <= limit or len(piece.words) < 2:
        return [piece]
    ends = [i for i in range(1, len(piece.words)) if _ends_sentence(piece.words[i - 1])]
    parts = _cut(piece, _keep_apart(piece, ends))
    if len(parts) > 1:
        return [p for part in parts for p in split_long(part, silences, limit)]
    best = _best_cut(piece, silences)
    if best is None:
        return [piece]
    return [p for part in _cut(piece, [best]) for p in split_long(part, silences, limit)]


def _ends_sentence(word: dict) -> bool:
    return word["word"].strip().endswith(tuple(SENTENCE_END))


def _keep_apart(piece: Piece, cuts: list[int]) -> list[int]:
    """The cuts (word indices) that leave no part shorter than MIN_PART, from left to right."""
    kept, last = [], piece.start
    for i in cuts:
        if float(piece.words[i - 1]["end"]) - last >= MIN_PART and \
                piece.end - float(piece.words[i]["start"]) >= MIN_PART:
            kept.append(i)
            last = float(piece.words[i]["start"])
    return kept


def _cut(piece: Piece, cuts: list[int]) -> list[Piece]:
    bounds = [0] + cuts + [len(piece.words)]
    return [Piece(piece.words[a:b], piece.segment) for a, b in zip(bounds, bounds[1:]) if b > a]


def _best_cut(piece: Piece, silences: list[Region]) -> int | None:
    """The word index to cut before: longest pause plus clause bonus, less an imbalance penalty."""
    half = (piece.end - piece.start) / 2.0
    middle = piece.start + half
    best, best_score = None, float("-inf")
    for i in range(1, len(piece.words)):
        left, right = piece.words[i - 1], piece.words[i]
        if float(left["end"]) - piece.start < MIN_PART or piece.end - float(right["start"]) < MIN_PART:
            continue
        clause = left["word"].strip().endswith(tuple(CLAUSE_END)) or \
            right["word"].strip().lower().strip(",.!?") in CLAUSE_WORDS
        at = (float(left["end"]) + float(right["start"])) / 2.0
        score = (_pause_length(left, right, silences) + CLAUSE_BONUS * clause
                 - BALANCE_WEIGHT * abs(at - middle) / max(half, 1e-6))
        if score > best_score:
            best, best_score = i, score
    return best


def bounds(found: list[Piece], regions: list[Region], silences: list[Region],
           duration: float) -> list[Region]:
    """Snap each piece to the speech detected near its words, never crossing into its neighbours
    nor running past MAX_SECONDS when its words fit in it."""
    cuts = [0.0]
    for left, right in zip(found, found[1:]):
        pause = _pause_between(left.words[-1], right.words[0], silences)
        cut = (pause[0] + pause[1]) / 2.0 if pause else (left.end + right.start) / 2.0
        cuts.append(min(max(cut, cuts[-1]), duration))
    cuts.append(duration)
    out = []
    for piece, lo, hi in zip(found, cuts, cuts[1:]):
        near = [(max(a, lo), min(b, hi)) for a, b in regions
                if b > piece.start - SNAP_REACH and a < piece.end + SNAP_REACH]
        near = [(a, b) for a, b in near if b - a >= MIN_REGION]
        if near:
            start, end = max(lo, near[0][0] - PAD), min(hi, near[-1][1] + PAD)
            if piece.start < start - WORD_SLACK:
                start = max(lo, piece.start)
            if piece.end > end + WORD_SLACK:
                end = min(hi, piece.end)
        else:  # no speech found nearby: keep Whisper's times
            start, end = max(lo, piece.start), min(hi, piece.end)
        if end - start > MAX_SECONDS:            # snapped too far out: back towards the words
            start = max(start, min(piece.start - PAD, end - MAX_SECONDS))
            end = min(end, max(piece.end + PAD, start + MAX_SECONDS))
        out.append((max(0.0, start), min(duration, end)))
    return out
