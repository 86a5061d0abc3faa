"""Nothing real dropped: find the speech Whisper's first pass left out or lost track of, decode it
again on its own, and put the new words in place.

Decoding a 28-s window at once, Whisper sometimes ends early and never transcribes the speech after
its last word, or skips a sentence said twice and stretches one word over the pause where it
should be (seen on acted clips: "the" lasting 3.3 s across a 1.2-s silence). The voice-activity
regions show both: detected speech that no word covers, and a word that spans a whole pause.
Those stretches are decoded again in windows of their own; where the new pass hears more words
(or as many, more confidently), they replace the old ones there.
"""

from __future__ import annotations

from typing import Callable

from .vad import join_regions

SPLIT_PAUSE = 0.7             # pauses this long separate chunks of speech (core.utterances)
WORD_REACH = 0.2              # seconds either side of a word that count as covered by it
MIN_UNHEARD = 0.4             # seconds of uncovered speech worth a second look
RETRY_PAD = 0.5               # seconds of audio kept around unheard speech
ROUNDS = 2
NO_TIME = 0.02                # a word shorter than this (seconds) was given no time by the alignment
CRAMMED_WORDS = 2             # a segment starting or ending with this many such words is not where it says
GUESS = 0.1                   # a second look's segment with no word Whisper gives this probability is a guess

Region = tuple[float, float]


def _words(segments: list[dict]) -> list[dict]:
    return [w for s in segments for w in (s.get("words") or [s])]


def _mid(word: dict) -> float:
    return (float(word["start"]) + float(word["end"])) / 2.0


def chunks(regions: list[Region]) -> list[Region]:
    """Speech regions joined across pauses shorter than SPLIT_PAUSE."""
    return join_regions(regions, SPLIT_PAUSE)


def crammed(segment: dict) -> bool:
    """True for a segment the word alignment could not place: it starts or ends with CRAMMED_WORDS
    or more words that last no time. Whisper writes such text when it has skipped a sentence said
    again and catches up later: two copies of the sentence squeezed onto one clip, the first
    ending and the second starting with words at one instant. Two quick words inside a real
    sentence can get no time under noise too ("... be there in a minute": "in a"); such a segment,
    its words placed on both sides of them, is kept (decoding it again only made it worse)."""
    timed = [float(w["end"]) - float(w["start"]) >= NO_TIME for w in segment.get("words") or []]
    lead = next((i for i, t in enumerate(timed) if t), len(timed))
    tail = next((i for i, t in enumerate(reversed(timed)) if t), len(timed))
    return max(lead, tail) >= CRAMMED_WORDS


def guessed(segment: dict) -> bool:
    """True for a segment whose every word Whisper itself gives less than GUESS probability. The
    second look decodes speech the first pass left without words, often the drawn-out tail of a
    word already heard (a fearful "door!" under AAC: "for", word probability 0.02); such a guess is
    not speech recovered. Real speech recovered there read 0.96-0.98 on average (the benchmark's
    hearing recordings and one sentence said 14 times). A word without a probability counts as sure."""
    words = segment.get("words") or []
    return bool(words) and max(float(w.get("probability", 1.0)) for w in words) < GUESS


def unheard(regions: list[Region], segments: list[dict]) -> list[Region]:
    """Stretches of detected speech at least MIN_UNHEARD long that no transcribed word covers."""
    heard = sorted((float(w["start"]) - WORD_REACH, float(w["end"]) + WORD_REACH) for w in _words(segments))
    out = []
    for a, b in regions:
        t = a
        for lo, hi in heard:
            if hi <= t or lo >= b:
                continue
            if lo - t >= MIN_UNHEARD:
                out.append((t, lo))
            t = max(t, hi)
        if b - t >= MIN_UNHEARD:
            out.append((t, b))
    return out


def lost_track(regions: list[Region], segments: list[dict]) -> list[int]:
    """Indices of the speech chunks on either side of a pause that one word spans whole."""
    found = chunks(regions)
    spanned = set()
    for w in _words(segments):
        start, end = float(w["start"]), float(w["end"])
        for i, ((_, b), (a2, _)) in enumerate(zip(found, found[1:])):
            if start <= b and end >= a2:
                spanned.update((i, i + 1))
    return sorted(spanned)


