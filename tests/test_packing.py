"""Long pauses shortened before Whisper (core.packing): where the pieces fall, and that every time
and every encoder state comes back to the original audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core import packing
from core.voice import STATES_PER_SECOND, from_windows

SR = packing.SAMPLE_RATE
# three sentences with pauses of 2.0 s and 0.8 s, and a long silence before the last
REGIONS = [(1.5, 3.0), (5.0, 7.2), (8.0, 9.0), (20.0, 21.5)]
SAMPLES = 25 * SR


def test_long_pauses_shortened_short_ones_kept():
    plan = packing.plan(REGIONS, SAMPLES)
    assert plan.shortened
    # the 0.8-s pause stays whole: three pieces, one per side of the two long pauses
    assert len(plan.pieces) == 3
    assert all(p.start % packing.GRID == 0 and p.end % packing.GRID == 0 and p.at % packing.GRID == 0
               for p in plan.pieces)
    lengths = [p.length / SR for p in plan.pieces]
    speech = sum(b - a for a, b in REGIONS)
    # the speech and its 0.8-s pause, two 0.6-s pauses, 1 s at each edge (grid rounding aside)
    assert sum(lengths) == pytest.approx(speech + 0.8 + 2 * packing.KEEP_PAUSE + 2 * packing.EDGE, abs=0.1)
    assert plan.samples == sum(p.length for p in plan.pieces)
    # the packed audio is those pieces, in order
    audio = np.arange(SAMPLES, dtype=np.float32)
    packed = plan.audio(audio)
    assert len(packed) == plan.samples
    for p in plan.pieces:
        assert packed[p.at] == p.start and packed[p.at + p.length - 1] == p.end - 1


def test_nothing_to_shorten_is_one_piece():
    plan = packing.plan([(1.0, 2.0), (2.5, 4.0)], 6 * SR)
    assert not plan.shortened and len(plan.pieces) == 1
    assert packing.plan([], 6 * SR).pieces == ()


def test_edges_stay_inside_the_audio():
    plan = packing.plan([(0.1, 1.0), (3.0, 4.9)], 5 * SR)
    assert plan.pieces[0].start == 0 and plan.pieces[-1].end <= 5 * SR


def test_regions_and_times_come_back():
    plan = packing.plan(REGIONS, SAMPLES)
    where = plan.regions(REGIONS)
    assert len(where) == len(REGIONS)
    for (a, b), (pa, pb) in zip(REGIONS, where):
        assert pb - pa == pytest.approx(b - a, abs=1e-6)          # speech is never stretched
        back = plan.span(pa, pb, whole=False)
        assert back == pytest.approx((a, b), abs=1e-6)
    # the packed audio is shorter by what the long pauses lost
    assert plan.samples / SR < SAMPLES / SR - 10


def test_segments_and_words_mapped_back_a_word_never_spans_a_removed_pause():
    plan = packing.plan(REGIONS, SAMPLES)
    where = plan.regions(REGIONS)
    join = plan.pieces[1].at / SR
    seg = {"start": where[0][0], "end": where[1][1], "text": " one two three",
           "words": [{"word": " one", "start": where[0][0], "end": where[0][1]},
                     # stretched across the join, mostly before it
                     {"word": " two", "start": join - 0.25, "end": join + 0.05},
                     {"word": " three", "start": where[1][0], "end": where[1][1]}]}
    out = plan.segments([seg])[0]
    one, two, three = out["words"]
    assert (one["start"], one["end"]) == pytest.approx(REGIONS[0], abs=1e-6)
    assert (three["start"], three["end"]) == pytest.approx(REGIONS[1], abs=1e-6)
    # "two" stays on the first side of the 2-s pause and ends where the first piece ends
    assert two["end"] == pytest.approx(plan.pieces[0].end / SR) and two["end"] < REGIONS[1][0]
    assert out["start"] == pytest.approx(REGIONS[0][0]) and out["end"] == pytest.approx(REGIONS[1][1])
    assert seg["words"][1]["end"] == join + 0.05                     # the input is left as it was


def test_a_first_word_aligned_early_into_the_pause_goes_with_its_sentence():
    """Seen on an AVX2 CPU: after a shortened pause Whisper aligned "Dogs" 40 ms long, 0.3 s before
    the join (here 0.2 s), back to back with "are" (stretched over the real "Dogs are"). Mapped alone, "Dogs"
    landed at the end of the sentence before, 2 s early, and became an utterance of its own."""
    plan = packing.plan(REGIONS, SAMPLES)
    where = plan.regions(REGIONS)
    join = plan.pieces[1].at / SR
    seg = {"start": where[0][0], "end": where[1][1], "text": " door. Dogs are",
           "words": [{"word": " door.", "start": where[0][1] - 0.3, "end": where[0][1]},
                     {"word": " Dogs", "start": join - 0.2, "end": join - 0.16},
                     {"word": " are", "start": join - 0.16, "end": where[1][0] + 0.5}]}
    door, dogs, are = plan.segments([seg])[0]["words"]
    assert door["end"] == pytest.approx(REGIONS[0][1], abs=1e-6)              # stays where it was
    second = plan.pieces[1].start / SR
    assert dogs["start"] == pytest.approx(second) and dogs["end"] == pytest.approx(second + 0.04)
    assert are["start"] == pytest.approx(dogs["end"]) and are["end"] == pytest.approx(REGIONS[1][0] + 0.5)
    # a word back to back with the one before it is part of that sentence: it stays
    seg["words"][0]["end"] = join - 0.2
    _, dogs, _ = plan.segments([seg])[0]["words"]
    assert dogs["end"] <= plan.pieces[0].end / SR


def test_encoder_states_come_back_per_piece():
    plan = packing.plan(REGIONS, SAMPLES)
    seconds = plan.samples / SR
    # a packed window holding all of it: state i carries its own index
    states = torch.arange(1500, dtype=torch.float32)[:, None].repeat(1, 4)
    found = plan.states(0.0, seconds, states)
    assert len(found) == len(plan.pieces)
    where = plan.regions(REGIONS)
    for (a, b), (pa, pb) in zip(REGIONS, where):
        got = from_windows(found, a, b)
        assert got is not None                                       # the same states as packed
        assert abs(float(got[0, 0]) - pa * STATES_PER_SECOND) <= 1.0
        assert got.shape[0] == pytest.approx((b - a) * STATES_PER_SECOND, abs=2)
    assert from_windows(found, 12.0, 14.0) is None                  # inside a removed pause


def test_stretches_laid_apart_for_a_second_look():
    """core.recall's short stretches are decoded in one window, set apart by silence, and what is
    heard there lands back where each stretch lies."""
    spans = [(1.0, 3.0), (10.0, 12.5)]
    plan = packing.end_to_end(spans, 20 * SR)
    assert [(p.start / SR, p.end / SR) for p in plan.pieces] == spans
    second = plan.pieces[1]
    assert second.at / SR == pytest.approx(2.0 + packing.APART)
    audio = np.ones(20 * SR, dtype=np.float32)
    laid = plan.audio(audio)
    assert len(laid) == plan.samples and laid[: 2 * SR].all() and laid[second.at:].all()
    assert not laid[2 * SR + 10: second.at - 10].any()                   # silence between them
    word = {"word": " door", "start": second.at / SR + 0.5, "end": second.at / SR + 0.9}
    back = plan.segments([{"start": word["start"], "end": word["end"], "text": " door", "words": [word]}])[0]
    assert (back["words"][0]["start"], back["words"][0]["end"]) == pytest.approx((10.5, 10.9))
    # a word Whisper put in the silence ends where its stretch ends
    lost = {"word": " the", "start": 1.9, "end": 2.4}
    out = plan.segments([{"start": 1.9, "end": 2.4, "text": " the", "words": [lost]}])[0]["words"][0]
    assert out["start"] == pytest.approx(2.9) and out["end"] == pytest.approx(3.0)
