"""The correction loop learns a voice from tens of clips (a small cut of train.ravdess_check, for CI).

Real acted speech (../shared/data/ravdess): one clip per emotion of 6 actors (42 clips, the README
check's train export) laid out as the app's export (MELD CSV + dia{D}_utt{U}.mp4 clips under one
still face), trained with the README's command with and without --init assets/model, then scored
on 14 clips of actor 24,
whom neither run nor the shipped voice head ever heard (train.voice --exclude 23,24), with every
modality the checkpoints use (python -m train.evaluate --clips). The README reports the full
check (56 clips of 2 unseen actors). With 3 train actors (21 clips), as this test had before, the
ridge's choice by leave-one-actor-out on 3 groups swung the scratch voice between 43 and 79 %.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core import checkpoint as ck
from core import pipeline
from core.labels import EMOTIONS
from train import ravdess
from train.ravdess_check import TRAIN_ACTORS

pytestmark = pytest.mark.skipif(ravdess.find_root() is None,
                                reason=f"RAVDESS clips not found at {ravdess.DEFAULT_ROOT}")


def test_tens_of_clips_teach_the_fused_label_a_voice(tmp_path):
    from train.ravdess_check import run
    threads = torch.get_num_threads()
    try:
        result = run(tmp_path, TRAIN_ACTORS, (24,), [None, str(ck.DEFAULT_CHECKPOINT)], per_class=2, threads=1)
    finally:
        torch.set_num_threads(threads)
    scratch, init = result["results"]["scratch"], result["results"][f"init {ck.DEFAULT_CHECKPOINT}"]
    for run_ in (scratch, init):
        assert run_["train_rows"] == 42 and run_["test_rows"] == 14 and run_["kept"] == "last"
        assert "audio" in run_["trained"]
    # Chance is 1 in 7 (2 of 14); measured: 12 of 14 in both contexts, scratch and --init. Scored both
    # ways the app hears a voice: the actor's 14 clips heard together, as the utterances of one video
    # (fused_accuracy), and each clip alone, as a file of its own. Trained on voices heard alone only
    # (before), a scratch model of 3 actors read 11 of 14 alone but 1 of 14 heard together (README,
    # "Retraining on corrected clips"): each context is asserted.
    for run_ in (scratch, init):
        assert run_["fused_accuracy"] >= 60.0, run_
        assert run_["fused_accuracy_heard_alone"] >= 60.0, run_
    assert init["heads"]["audio"]["emotion_accuracy"] >= 60.0, init
    card = ck.read_card(tmp_path / "model-scratch").data["training"]
    voice = card["voice_head"]        # 42 clips, each voice heard in its dialogue and alone: 84 rows
    assert voice["rows"] == 84 and voice["groups"] == 6 and voice["features"] in ("mean+std", "mean"), voice
    assert ck.read_card(tmp_path / "model-scratch").data["train"]["rows_with_voice_heard_alone_too"] == 42
    # the shipped voice reads its sentiment off its emotion (RAVDESS labels nothing more); retrained on
    # an annotator's labels, it answers with its own sentiment head again
    assert "audio" in ck.read_card(ck.DEFAULT_CHECKPOINT).model["sentiment_from_emotion"]
    init_card = next(d for d in tmp_path.iterdir() if d.name.startswith("model-") and d.name != "model-scratch")
    assert ck.read_card(init_card).model["sentiment_from_emotion"] == [], init_card

    # Through the app itself: the test actor's 14 clips said one after another in one recording. Each
    # utterance Whisper finds (with 3 words or more: one clip's tail "Shhh!" is not scored) is scored
    # against the clip it overlaps most. Measured: 11 of 13 (the shipped model: 12). Trained on voices
    # heard alone only (before), the scratch model of these 6 actors read 5 of 13 here, where its
    # clips heard alone scored 13 of 14.
    video, spans = one_recording(tmp_path / "ravdess_test", tmp_path / "actor24.wav")
    analysis = pipeline.analyze(video, pipeline.load_models(tmp_path / "model-scratch"), use_cache=False)
    scored = right = 0
    for p in analysis.utterances:
        overlap = [max(0.0, min(p.utterance.end, b) - max(p.utterance.start, a)) for a, b, _ in spans]
        truth = spans[int(np.argmax(overlap))][2]
        voice = p.opinion("audio")
        if voice is not None and voice.present and len(p.utterance.text.split()) >= 3:   # not a "Shhh!" tail
            scored += 1
            right += EMOTIONS[int(np.argmax(voice.emotion_probs))] == truth
    assert scored >= 12 and right >= 0.6 * scored, (right, scored)


def one_recording(export: Path, out: Path) -> tuple[Path, list[tuple[float, float, str]]]:
    """The audio of the export's clips joined in utterance order into one 16-kHz WAV file, with each
    clip's (start, end, emotion) in it (exact: joining the mp4s themselves shifts each clip's
    audio by its encoder priming, 64 ms a clip)."""
    import wave

    from core import media
    from core.meld import parse_clip_name, read_meld_csv
    labels = {(r.dialogue_id, r.utterance_id): r.emotion for r in read_meld_csv(export / f"{export.name}.csv").rows}
    spans, pieces, t = [], [], 0.0
    for clip in sorted((export / "clips").glob("*.mp4"), key=parse_clip_name):
        audio = media.load_audio(clip)
        spans.append((t, t + len(audio) / media.SAMPLE_RATE, labels[parse_clip_name(clip)]))
        pieces.append(audio)
        t += len(audio) / media.SAMPLE_RATE
    pcm = (np.clip(np.concatenate(pieces), -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(media.SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return out, spans
