"""The voice counts: the shipped voice head on real held-out speech, and the fusion checks, through the app.

Real clips from ../shared/data/ravdess (actors 23 and 24, which the shipped voice head never
heard: train.voice --exclude 23,24), analysed by core.pipeline.analyze as the app analyses an
uploaded audio file; espeak-ng speech for the words-in-a-flat-voice check; skimage's smiling
astronaut over an angry voice for the still-photograph check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core import checkpoint as ck
from core.labels import EMOTIONS
from tests import mediagen
from train import ravdess

HELD_OUT = (23, 24)
CLASSES = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")

needs_ravdess = pytest.mark.skipif(ravdess.find_root() is None,
                                   reason=f"RAVDESS clips not found at {ravdess.DEFAULT_ROOT}")


def held_out_clips(per_class: int) -> list[ravdess.VoiceClip]:
    """`per_class` strong-intensity clips (neutral: normal) per emotion per held-out actor, calm left out."""
    from train.ravdess_check import pick
    return pick(ravdess.load_clips(actors=set(HELD_OUT)), HELD_OUT, per_class, 0)


def test_shipped_card_says_what_the_voice_learned_from_and_its_licence():
    card = ck.read_card(ck.DEFAULT_CHECKPOINT)
    voice = card.data["voice"]
    assert "audio" in card.trained_modalities and card.model["late"] == ["audio"]
    assert voice["licence"] == "CC BY-NC-SA 4.0" and voice["calm"] in ("dropped from training", "folded into neutral")
    assert not {23, 24} & set(int(a) for a in voice["data"].split("[")[1].split("]")[0].split(","))
    notice = (ck.DEFAULT_CHECKPOINT / ck.VOICE_LICENSE_FILE).read_text()
    assert "CC BY-NC-SA 4.0" in notice and "Livingstone" in notice
    assert (ck.DEFAULT_CHECKPOINT / ck.VOICE_FILE).stat().st_size < 10 * 2**20
    assert voice["cross_validation"]["accuracy_7_classes_calm_left_out"] > 65
    assert voice["cross_validation"]["accuracy_by_context"]["clips"] > 65      # a one-utterance file
    assert card.data["fusion"]["late"]["audio"] > 0 and "late_fuse" in card.data["fusion"]["method"]


@needs_ravdess
def test_the_voices_sentiment_is_its_emotions_and_as_sure_as_it_is_right_on_unheard_actors(models, tmp_path):
    """The shipped voice reads its sentiment off its emotion opinion (core.model.sentiment_of_emotion):
    a RAVDESS clip's sentiment is its emotion's polarity, and the head of its own said "joy" and
    "negative" of the same voice on a fifth of these clips (and was right on 75.0 % of them; read off
    the emotion: 81.7 %). On every clip of actors 23 and 24 (calm left out), each heard alone as a
    one-utterance file, through the model as the app runs it: the sentiment is right on more than
    three quarters, its mean top probability within 0.08 of that, and joy is never read negative."""
    from core.labels import SENTIMENTS
    card = ck.read_card(ck.DEFAULT_CHECKPOINT)
    assert card.model["sentiment_from_emotion"] == ["audio"]
    cv = card.data["voice"]["sentiment"]["cross_validation"]
    assert cv["from_emotion"]["accuracy"] > cv["own_head"]["accuracy"], cv
    clips = [c for c in ravdess.load_clips(actors=set(HELD_OUT)) if not c.calm]
    from core.transcribe import load_whisper
    features = ravdess.clip_features(clips, load_whisper("base", device="cpu"), cache_dir=tmp_path, quiet=True)
    with torch.no_grad():
        emotion, sentiment = models.checkpoint.model({"audio": torch.from_numpy(features)}).modality_logits["audio"]
    probs = sentiment.softmax(-1)
    right = float((probs.argmax(-1).numpy() == np.array([c.sentiment for c in clips])).mean())
    sure = float(probs.max(-1).values.mean())
    assert right > 0.75 and abs(sure - right) < 0.08, (sure, right)
    joy = emotion.argmax(-1) == EMOTIONS.index("joy")
    assert not (probs.argmax(-1)[joy] == SENTIMENTS.index("negative")).any()


@needs_ravdess
def test_flat_words_in_an_emotional_voice_follow_the_voice(models):
    """Held-out actors' acted clips (the words are always "Kids/Dogs are ... by the door")."""
    from core.pipeline import analyze
    clips = held_out_clips(1)
    hits_fused = hits_voice = 0
    for clip in clips:
        result = analyze(clip.path, models, use_cache=False)
        assert len(result.utterances) == 1, (clip.path.name, [p.utterance.text for p in result.utterances])
        p = result.utterances[0]
        voice = p.opinion("audio")
        assert voice.present and voice.used_in_fusion and len(voice.emotion_probs) == 7
        assert voice.fusion_share > 0.9, (clip.path.name, voice.note)     # an unheard actor is a familiar voice
        hits_voice += voice.emotion == EMOTIONS[clip.emotion]
        hits_fused += p.emotion == EMOTIONS[clip.emotion]
    # 14 clips, chance 2. Measured with the block-3 ridge head: 9 fused, 9 voice (the block-4 head:
    # 6 and 7). The target (75 %) is NOT met on single-clip files: see README, "The voice".
    # This guards what holds, with 2 clips of slack.
    assert hits_fused >= 7 and hits_voice >= 7, (hits_fused, hits_voice, len(clips))


