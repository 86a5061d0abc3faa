"""Whisper segments -> utterances a person can label (core.utterances): long ones cut at sentence
ends, then at pauses and clause boundaries; every piece keeps its words and their times."""

from __future__ import annotations

import numpy as np
import pytest

from core import utterances as cut


def _words(spec: list[tuple[str, float, float]]) -> list[dict]:
    return [{"word": w, "start": s, "end": e} for w, s, e in spec]


def _flowing(texts: list[str], start: float = 0.0, word: float = 0.35, gap: float = 0.05) -> list[dict]:
    """Words of `texts` (one string each, in order) read without pauses, `word` s each."""
    out, t = [], start
    for text in texts:
        for w in text.split():
            out.append({"word": " " + w, "start": round(t, 3), "end": round(t + word, 3)})
            t += word + gap
    return out


def _segment(words: list[dict]) -> dict:
    return {"text": "".join(w["word"] for w in words), "start": words[0]["start"],
            "end": words[-1]["end"], "words": words}


def _same_words(pieces: list[cut.Piece], words: list[dict]) -> bool:
    """The pieces hold exactly these word dicts, in order, none dropped, copied or retimed."""
    return [w for p in pieces for w in p.words] == words


SENTENCES = ["We went down to the harbour early that morning to watch the boats come in.",
             "The fishermen were already unloading their catch onto the old stone pier.",
             "By noon the whole market smelled of salt and smoke and fresh bread."]


def test_a_long_segment_is_cut_at_its_sentence_ends():
    words = _flowing(SENTENCES)                       # 44 words, about 17.6 s, no pause at all
    assert words[-1]["end"] - words[0]["start"] > 15
    pieces = cut.pieces([_segment(words)], [])
    assert [p.text for p in pieces] == SENTENCES
    assert _same_words(pieces, words)


def test_a_short_segment_of_two_sentences_stays_one_utterance():
    words = _flowing(["Oh, hello there.", "How are you today?"])
    pieces = cut.pieces([_segment(words)], [])
    assert [p.text for p in pieces] == ["Oh, hello there. How are you today?"]


def test_one_long_sentence_is_cut_at_its_pause_then_at_a_clause():
    first = ("Permission is hereby granted free of charge to any person obtaining a copy of this software "
             "and associated documentation files")
    second = ("to deal in the software without restriction including without limitation the rights to use "
              "copy modify merge publish distribute sublicense and or sell copies of the software "
              "and to permit persons to whom the software is furnished to do so")
    words = _flowing([first]) + _flowing([second], start=0.0)
    shift = words[len(first.split()) - 1]["end"] + 0.45          # a 0.45-s breath between the halves
    for w in words[len(first.split()):]:
        w["start"], w["end"] = round(w["start"] + shift, 3), round(w["end"] + shift, 3)
    span = words[-1]["end"] - words[0]["start"]
    assert span > 2 * cut.MAX_WORDS_SPAN - 3
    pieces = cut.pieces([_segment(words)], [])
    assert _same_words(pieces, words)
    assert all(p.end - p.start <= cut.MAX_WORDS_SPAN for p in pieces)
    assert pieces[0].text.endswith("documentation files")       # the breath, not the middle of a phrase
    assert len(pieces) == 3 and pieces[2].text.split()[0] in cut.CLAUSE_WORDS   # then a clause word


def test_clause_boundaries_beat_plain_word_gaps():
    text = ("the weather was cold and grey all through the long week, but on sunday the sun finally came "
            "out over the hills and everyone went outside")
    words = _flowing([text], word=0.45)
    pieces = cut.pieces([_segment(words)], [])
    assert _same_words(pieces, words) and len(pieces) == 2
    assert pieces[0].text.endswith("week,") and pieces[1].text.startswith("but")


def test_a_word_that_runs_on_stays_whole():
    words = _words([(" Nooooooooo", 0.0, 14.0)])
    pieces = cut.pieces([_segment(words)], [])
    assert len(pieces) == 1 and pieces[0].text == "Nooooooooo"


def test_split_pieces_get_bounds_of_at_most_twelve_seconds():
    words = _flowing(SENTENCES + SENTENCES, start=1.0)
    duration = words[-1]["end"] + 1.0
    regions = [(0.9, duration - 0.9)]                        # one stretch of speech, no pause
    silences = cut.gaps(regions, duration)
    pieces = cut.pieces([_segment(words)], silences)
    spans = cut.bounds(pieces, regions, silences, duration)
    assert len(pieces) == 6 and max(b - a for a, b in spans) <= cut.MAX_SECONDS
    for (a, b), (c, d) in zip(spans, spans[1:]):
        assert b <= c                                        # never overlapping
    for piece, (a, b) in zip(pieces, spans):
        assert a <= piece.start and piece.end <= b           # every word inside its utterance


@pytest.mark.parametrize("seed", range(5))
def test_random_segments_never_lose_a_word_nor_exceed_the_limit(seed):
    rng = np.random.default_rng(seed)
    vocabulary = ["and", "but", "so", "the", "people", "walked", "home,", "quickly.", "then", "it",
                  "rained", "again!", "because", "nobody", "knew", "why?"]
    words, t = [], 0.0
    for _ in range(int(rng.integers(40, 120))):
        d = float(rng.uniform(0.15, 0.6))
        words.append({"word": " " + str(rng.choice(vocabulary)), "start": round(t, 3), "end": round(t + d, 3)})
        t += d + float(rng.choice([0.02, 0.05, 0.1, 0.3, 0.5]))
    pieces = cut.pieces([_segment(words)], [])
    assert _same_words(pieces, words)
    assert all(p.end - p.start <= cut.MAX_WORDS_SPAN for p in pieces)


def test_words_the_detector_missed_stay_inside_their_utterance():
    """A shouted clip the detector hears only at its start: the utterance still holds its words."""
    words = _words([(" Kids", 1.0, 1.5), (" are", 1.5, 1.7), (" talking", 1.7, 2.1), (" by", 2.1, 2.3),
                    (" the", 2.3, 2.5), (" door!", 2.5, 2.9)])
    regions = [(1.05, 1.6)]
    silences = cut.gaps(regions, 5.0)
    (start, end), = cut.bounds(cut.pieces([_segment(words)], silences), regions, silences, 5.0)
    assert start == pytest.approx(0.9) and end == pytest.approx(2.9)
