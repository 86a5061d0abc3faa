"""Suggested speakers: each transcribed utterance gets "Speaker 1", "Speaker 2", ... from a pretrained
speaker encoder and clustering (core.speakers), so that an annotator corrects speakers instead of
typing them. Real clips of two unheard RAVDESS actors (23, a man; 24, a woman), spoken in mixed
emotions, through the whole pipeline; the grouping arithmetic on made-up embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from core import media, pipeline, speakers
from tests import mediagen
from train import ravdess

needs_ravdess = pytest.mark.skipif(ravdess.find_root() is None,
                                   reason=f"RAVDESS clips not found at {ravdess.DEFAULT_ROOT}")
EMOTION_ORDER = ("anger", "sadness", "joy", "fear", "surprise", "disgust", "neutral")


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_groups_are_numbered_by_first_appearance_and_short_lines_join_the_nearest():
    a, b = _unit([1, 0.1, 0]), _unit([0, 1, 0.1])
    near_a, near_b = _unit([1, 0.2, 0.05]), _unit([0.1, 1, 0])
    embeddings = np.stack([b, a, near_b, near_a, a])
    assert speakers.group(embeddings, [2.0] * 5) == [0, 1, 0, 1, 1]
    # a 0.3-s "Yes." never starts a speaker of its own: it joins the most similar long line
    short_near_a = _unit([0.5, 0, 0.9])           # beyond the threshold from both (a group if long), nearer a
    assert speakers.group(np.stack([a, b, short_near_a]), [2.0, 2.0, 0.3]) == [0, 1, 0]
    assert speakers.group(np.stack([a, b, short_near_a]), [2.0, 2.0, 2.0]) == [0, 1, 2]
    assert speakers.group(np.stack([a]), [1.0]) == [0]
    assert speakers.group(np.zeros((0, 3)), []) == []
    assert speakers.group(np.stack([a, b]), [0.2, 0.3]) == [0, 1]    # all short: grouped among themselves


def test_partials_cover_the_utterance():
    assert speakers.partial_starts(50) == [0]                        # 0.5 s: one zero-padded partial
    starts = speakers.partial_starts(500)                            # 5 s
    assert starts[0] == 0 and starts[-1] + speakers.PARTIAL_FRAMES >= 500 * speakers.MIN_COVERAGE
    assert all(b - a == starts[1] - starts[0] for a, b in zip(starts, starts[1:]))


def test_the_encoder_is_the_packaged_safetensors_file():
    assert speakers.WEIGHTS.suffix == ".safetensors" and speakers.WEIGHTS.stat().st_size < 10_000_000
    assert "Apache License" in (speakers.WEIGHTS.parent / "LICENSE-resemblyzer.txt").read_text()
    e = speakers.embed(np.random.default_rng(0).normal(0, 0.05, 32000).astype(np.float32))
    assert e.shape == (256,) and abs(float(np.linalg.norm(e)) - 1) < 1e-5 and (e >= 0).all()
    batched = speakers.embed_many([np.zeros(8000, np.float32), np.ones(24000, np.float32) * 0.01])
    assert batched.shape == (2, 256)


def _clips(actor: int) -> list[ravdess.VoiceClip]:
    """One strong-intensity clip of each emotion (calm left out), in EMOTION_ORDER."""
    from core.labels import EMOTIONS
    clips = [c for c in ravdess.load_clips(actors={actor}) if not c.calm and c.intensity == "strong"]
    by_emotion = {}
    for c in clips:
        by_emotion.setdefault(EMOTIONS[c.emotion], c)
    return [by_emotion[e] for e in EMOTION_ORDER if e in by_emotion]


def _recording(clips: list[ravdess.VoiceClip], out, gap: float = 0.4) -> tuple:
    """The clips said one after another as one WAV; each clip's actor and (start, end)."""
    import wave
    pieces, spans, t = [], [], 0.3
    pieces.append(np.zeros(int(0.3 * 16000), np.float32))
    for c in clips:
        x = media.load_audio(c.path)
        pieces += [x, np.zeros(int(gap * 16000), np.float32)]
        spans.append((c.actor, t, t + len(x) / 16000))
        t += len(x) / 16000 + gap
    audio = np.concatenate(pieces)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    return out, spans