@pytest.mark.parametrize("words, label", [("Get out of my house, I hate you!", "anger"),
                                          ("I am so happy for you!", "joy")])
def test_emotional_words_in_a_flat_voice_follow_the_words(words, label, models, tmp_path):
    """A speech synthesiser's flat voice under emotional words. Its voice sounds unlike any the
    voice head learned from (core.familiarity), so fusion counts it less or not at all; its own
    opinion is still shown. The same words over a familiar flat voice: the next test."""
    from core.pipeline import analyze
    if not mediagen.have_espeak():
        pytest.fail("espeak-ng is required: apt-get install espeak-ng")
    wav = mediagen.speak(words, tmp_path / "flat.wav")
    result = analyze(wav, models, use_cache=False)
    assert [p.emotion for p in result.utterances] == [label], [(p.utterance.text, p.emotion) for p in result.utterances]
    voice = result.utterances[0].opinion("audio")
    assert voice.present and len(voice.emotion_probs) == 7
    assert voice.fusion_share < 1.0 and "sounds unlike the voices it learned from" in voice.note, voice


@needs_ravdess
@pytest.mark.parametrize("words, label", [("Get out of my house, I hate you!", "anger"),
                                          ("I am so happy for you!", "joy")])
def test_emotional_words_over_a_familiar_flat_voice_follow_the_words(words, label, models, tmp_path):
    """The same words with the voice of an unheard actor's neutral clip (a human voice the gate
    counts fully): the fused label still follows the words. Features joined at the model, as
    core.pipeline joins them (model_batch)."""
    from core.text import build_contexts
    from core.model import model_batch
    from core.transcribe import load_whisper
    neutral = [c for c in held_out_clips(1) if EMOTIONS[c.emotion] == "neutral"]
    voices = torch.from_numpy(ravdess.clip_features(neutral, load_whisper("base", device="cpu"),
                                                    cache_dir=tmp_path, quiet=True))
    model = models.checkpoint.model
    n = len(neutral)
    text = models.text_encoder.encode([words] * n, build_contexts([words], *models.card.context) * n)
    inputs, mask = model_batch(model.config, {"text": text, "audio": voices},
                               {"text": torch.ones(n, dtype=torch.bool), "audio": torch.ones(n, dtype=torch.bool)},
                               lambda m: True)
    with torch.no_grad():
        out = model(inputs, mask)
    assert out.late_share["audio"].tolist() == [1.0] * n                       # counted fully
    assert [EMOTIONS[i] for i in out.emotion_logits.argmax(-1).tolist()] == [label] * n


@needs_ravdess
def test_a_smiling_still_photo_does_not_outvote_an_angry_voice(models, tmp_path):
    from core.pipeline import analyze
    angry = [c for c in held_out_clips(4) if EMOTIONS[c.emotion] == "anger"]
    video = mediagen.talking_video(angry[0].path, tmp_path / "smile_angry.mp4", size="320x240")
    result = analyze(video, models, use_cache=False)
    p = result.utterances[0]
    assert p.opinion("face").present and p.opinion("face").emotion == "joy"     # the photo smiles
    assert not p.opinion("face").used_in_fusion                                 # shown, not fused
    fusion = ck.read_card(ck.DEFAULT_CHECKPOINT).data["fusion"]
    assert "face" not in fusion["learned"] and "face" not in fusion["late"]    # the photo cannot vote at all
    # The fused label itself is not asserted: on this clip's AAC copy it reads joy (the words' faint
    # joy against a calibrated voice at weight 0.5), on the FLAC anger; README, "The voice".


