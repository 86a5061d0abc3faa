"""End to end: a generated talking video through media -> Whisper -> encoders -> model, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core import encoders, face_grid, pipeline
from core.labels import EMOTIONS
from core.types import Analysis
from tests import mediagen
from tests.conftest import THREE_SENTENCES


@pytest.fixture(scope="module")
def analysis(talking_video, models):
    return pipeline.analyze(talking_video, models, use_cache=False)   # other tests may have cached it


def test_three_utterances_with_words_faces_and_audio(analysis):
    assert not analysis.message
    assert len(analysis.utterances) == 3
    for pred, sentence in zip(analysis.utterances, THREE_SENTENCES):
        first_word = sentence.split()[0].lower()
        assert first_word in pred.utterance.text.lower()
        assert abs(sum(pred.emotion_probs) - 1) < 1e-4 and abs(sum(pred.sentiment_probs) - 1) < 1e-4
        face = pred.opinion("face")
        assert face.present and face.emotion == "joy"          # the astronaut smiles in every frame
        assert pred.opinion("audio").present
        assert not pred.opinion("video").present and "Kinetics" in pred.opinion("video").note
        assert pred.error == ""
    assert set(pipeline.STAGES) <= set(analysis.timings)


def test_analysis_json_round_trip(analysis):
    again = Analysis.from_dict(json.loads(json.dumps(analysis.to_dict())))
    assert [p.emotion for p in again.utterances] == [p.emotion for p in analysis.utterances]
    assert again.utterances[1].utterance.text == analysis.utterances[1].utterance.text
    assert again.utterances[0].opinion("face").emotion_probs == analysis.utterances[0].opinion("face").emotion_probs


def test_one_bad_utterance_never_fails_the_others(talking_video, models, monkeypatch):
    # Failure injection (a mock): the face encoder breaks on the second utterance only (any path:
    # the face net run on the grid during transcription, faces found there and read after it, or
    # frames read per utterance).
    calls = {"n": 0}

    def flaky(real):
        def encode(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("simulated decoder fault")
            return real(*args, **kwargs)
        return encode

    monkeypatch.setattr(encoders, "encode_faces", flaky(encoders.encode_faces))
    monkeypatch.setattr(encoders, "encode_face_crops", flaky(encoders.encode_face_crops))
    monkeypatch.setattr(face_grid.FaceGrid, "features_for", flaky(face_grid.FaceGrid.features_for))
    result = pipeline.analyze(talking_video, models, use_cache=False)
    assert len(result.utterances) == 3
    assert "simulated decoder fault" in result.utterances[1].error
    assert not result.utterances[1].opinion("face").present
    assert result.utterances[1].emotion                           # still predicted from text + audio
    assert result.utterances[0].error == "" and result.utterances[2].error == ""


def test_audio_only_file_is_text_plus_audio(three_sentences_wav, models):
    wav, _ = three_sentences_wav
    result = pipeline.analyze(wav, models)
    assert not result.media.has_video and len(result.utterances) == 3
    assert all(not p.opinion("face").present for p in result.utterances)
    assert all(p.opinion("audio").present for p in result.utterances)


def test_speech_in_a_track_that_starts_late_is_timed_as_the_video_plays_it(three_sentences_wav, tmp_path, models):
    """The sound track starts 3 s after the picture (an edited or screen-recorded file): the
    utterances carry the times the player shows, not times counted from the track's first sample."""
    wav, spans = three_sentences_wav
    late = tmp_path / "late.mp4"
    mediagen.ffmpeg("-loop", "1", "-framerate", "25", "-i", str(mediagen.face_image(tmp_path / "face.png")),
                    "-itsoffset", "3", "-i", str(wav), "-map", "0:v", "-map", "1:a", "-t", f"{3 + spans[-1][1] + 0.5:.2f}",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(late))
    result = pipeline.analyze(late, models, use_cache=False)
    assert len(result.utterances) == 3
    for pred, word, (start, end) in zip(result.utterances, ("door", "morning", "window"), spans):
        assert word in pred.utterance.text.lower()
        assert abs(pred.utterance.start - (3 + start)) < 0.5 and abs(pred.utterance.end - (3 + end)) < 0.7