def spans_to_redo(regions: list[Region], segments: list[dict], duration: float) -> list[Region]:
    """Where to decode again: unheard speech, padded but never reaching into words heard around it,
    and whole chunks where Whisper lost track, each up to the middle of the pauses around it."""
    words = _words(segments)
    ends, starts = [float(w["end"]) for w in words], [float(w["start"]) for w in words]
    spans = []
    for a, b in unheard(regions, segments):
        lo = max([0.0, a - RETRY_PAD] + [e for e in ends if e <= a + WORD_REACH])
        hi = min([duration, b + RETRY_PAD] + [s for s in starts if s >= b - WORD_REACH])
        spans.append((lo, hi))
    found = chunks(regions)
    for i in lost_track(regions, segments):
        lo = (found[i - 1][1] + found[i][0]) / 2.0 if i > 0 else max(0.0, found[i][0] - RETRY_PAD)
        hi = (found[i][1] + found[i + 1][0]) / 2.0 if i + 1 < len(found) else min(duration, found[i][1] + RETRY_PAD)
        spans.append((lo, hi))
    spans = [_whole(lo, hi, segments) for lo, hi in spans]
    merged: list[list[float]] = []
    for lo, hi in sorted(spans):
        if merged and lo < merged[-1][1] - 1e-6:     # overlapping; chunks that only touch stay apart
            merged[-1][1] = max(merged[-1][1], hi)
        elif hi > lo:
            merged.append([lo, hi])
    return [(round(a, 2), round(b, 2)) for a, b in merged]


def _whole(lo: float, hi: float, segments: list[dict]) -> Region:
    """[lo, hi] grown over any segment whose words lie on both sides of it: new words never land
    in the middle of a sentence already heard (Whisper skipped a repeat and spread one sentence
    over two clips, "Kids are talking ... by the door" around the other clip's "Kids are talking");
    that sentence is decoded again whole."""
    for seg in segments:
        words = seg.get("words") or []
        if words and float(words[0]["start"]) < lo and float(words[-1]["end"]) > hi:
            lo, hi = min(lo, float(words[0]["start"])), max(hi, float(words[-1]["end"]))
    return lo, hi


def straddles(segment: dict, spans: list[Region]) -> bool:
    """True for a second look's segment that lies in no one span it was asked for (within
    WORD_REACH): the spans are decoded laid end to end with silence between (core.packing), and no
    speech crosses that silence. Seen on one sentence said 14 times: "Kids are talking by the
    door." placed from 32.7 to 50.9 s across two spans, burying three clips heard right."""
    start, end = float(segment["start"]), float(segment["end"])
    return not any(lo - WORD_REACH <= start and end <= hi + WORD_REACH for lo, hi in spans)


def _inside(segment: dict, lo: float, hi: float, keep: bool) -> dict | None:
    """`segment` with only its words whose middle lies inside [lo, hi) (keep=True) or outside."""
    words = segment.get("words")
    if not words:
        return segment if (lo <= _mid(segment) < hi) == keep else None
    kept = [w for w in words if (lo <= _mid(w) < hi) == keep]
    if not kept:
        return None
    return segment if len(kept) == len(words) else dict(segment, words=kept,
                                                        start=kept[0]["start"], end=kept[-1]["end"])


def _better(new: list[dict], old: list[dict]) -> bool:
    """More words, or as many and more confident ones (Whisper's mean log-probability)."""
    n_new, n_old = len(_words(new)), len(_words(old))
    if n_new != n_old or not n_new:
        return n_new > n_old

    def confidence(segments: list[dict]) -> float:
        return min(float(s.get("avg_logprob", 0.0)) for s in segments)
    return confidence(new) > confidence(old)


def replace(segments: list[dict], new: list[dict], spans: list[Region]) -> list[dict]:
    """In each span, the new pass's words instead of the old ones where they are better (_better)."""
    for lo, hi in spans:
        old_here = [s for s in (_inside(s, lo, hi, True) for s in segments) if s]
        new_here = [s for s in (_inside(s, lo, hi, True) for s in new) if s]
        if not _better(new_here, old_here):
            continue
        segments = [s for s in (_inside(s, lo, hi, False) for s in segments) if s] + new_here
    return sorted(segments, key=lambda s: float(s["start"]))


def _usable(segments: list[dict]) -> list[dict]:
    """A second look's segments without the crammed ones and the guesses."""
    return [s for s in segments if not (crammed(s) or guessed(s))]


def second_look(decode: Callable[[list[Region]], list[dict]], regions: list[Region],
                segments: list[dict], duration: float) -> list[dict]:
    """Decode again (`decode(spans) -> segments`) what the first pass left out or lost track of,
    up to ROUNDS times; a span is never decoded twice. Crammed segments (crammed) are dropped
    first, so their speech counts as unheard; what the second look only guesses (guessed) or
    places across two spans (straddles) is not kept, and spans whose decode ran together that way
    are decoded again one by one."""
    tried: set[Region] = set()
    segments = [s for s in segments if not crammed(s)]        # its speech is then unheard: redone
    for _ in range(ROUNDS):
        spans = [s for s in spans_to_redo(regions, segments, duration) if s not in tried]
        if not spans:
            break
        tried.update(spans)
        found = _usable(decode(spans))
        if len(spans) > 1 and any(straddles(s, spans) for s in found):   # laid end to end, they ran together:
            found = _usable([s for span in spans for s in decode([span])])   # one by one
        segments = replace(segments, [s for s in found if not straddles(s, spans)], spans)
    return segments