def test_the_voice_comes_from_transcriptions_own_encoder_pass(talking_video, models, monkeypatch):
    """No second encoder pass: every utterance's voice is cut out of the window states Whisper
    computed while transcribing (core.whisper_batch.capture_states)."""
    from core import voice
    from core.pipeline import analyze

    def second_pass(*args, **kwargs):
        raise AssertionError("the encoder ran again for the voice")
    monkeypatch.setattr(voice, "encode_window", second_pass)
    result = analyze(talking_video, models, use_cache=False)
    assert len(result.utterances) == 3
    assert all(p.opinion("audio").present and p.opinion("audio").used_in_fusion and not p.error
               for p in result.utterances)


def test_window_states_cover_the_utterance_span():
    import torch

    from core.voice import WindowStates, from_windows, pool
    states = torch.arange(1500, dtype=torch.float32).unsqueeze(-1).expand(1500, 4)
    windows = [WindowStates(0.0, 20.0, states), WindowStates(20.0, 10.0, states + 10000)]
    span = from_windows(windows, 2.0, 3.0)                  # 50 states a second
    assert span[0, 0].item() == 100 and span[-1, 0].item() == 149
    assert from_windows(windows, 21.0, 22.0)[0, 0].item() == 10050     # the window that holds it
    assert from_windows(windows, 40.0, 41.0) is None
    feature = pool(span)
    assert feature.shape == (8,) and np.isclose(feature[0], 124.5)


def test_the_ridge_voice_head_is_written_into_the_branch_exactly():
    """train.voice's ridge head (closed-form least squares) in the branch's Linear-ReLU-Linear layers:
    the branch's logits are the ridge scores themselves, so the CV that chose it scored what ships."""
    from core.labels import SENTIMENTS
    from core.model import ModelConfig
    from train.voice import ridge_branch, voice_logits
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 32)).astype(np.float32) * rng.uniform(0.1, 10, 32).astype(np.float32)
    y, s = rng.integers(0, len(EMOTIONS), 60), rng.integers(0, len(SENTIMENTS), 60)
    model = ridge_branch(ModelConfig(audio_dim=32, late=("audio",)), x, y, s, lam=5.0)
    a = (x - x.mean(0)) / x.std(0)
    target = np.concatenate([np.eye(len(EMOTIONS))[y], np.eye(len(SENTIMENTS))[s]], axis=1)
    w = np.linalg.solve(a.T @ a + 5.0 * np.eye(32), a.T @ (target - target.mean(0)))    # primal form
    expected = a @ w + target.mean(0)
    emotion, sentiment = voice_logits(model, x)
    assert np.allclose(emotion.numpy(), expected[:, :len(EMOTIONS)], atol=1e-4)
    assert np.allclose(sentiment.numpy(), expected[:, len(EMOTIONS):], atol=1e-4)


def test_a_checkpoint_whose_voice_learned_on_other_features_leaves_its_voice_out(talking_video, models, tmp_path):
    """A checkpoint trained by the release that read block 4 (its card names no feature) is fed
    this release's block-3 features: its voice would be noise, so it is left out and said so."""
    import json
    import shutil
    from core import voice
    from core.pipeline import analyze, load_models
    assert voice.feature_of(ck.read_card(ck.DEFAULT_CHECKPOINT).data) == voice.FEATURE
    assert voice.feature_of({}) == voice.LEGACY_FEATURE != voice.FEATURE
    assert voice.feature_of({"audio_feature": voice.FEATURE}) == voice.FEATURE
    old = tmp_path / "old-release"
    shutil.copytree(ck.DEFAULT_CHECKPOINT, old)
    card = json.loads((old / "card.json").read_text())
    card["data"]["voice"]["feature"] = "whisper-block4-mean-std: the release before"
    (old / "card.json").write_text(json.dumps(card))
    stale = load_models(old)
    assert voice.LEGACY_FEATURE in stale.voice_refused and not models.voice_refused
    result = analyze(talking_video, stale, use_cache=False)
    for p in result.utterances:
        heard = p.opinion("audio")
        assert not heard.used_in_fusion and heard.emotion == "" and "retrain" in heard.note


