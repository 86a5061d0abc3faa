"""Long pauses shortened before Whisper hears the speech: fewer 30-s windows for the same words.

Whisper's encoder costs the same for every 30-s window however much of it is pause, and on a CPU
it is the largest part of an analysis. So the speech is laid end to end first: each pause between
two stretches of speech longer than SHORTEN_OVER keeps only KEEP_PAUSE seconds (half after the
speech before it, half before the speech after it), and the outer edges keep EDGE seconds. When
that needs fewer windows (core.transcribe.decode decides), Whisper decodes the packed audio
(core.whisper_batch); every time it returns (segments, words, encoder states) is mapped back to
the original audio here, so nothing downstream sees the packing. The benchmark's talking video
(1.3-s pauses between its sentences) needs two windows instead of three. A file that fits one
window either way is heard as it is: Whisper's punctuation follows the pauses ("we won!" with
1.4-s pauses, "we won." with 0.6 s on the example), so nothing changes where nothing is saved.
The second look (core.recall) lays its short stretches one after another, APART seconds of
silence between them (end_to_end), in one window instead of one window each.

Cuts fall on the 20-ms grid of Whisper's encoder states (two 10-ms mel frames), so the states of a
piece are exactly its own. A word never spans a removed pause: one that Whisper stretched over a
join is kept in the piece that holds most of it and ends at that piece's edge (the speech left
uncovered on the other side is decoded again by core.recall, as any unheard speech is).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property

import numpy as np

SAMPLE_RATE = 16000
GRID = 320                    # samples per encoder state (20 ms): pieces start and end on it
SHORTEN_OVER = 1.0            # pauses up to this long are kept whole (seconds)
KEEP_PAUSE = 0.6              # a longer pause keeps this much (seconds)
EDGE = 1.0                    # seconds kept before the first speech and after the last
WORD_GAP = 0.02               # seconds: words closer than this were aligned back to back
APART = 1.5                   # seconds of silence between stretches laid end to end (end_to_end)

Region = tuple[float, float]


@dataclass(frozen=True)
class Piece:
    """A stretch of the original audio kept in the packed audio, in samples."""

    start: int                # first sample in the original audio
    end: int                  # one past the last
    at: int                   # its first sample in the packed audio

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Packing:
    """Where each kept piece of the original audio lies in the packed audio (in time order)."""

    pieces: tuple[Piece, ...]

    @property
    def samples(self) -> int:
        """Length of the packed audio in samples."""
        return self.pieces[-1].at + self.pieces[-1].length if self.pieces else 0

    @property
    def shortened(self) -> bool:
        """True when something between the pieces was left out or set apart (one piece: nothing)."""
        return len(self.pieces) > 1

    @cached_property
    def _starts(self) -> tuple[list[int], list[int]]:
        """The pieces' first samples in the original and in the packed audio (for bisect)."""
        return [p.start for p in self.pieces], [p.at for p in self.pieces]

    def audio(self, audio: np.ndarray) -> np.ndarray:
        """The packed audio: the pieces of `audio` laid end to end (silence between pieces set apart)."""
        out = np.zeros(self.samples, dtype=audio.dtype)
        for p in self.pieces:
            out[p.at:p.at + p.length] = audio[p.start:p.end]
        return out

    def to_packed(self, t: float) -> float:
        """A time of the original audio in the packed audio (a time in a removed pause goes to
        the join)."""
        s = t * SAMPLE_RATE
        i = bisect.bisect_right(self._starts[0], s) - 1          # the last piece starting at or before t
        if i < 0:
            return self.pieces[0].at / SAMPLE_RATE if self.pieces else 0.0
        p = self.pieces[i]
        if s <= p.end:
            return (p.at + s - p.start) / SAMPLE_RATE
        return (self.pieces[i + 1].at if i + 1 < len(self.pieces) else self.samples) / SAMPLE_RATE

    def regions(self, regions: list[Region]) -> list[Region]:
        """Speech regions of the original audio, in packed time (each lies inside one piece)."""
        out = [(self.to_packed(a), self.to_packed(b)) for a, b in regions]
        return [(a, b) for a, b in out if b > a]

    def _index(self, t: float) -> int:
        """The piece a packed time falls in (the later one at a join)."""
        return max(0, bisect.bisect_right(self._starts[1], t * SAMPLE_RATE) - 1)

    def _original(self, t: float, index: int) -> float:
        p = self.pieces[index]
        s = min(max(t * SAMPLE_RATE - p.at, 0.0), float(p.length))
        return (p.start + s) / SAMPLE_RATE

    def span(self, start: float, end: float, whole: bool = True) -> tuple[float, float]:
        """A packed [start, end] in original time. `whole=False` (a word): kept inside the piece
        that holds most of it. `whole=True` (a segment): each end in its own piece."""
        i, j = self._index(start), self._index(max(start, end - 1e-6))
        if i == j or whole:
            return self._original(start, i), max(self._original(start, i), self._original(end, j))
        before, after = self.pieces[i], self.pieces[i + 1]
        edge = (before.at + before.length + after.at) / 2 / SAMPLE_RATE     # the join after piece i
        k = i if edge - start >= end - edge else j
        lo = self._original(max(start, self.pieces[k].at / SAMPLE_RATE), k)
        return lo, max(lo, self._original(end, k))

    def segments(self, segments: list[dict]) -> list[dict]:
        """openai-whisper segments decoded from the packed audio, with their times (and their
        words' times) in the original audio."""
        out = []
        for seg in segments:
            seg = dict(seg)
            packed = seg.get("words") or []             # read only: the caller's words stay as they were
            words = []
            for w in packed:
                w = dict(w)
                w["start"], w["end"] = self.span(float(w["start"]), float(w["end"]), whole=False)
                words.append(w)
            self._follow_the_next_word(packed, words)
            seg["start"], seg["end"] = self.span(float(seg["start"]), float(seg["end"]))
            if words:
                seg["words"] = words
                seg["start"], seg["end"] = min(seg["start"], words[0]["start"]), max(seg["end"], words[-1]["end"])
            out.append(seg)
        return out

    def _follow_the_next_word(self, packed: list[dict], words: list[dict]) -> None:
        """A word Whisper aligned early, into the pause before its sentence, and back to back with
        the next word, goes where that word goes: the first word of a sentence after a shortened
        pause ("Dogs", aligned 40 ms long 0.3 s before the join, "are" stretched over the real
        "Dogs are") would otherwise land at the end of the sentence before it, 2 s early. Only a
        word set apart from the word before it (a gap of more than WORD_GAP) moves."""
        for k in range(len(words) - 2, -1, -1):
            here, after = packed[k], packed[k + 1]
            i, j = (self._index_of_original(float(w["start"])) for w in (words[k], words[k + 1]))   # where each landed
            touching = float(after["start"]) - float(here["end"]) <= WORD_GAP
            apart = k == 0 or float(here["start"]) - float(packed[k - 1]["end"]) > WORD_GAP
            if j > i and touching and apart:
                start = self.pieces[j].start / SAMPLE_RATE
                end = start + float(here["end"]) - float(here["start"])
                words[k]["start"], words[k]["end"] = start, end
                words[k + 1]["start"] = max(float(words[k + 1]["start"]), end)
                words[k + 1]["end"] = max(float(words[k + 1]["end"]), words[k + 1]["start"])

    def _index_of_original(self, t: float) -> int:
        """The piece an original time falls in or after."""
        return max(0, bisect.bisect_right(self._starts[0], t * SAMPLE_RATE) - 1)

    def states(self, start: float, seconds: float, states):
        """One packed window's encoder states (core.voice.WindowStates arguments: start and length
        in packed time, [1500, d]) as one WindowStates per piece it holds, in original time."""
        from .voice import STATES_PER_SECOND, WindowStates
        lo, hi = int(round(start * SAMPLE_RATE)), int(round((start + seconds) * SAMPLE_RATE))
        per_state = SAMPLE_RATE // STATES_PER_SECOND
        out = []
        for p in self.pieces:
            a, b = max(lo, p.at), min(hi, p.at + p.length)
            if b <= a:
                continue
            first = (a - lo) // per_state
            count = max(1, -(-(b - a) // per_state))
            out.append(WindowStates((p.start + a - p.at) / SAMPLE_RATE, (b - a) / SAMPLE_RATE,
                                    states[first:first + count]))
        return out


def end_to_end(spans: list[Region], samples: int, apart: float = APART) -> Packing:
    """The `spans` (seconds, in order) of an audio of `samples` samples laid one after another,
    `apart` seconds of silence between them: the second look (core.recall) decodes its short
    stretches in one window so."""
    pieces, at = [], 0
    for a, b in spans:
        lo, hi = _grid(a, up=False), min(_grid(b, up=True), (samples // GRID) * GRID)
        lo = max(lo, pieces[-1].end if pieces else 0)
        if hi > lo:
            at += _grid(apart, up=False) if pieces else 0
            pieces.append(Piece(lo, hi, at))
            at += hi - lo
    return Packing(tuple(pieces))


def _grid(seconds: float, up: bool) -> int:
    cells = seconds * SAMPLE_RATE / GRID
    return int(np.ceil(cells) if up else np.floor(cells)) * GRID


def plan(regions: list[Region], samples: int, shorten_over: float = SHORTEN_OVER,
         keep: float = KEEP_PAUSE, edge: float = EDGE) -> Packing:
    """The pieces of an audio of `samples` samples that keep its speech `regions` (seconds, in
    order) with every pause longer than `shorten_over` cut down to `keep`, and `edge` seconds
    around the whole. No regions: an empty packing."""
    if not regions:
        return Packing(())
    last = (samples // GRID) * GRID
    kept: list[list[int]] = []
    for a, b in regions:
        if kept and a - kept[-1][1] / SAMPLE_RATE <= shorten_over:
            kept[-1][1] = max(kept[-1][1], _grid(b, up=True))
            continue
        if kept:
            kept[-1][1] = min(_grid(a, up=False), kept[-1][1] + _grid(keep / 2, up=False))
        kept.append([_grid(a - (keep / 2 if kept else edge), up=False), _grid(b, up=True)])
    kept[-1][1] += _grid(edge, up=False)
    pieces, at, previous_end = [], 0, 0
    for a, b in kept:
        a, b = max(a, previous_end, 0), min(b, last)
        if b <= a:
            continue
        if pieces and a == previous_end:              # touching: one piece
            p = pieces.pop()
            pieces.append(Piece(p.start, b, p.at))
            at = p.at + b - p.start
        else:
            pieces.append(Piece(a, b, at))
            at += b - a
        previous_end = b
    return Packing(tuple(pieces))