def _actor_of(utterance, spans) -> int:
    return max(spans, key=lambda s: min(utterance.end, s[2]) - max(utterance.start, s[1]))[0]


@needs_ravdess
def test_a_conversation_of_a_man_and_a_woman_gets_two_speakers(models, tmp_path):
    man, woman = _clips(23), _clips(24)
    turns = [clip for pair in zip(man[:5], woman[:5]) for clip in pair]      # they take turns, each in 5 moods
    wav, spans = _recording(turns, tmp_path / "conversation.wav")
    analysis = pipeline.analyze(wav, models, use_cache=False)
    names = {}
    for pred in analysis.utterances:
        names.setdefault(_actor_of(pred.utterance, spans), []).append(pred.utterance.speaker)
    assert set(names) == {23, 24}
    (man_name,), (woman_name,) = set(names[23]), set(names[24])            # one name each, whatever the mood
    assert man_name != woman_name and {man_name, woman_name} == {"Speaker 1", "Speaker 2"}
    assert analysis.utterances[0].utterance.speaker == "Speaker 1"        # numbered as they first speak


@needs_ravdess
def test_one_speaker_in_seven_moods_stays_one_speaker(models, tmp_path):
    wav, _ = _recording(_clips(24), tmp_path / "monologue.wav")
    analysis = pipeline.analyze(wav, models, use_cache=False)
    assert len(analysis.utterances) >= 6
    assert {p.utterance.speaker for p in analysis.utterances} == {"Speaker 1"}


def test_speakers_reach_the_session_and_the_meld_export(talking_video, models, tmp_path):
    from core.meld import read_meld_csv
    from webapp.service import ModelHolder, Workbench
    wb = Workbench(ModelHolder(models=models), tmp_path / "data")
    session = wb.analyze(talking_video, owner="me")
    assert [r.speaker for r in session.rows] == ["Speaker 1"] * len(session.rows)   # one espeak-ng voice
    assert not any(r.corrected for r in session.rows)                               # a suggestion, not a correction
    rows = read_meld_csv(wb.export_csv(session.id, "me")).rows
    assert [r.speaker for r in rows] == ["Speaker 1"] * len(session.rows)


def test_a_failing_speaker_encoder_leaves_the_speakers_blank_and_the_analysis_whole(talking_video, models, monkeypatch):
    # Failure injection (a mock): the encoder breaks; the rest of the analysis must stand.
    def broken(*args, **kwargs):
        raise RuntimeError("simulated speaker encoder fault")
    monkeypatch.setattr(speakers, "embed_many", broken)
    analysis = pipeline.analyze(talking_video, models, use_cache=False)
    assert len(analysis.utterances) == 3 and all(p.emotion for p in analysis.utterances)
    assert [p.utterance.speaker for p in analysis.utterances] == ["", "", ""]


def test_imported_rows_keep_their_own_speakers(talking_video, models):
    from core.types import Utterance
    given = [Utterance(0.3, 2.5, "Kids are talking by the door.", speaker="Monica"),
             Utterance(3.5, 5.5, "Good morning.", speaker="")]
    analysis = pipeline.analyze(talking_video, models, utterances=given)
    assert [p.utterance.speaker for p in analysis.utterances] == ["Monica", ""]


def test_espeak_voices_are_not_one_person_with_a_real_voice(tmp_path):
    """A synthetic voice and a real one are told apart (speech a file may mix)."""
    if not mediagen.have_espeak() or ravdess.find_root() is None:
        pytest.skip("needs espeak-ng and RAVDESS")
    synthetic = media.load_audio(mediagen.speak("Kids are talking by the door.", tmp_path / "s.wav"))
    real = media.load_audio(_clips(24)[0].path)
    names = speakers.name_speakers(np.concatenate([synthetic, real, synthetic]),
                                   [(0, len(synthetic) / 16000),
                                    (len(synthetic) / 16000, (len(synthetic) + len(real)) / 16000),
                                    ((len(synthetic) + len(real)) / 16000, (2 * len(synthetic) + len(real)) / 16000)])
    assert names == ["Speaker 1", "Speaker 2", "Speaker 1"]