def test_the_loops_small_data_voice_is_a_closed_form_ridge_chosen_by_held_out_dialogues():
    """train.ridge.late_voice (the loop from scratch on small data): the voice is fused late, fixed,
    and its candidate is the one that scores best on held-out dialogues: here the emotion is in the
    mean half only and the std half is noise, so the mean alone wins."""
    from core.labels import SENTIMENTS
    from core.model import EmotionModel, ModelConfig
    from train.ridge import late_voice
    from train.voice import voice_logits
    rng = np.random.default_rng(1)
    n, d = 42, 16
    y = np.tile(np.arange(len(EMOTIONS)), n // len(EMOTIONS))
    s = rng.integers(0, len(SENTIMENTS), n)
    x = np.concatenate([np.eye(len(EMOTIONS), d)[y] * 2 + rng.normal(size=(n, d)) * 0.5,
                        rng.normal(size=(n, d)) * 3], axis=1).astype(np.float32)
    dialogues = [i // len(EMOTIONS) for i in range(n)]              # 6 dialogues of 7 utterances
    model = EmotionModel(ModelConfig(audio_dim=2 * d))
    late, chosen = late_voice(model, torch.from_numpy(x), torch.ones(n, dtype=torch.bool), torch.from_numpy(y),
                              torch.from_numpy(s), dialogues)
    assert late.config.late == ("audio",) and chosen["groups"] == 6 and chosen["features"] == "mean", chosen
    assert not any(p.requires_grad for p in late.encoders["audio"].parameters())
    emotion, _ = voice_logits(late, x)
    assert (emotion.argmax(-1).numpy() == y).mean() > 0.9 and chosen["held_out_group_accuracy"] > 80
    few, none = late_voice(model, torch.from_numpy(x[:2]), torch.ones(2, dtype=torch.bool), torch.from_numpy(y[:2]),
                           torch.from_numpy(s[:2]))
    assert few is model and none is None
    # Fewer than 3 dialogues: each clip is its own group, and a clip's two rows (its voice heard in its
    # dialogue and alone: train.retrain.with_voices_alone) stay in one group, never one to score the other.
    twice = np.concatenate([x, x + rng.normal(size=x.shape).astype(np.float32) * 0.1])
    _, two = late_voice(model, torch.from_numpy(twice), torch.ones(2 * n, dtype=torch.bool),
                        torch.from_numpy(np.concatenate([y, y])), torch.from_numpy(np.concatenate([s, s])),
                        [0] * (2 * n), list(range(n)) * 2)
    assert two["rows"] == 2 * n and two["groups"] == n, two


def test_training_only_augmentation_changes_speed_pitch_level_or_adds_noise_at_the_stated_level():
    """train.voice --augment: a clip played at 0.9 or 1.1 speed lasts 1/0.9 or 1/1.1 as long; a
    pitch shift moves a tone by the drawn semitones and keeps the length; noise sits NOISE_SNR_DB
    below the clip's power; a level change is the drawn number of dB inside GAIN_DB and never clips
    a loud clip; an unknown kind is refused."""
    from train import voice_states as vs
    t = np.arange(16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    rng = np.random.default_rng(0)
    lengths = set()
    for _ in range(8):
        faster_or_slower, what = vs.perturb(audio, "speed", rng)
        factor = float(what.removeprefix("speed"))
        assert factor in vs.SPEEDS and abs(len(faster_or_slower) - len(audio) / factor) <= 1
        lengths.add(len(faster_or_slower))
    assert len(lengths) == 2                       # both speeds are drawn
    noisy, _ = vs.perturb(audio, "noise", rng)
    snr = 10 * np.log10(np.mean(audio.astype(np.float64) ** 2) / np.mean((noisy - audio).astype(np.float64) ** 2))
    assert abs(snr - vs.NOISE_SNR_DB) < 0.5 and noisy.dtype == np.float32
    shifts = set()
    for _ in range(6):
        higher_or_lower, what = vs.perturb(audio, "pitch", rng)
        steps = int(what.removeprefix("pitch"))
        spectrum = np.abs(np.fft.rfft(higher_or_lower[2000:-2000]))        # away from the edges
        peak = np.fft.rfftfreq(len(higher_or_lower) - 4000, 1 / 16000)[spectrum.argmax()]
        assert steps in vs.PITCH_STEPS and len(higher_or_lower) == len(audio)
        assert abs(peak - 220 * 2 ** (steps / 12)) < 3                    # 246.9 or 196.0 Hz
        shifts.add(steps)
    assert len(shifts) == 2
    for _ in range(6):
        louder_or_quieter, what = vs.perturb(audio, "gain", rng)
        db = float(what.removeprefix("gain").removesuffix("dB"))
        measured = 20 * np.log10(np.abs(louder_or_quieter).max() / np.abs(audio).max())
        assert vs.GAIN_DB[0] <= db <= vs.GAIN_DB[1] and abs(measured - db) < 0.01
    loud = audio / 0.3 * 0.95
    for _ in range(6):
        assert np.abs(vs.perturb(loud, "gain", rng)[0]).max() < 1.0
    with pytest.raises(ValueError, match="unknown augmentation"):
        vs.perturb(audio, "echo", rng)


@needs_ravdess
def test_a_long_file_heard_with_its_pauses_shortened_keeps_each_voice_on_its_own_clip(models, tmp_path, monkeypatch):
    """A file long enough for Whisper to hear it with its pauses shortened (core.packing: 3 windows
    instead of 4 or 6): 28 clips of one unheard actor (strong, both sentences, both takes; 105-116 s
    with pauses of 1.2-2.8 s). Every clip is heard, no utterance runs over two clips, every voice
    opinion is cut out of the packed windows' states (no second encoder pass), and the voice is
    right about as often as with the pauses kept (measured: 16/29 and 22/28 utterances, the same
    either way)."""
    import csv
    import wave

    from core import transcribe as tr
    from core import voice
    from core.pipeline import analyze
    from tests import hearing

    root = ravdess.find_root()
    rows = [r for r in csv.DictReader(open(root / "manifest.csv")) if r["actor"] in ("23", "24")
            and ((r["intensity"] == "strong" and r["emotion"] != "calm") or r["emotion"] == "neutral")]
    packed = []
    real = tr.transcribe_windows

    def watched(*args, **kwargs):
        packed.append(kwargs.get("states_map") is not None)
        return real(*args, **kwargs)
    monkeypatch.setattr(tr, "transcribe_windows", watched)
    monkeypatch.setattr(voice, "encode_window", lambda *a, **k: pytest.fail("the encoder ran again for the voice"))
    right = total = 0
    for actor in ("23", "24"):
        mine = sorted((r for r in rows if r["actor"] == actor), key=lambda r: r["path"])
        np.random.default_rng(0).shuffle(mine)
        rec = hearing.recording([(hearing.at_level(hearing._trim(hearing.load_audio(root / r["path"])), -23.0),
                                  r["statement"] + ".", r["meld_emotion"]) for r in mine])
        path = tmp_path / f"actor{actor}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes((np.clip(rec.audio, -1, 1) * 32767).astype(np.int16).tobytes())
        packed.clear()
        result = analyze(path, models, use_cache=False)
        assert len(rec.clips) == 28 and packed and packed[0], "the pauses were not shortened"
        on = [[c for c in rec.clips if p.utterance.start < c.end and p.utterance.end > c.start]
              for p in result.utterances]
        assert all(len(clips) == 1 for clips in on), "an utterance runs over two clips"
        assert {id(c) for clips in on for c in clips} == {id(c) for c in rec.clips}, "a clip went unheard"
        for (clip,), p in zip(on, result.utterances):
            heard = p.opinion("audio")
            assert heard.present and heard.used_in_fusion and not p.error
            right += EMOTIONS[int(np.argmax(heard.emotion_probs))] == clip.source
            total += 1
    assert right / total >= 0.6, f"voice right on {right}/{total} utterances"


def test_the_voice_pools_the_speech_not_the_silence_a_first_word_was_stretched_over(tmp_path):
    """Whisper may start an utterance's first word at the end of the silence before it; the voice
    pools what a clip cut there would pool in training: its speech (core.voice.voiced_span)."""
    from core import media
    from core.transcribe import PAD
    from core.voice import speech_span, voiced_span
    if not mediagen.have_espeak():
        pytest.fail("espeak-ng is required: apt-get install espeak-ng")
    speech = media.load_audio(mediagen.speak("Kids are talking by the door.", tmp_path / "s.wav"))
    audio = np.concatenate([np.zeros(16000 * 3, np.float32), speech, np.zeros(16000, np.float32)])
    _, s1 = speech_span(speech)
    start, end = voiced_span(audio, 2.0, 3.0 + len(speech) / 16000 + 0.5)   # an utterance from 2 s
    assert 3.0 - PAD - 0.05 < start < 3.05                                # from the speech, not from 2 s
    assert end == pytest.approx(3.0 + s1, abs=0.1)
    assert voiced_span(np.zeros(16000 * 2, np.float32), 0.5, 1.5) == (0.5, 1.5)   # no speech: all of it