def test_cli_prints_table_and_writes_json(talking_video, tmp_path):
    out = tmp_path / "a.json"
    proc = subprocess.run([sys.executable, "-m", "core", "analyze", str(talking_video), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "door" in proc.stdout.lower() and "emotion" in proc.stdout
    data = json.loads(out.read_text())
    assert len(data["utterances"]) == 3 and data["utterances"][0]["emotion"]
    assert "words" not in data["model"]
    alone = subprocess.run([sys.executable, "-m", "core", "analyze", str(talking_video), "--alone", "--json", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["model"]["words"] == "each utterance alone"
    assert [o["note"] for u in data["utterances"] for o in u["opinions"] if o["modality"] == "text"] == \
        [pipeline.WORDS_ALONE] * 3


def test_reopening_an_analysed_file_comes_from_the_cache(analysis, talking_video, models, tmp_path):
    import shutil
    pipeline.analyze(talking_video, models)                        # analysed (or found) and cached
    copy = shutil.copy(talking_video, tmp_path / "renamed.mp4")   # same content, other name
    again = pipeline.analyze(copy, models)                         # (its speed: python -m bench)
    assert set(again.timings) == {"cache"} and again.source == str(copy)
    assert [p.emotion_probs for p in again.utterances] == [p.emotion_probs for p in analysis.utterances]


def test_the_words_can_be_read_alone_and_the_cache_keeps_the_two_readings_apart(analysis, talking_video, models,
                                                                                 tmp_path, monkeypatch):
    import shutil
    copy = shutil.copy(talking_video, tmp_path / "lines.mp4")
    asked = []
    encode = models.text_encoder.encode
    monkeypatch.setattr(models.text_encoder, "encode",
                        lambda texts, contexts=None, *a, **k: (asked.append(contexts), encode(texts, contexts, *a, **k))[1])
    alone = pipeline.analyze(copy, models, use_cache=False, dialogue=False)   # (the CLI test may have cached it)
    assert asked == [None]                                   # no neighbours given to the text encoder
    assert [p.utterance.text for p in alone.utterances] == [p.utterance.text for p in analysis.utterances]
    assert all(p.opinion("text").note == pipeline.WORDS_ALONE for p in alone.utterances)   # the page says so
    assert alone.model["words"] == "each utterance alone"
    in_dialogue = [p.opinion("text").emotion_probs for p in analysis.utterances]
    assert [p.opinion("text").emotion_probs for p in alone.utterances] != in_dialogue
    pipeline.analyze(copy, models, dialogue=False)                     # analysed (or found) and cached
    again = pipeline.analyze(copy, models, dialogue=False)             # the cache: read alone, as asked
    assert set(again.timings) == {"cache"}
    assert [p.opinion("text").emotion_probs for p in again.utterances] == [p.opinion("text").emotion_probs
                                                                           for p in alone.utterances]
    dialogue = pipeline.analyze(copy, models)                          # never the other reading's entry
    assert [p.opinion("text").emotion_probs for p in dialogue.utterances] == in_dialogue
    assert all(p.opinion("text").note == "" for p in dialogue.utterances) and "words" not in dialogue.model


def test_batch_folder_writes_json_and_csv_per_video(talking_video, media_dir, tmp_path):
    import pandas as pd
    folder = tmp_path / "videos"
    folder.mkdir()
    import shutil
    shutil.copy(talking_video, folder / "a.mp4")
    mediagen.text_file_named(folder / "broken.mp4")
    proc = subprocess.run([sys.executable, "-m", "core", "batch", str(folder), "--out", str(tmp_path / "out"),
                           "--jobs", "2"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 analysed, 1 failed" in proc.stdout and "broken.mp4" in proc.stdout
    table = pd.read_csv(tmp_path / "out" / "a.csv")
    assert len(table) == 3 and "door" in table.loc[0, "text"].lower()
    saved = json.loads((tmp_path / "out" / "a.json").read_text())["utterances"]
    assert saved[2]["emotion"]
    # the voice's opinion and how much fusion counted it (a synthetic voice: less than fully)
    voices = [next(o for o in u["opinions"] if o["modality"] == "audio") for u in saved]
    assert list(table["voice_emotion"]) == [max(zip(v["emotion_probs"], EMOTIONS))[1] for v in voices]
    assert list(table["voice_counted"]) == [round(v["fusion_share"], 3) if v["used_in_fusion"] else 0.0 for v in voices]
    assert all(0.0 <= c < 1.0 for c in table["voice_counted"])


def test_batch_alone_reads_each_line_alone_and_is_not_taken_for_the_other_reading(talking_video, tmp_path):
    """`core batch --alone` reads each utterance's words alone and stamps its outputs so; a later
    run with neighbours over the same folder analyses the file again (a different reading), and
    its outputs say nothing of reading alone."""
    import shutil
    folder, out = tmp_path / "videos", tmp_path / "out"
    folder.mkdir()
    shutil.copy(talking_video, folder / "a.mp4")

    def batch(*extra):
        proc = subprocess.run([sys.executable, "-m", "core", "batch", str(folder), "--out", str(out),
                               "--jobs", "1", *extra], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        return proc.stdout, json.loads((out / "a.json").read_text())

    said, alone = batch("--alone")
    assert "1 analysed" in said
    assert alone["model"]["words"] == "each utterance alone"
    assert all(next(o for o in u["opinions"] if o["modality"] == "text")["note"] == pipeline.WORDS_ALONE
               for u in alone["utterances"])
    said, together = batch()
    summary = said.strip().splitlines()[-1]
    assert summary.startswith("1 analysed") and "0 already done" in summary, summary   # not resumed
    assert "words" not in together["model"]
    assert [u["utterance"]["text"] for u in together["utterances"]] == [u["utterance"]["text"]
                                                                       for u in alone["utterances"]]


def test_a_gpu_is_picked_when_there_is_one(monkeypatch):
    # Mocked: there is no GPU on this machine, so torch is told there is one; nothing runs on it.
    import torch
    from core import transcribe, whisper_batch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pipeline.pick_device() == "cuda" and transcribe._device(None) == "cuda"
    assert whisper_batch.precision("cuda")[0] == torch.float16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pipeline.pick_device() == "cpu" and transcribe._device(None) == "cpu"
    assert whisper_batch.precision("cpu")[0] == torch.float32


def test_the_face_net_runs_on_the_models_device(talking_video, models, monkeypatch):
    seen = []

    def spy(real):                      # a spy, not a mock: the real encoder still runs
        def encode(*args, **kwargs):
            seen.append(kwargs.get("device"))
            return real(*args, **kwargs)
        return encode

    monkeypatch.setattr(encoders, "encode_faces", spy(encoders.encode_faces))
    monkeypatch.setattr(encoders, "encode_face_crops", spy(encoders.encode_face_crops))
    monkeypatch.setattr(face_grid, "classify_grid", spy(face_grid.classify_grid))     # in the background
    pipeline.analyze(talking_video, models, use_cache=False)
    assert seen and set(seen) == {models.device}


def test_the_cache_key_changes_when_the_analysis_code_does(tmp_path, monkeypatch):
    """An upgraded app over the same cache folder must not serve analyses the old code made (a fixed
    transcription once needed a hand-bumped version): the key holds a digest of core/'s source."""
    import shutil

    from core import cache
    for path in cache.CODE.glob("*.py"):
        shutil.copy(path, tmp_path / path.name)
    assert cache.source_digest(tmp_path) == cache.code_digest()
    recall = tmp_path / "recall.py"
    recall.write_text(recall.read_text() + "\n# an upgrade\n")
    assert cache.source_digest(tmp_path) != cache.code_digest()
    key = cache.cache_key("0" * 64, {"models": "same"})
    assert key == cache.cache_key("0" * 64, {"models": "same"})
    monkeypatch.setattr(cache, "code_digest", lambda: cache.source_digest(tmp_path))    # the upgraded code
    assert cache.cache_key("0" * 64, {"models": "same"}) != key


def test_the_cache_key_changes_when_the_weights_do_even_under_the_same_name():
    import torch

    from core.checkpoint import Checkpoint, ModelCard
    from core.model import EmotionModel
    card = ModelCard(name="same-name", created="2026-01-01T00:00:00Z")
    torch.manual_seed(0)
    one = pipeline.Models(Checkpoint(EmotionModel(), card))
    same = pipeline.Models(Checkpoint(EmotionModel(), card))
    same.checkpoint.model.load_state_dict(one.checkpoint.model.state_dict())
    edited = pipeline.Models(Checkpoint(EmotionModel(), card))      # other (random) weights, same card
    assert one.signature() == same.signature()
    assert one.signature() != edited.signature()
