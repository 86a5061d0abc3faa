"""A window Whisper decoded into repetitive text: a hallucination loop, or speech said again?

openai-whisper decodes a window again at a higher temperature when its whole text compresses too
well (gzip ratio above 2.4): that is how a decoder stuck in a loop shows. But a speaker who says
one sentence again and again ("Kids are talking by the door." fourteen times) compresses as well,
and each retry is one more decoder pass for nothing. Here the window's text is judged segment by
segment, and against the speech the voice-activity detector found: it is speech said again when

- the decoder ended on its own (it did not run to its token limit) and closed its last segment;
- it has at least two segments, each with a start and an end, whose times advance and whose
  text is spoken at a human pace;
- no segment repeats itself ("the the the", one phrase three times in a row) or compresses too
  well on its own;
- every segment lies over detected speech.

Anything else (one segment looping on itself, times that stop advancing, segments over silence,
text crammed into too little time) is a loop, and the window falls back as before.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

COMPRESSION_RATIO_THRESHOLD = 2.4    # openai-whisper's: a window's text above this looks like a loop
TIME_PRECISION = 0.02                # seconds per Whisper timestamp token
MIN_REPEATS = 3                      # a phrase this many times in a row inside one segment: a loop
MAX_CHARS_PER_SECOND = 40.0          # fast speech is about 20; more is text crammed into no time
MIN_SPEECH = 0.2                     # seconds of detected speech a segment lies over (or half of it)

Region = tuple[float, float]


@dataclass
class Timed:
    """One segment of a window's tokens: its text and its times (seconds from the window's start;
    None where the decoder wrote no timestamp)."""

    start: float | None
    end: float | None
    text: str


def compression_ratio(text: str) -> float:
    """openai-whisper's measure: bytes of text / bytes gzipped."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def timed_segments(tokens: list[int], tokenizer) -> list[Timed]:
    """Split decoded tokens (no start-of-transcript prefix, no end token) at their timestamps."""
    begin = tokenizer.timestamp_begin
    out: list[Timed] = []
    start, text = None, []
    for token in list(tokens) + [None]:
        stamp = token is not None and token >= begin
        if token is None or stamp:
            time = (token - begin) * TIME_PRECISION if stamp else None
            if text:
                out.append(Timed(start, time, tokenizer.decode(text)))
                text = []
            start = time
        elif token < tokenizer.eot:
            text.append(token)
    return out


def repeats_within(text: str, times: int = MIN_REPEATS) -> bool:
    """True when a run of words occurs `times` times in a row ("the the the", "go on. go on. go on.")."""
    words = text.lower().split()
    n = len(words)
    for size in range(1, n // times + 1):
        for i in range(n - size * times + 1):
            phrase = words[i:i + size]
            if all(words[i + k * size: i + (k + 1) * size] == phrase for k in range(1, times)):
                return True
    return False


def _over_speech(start: float, end: float, regions: list[Region]) -> bool:
    speech = sum(max(0.0, min(b, end) - max(a, start)) for a, b in regions)
    return speech >= min(MIN_SPEECH, 0.5 * (end - start))


def said_again(tokens: list[int], tokenizer, offset: float = 0.0, regions: list[Region] | None = None,
               sample_len: int | None = None) -> bool:
    """True when repetitive decoded text is real speech said again (module docstring), not a loop.

    `offset` is the window's start in the audio and `regions` the detected speech there (seconds
    from the start of the audio; None: not checked); `sample_len` the decoder's token limit."""
    tokens = list(tokens)
    if not tokens or tokens[-1] < tokenizer.timestamp_begin:
        return False                                  # cut off mid-segment
    if sample_len is not None and len(tokens) >= sample_len:
        return False                                  # ran to the token limit
    segments = timed_segments(tokens, tokenizer)
    if len(segments) < 2:
        return False                                  # one segment repeating itself
    last_end = 0.0
    for seg in segments:
        if seg.start is None or seg.end is None or seg.start < last_end - 1e-6:
            return False
        text = seg.text.strip()
        seconds = seg.end - seg.start
        if seconds <= 0 or len(text) > MAX_CHARS_PER_SECOND * seconds:
            return False                              # times that do not advance
        if repeats_within(text) or compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD:
            return False
        if regions is not None and not _over_speech(offset + seg.start, offset + seg.end, regions):
            return False                              # words where nobody speaks
        last_end = seg.end
    return True
