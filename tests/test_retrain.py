"""Retraining on clips (python -m train.train --clips / an export zip): real encoders, generated media.

Every clip is made here (ffmpeg lavfi tones, skimage's astronaut face, espeak-ng speech), tiny and
short. Each "branch learns" test gives the model one cue only, trains that modality alone
(--modalities) and checks on held-out clips, through the saved checkpoint, that the branch's own
head and the fused head both beat chance by a wide margin. Runs are seeded and single-threaded.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from core import checkpoint as ck
from core.meld import MeldRow, write_meld_csv
from tests import mediagen
from train import loop
from train.evaluate import evaluate_clips

SENTIMENT_OF = {"joy": "positive", "sadness": "negative", "anger": "negative", "neutral": "neutral"}
FAST = ["--threads", "1", "--quiet", "--batch-size", "8", "--warmup", "0.1"]


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def write_split(folder: Path, items: list[tuple[str, str, Path | None]], csv_name: str = "data.csv",
                clip_dir: Path | None = None, first_dialogue: int = 0) -> Path:
    """A MELD CSV (core.meld's writer) + dia{D}_utt0.mp4 clips; items: (text, emotion, clip or None)."""
    folder.mkdir(parents=True, exist_ok=True)
    clip_dir = clip_dir or folder
    clip_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (text, emotion, clip) in enumerate(items):
        d = first_dialogue + i
        rows.append(MeldRow(text, "A", emotion, SENTIMENT_OF[emotion], d, 0, 1, 1, 0.0, 1.0))
        if clip is not None:
            shutil.copy(clip, clip_dir / f"dia{d}_utt0.mp4")
    write_meld_csv(rows, folder / csv_name)
    return folder / csv_name


def train(tmp: Path, *args: str) -> dict:
    from train.train import main
    out = tmp / "model"
    return main([*args, "--out", str(out), "--tb", str(tmp / "tb"), *FAST])


def tone_items(folder: Path, rng, n: int, text: str = "Okay.") -> list:
    """Half low tones (sadness), half high tones (joy), random pitches and levels."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        high = i % 2 == 1
        freq = rng.uniform(1400, 2600) if high else rng.uniform(160, 320)
        clip = mediagen.tone_clip(folder / f"tone{i}.mp4", freq, volume=rng.uniform(0.15, 0.5))
        items.append((text, "joy" if high else "sadness", clip))
    return items


def assert_learned(result: dict, head: str, minimum: int) -> None:
    truth = result["truth"]
    head_hits = sum(p == t for p, t in zip(result["head_emotion"][head], truth))
    fused_hits = sum(p == t for p, t in zip(result["predicted_emotion"], truth))
    assert head_hits >= minimum and fused_hits >= minimum, (head_hits, fused_hits, len(truth))


def held_out(checkpoint: Path, csv: Path, cache: Path) -> dict:
    result = evaluate_clips(checkpoint, csv, csv.parent, cache)
    from core.meld import read_meld_csv
    result["truth"] = [r.emotion for r in read_meld_csv(csv).rows]
    return result


# ---------------------------------------------------------------- each branch learns its own cue

def labelled_splits(tmp: Path, make_items, seed: int, n_train: int, n_test: int) -> tuple[Path, Path, Path]:
    """(train CSV, held-out CSV, feature cache folder) of clips made by make_items(folder, rng, n)."""
    rng = np.random.default_rng(seed)
    train_csv = write_split(tmp / "train", make_items(tmp / "gen_train", rng, n_train))
    test_csv = write_split(tmp / "test", make_items(tmp / "gen_test", rng, n_test))
    return train_csv, test_csv, tmp / "cache"


def test_audio_branch_learns_pitch(tmp_path):
    train_csv, test_csv, cache = labelled_splits(tmp_path, tone_items, 1, 24, 12)
    summary = train(tmp_path, "--train", str(train_csv), "--clips", str(train_csv.parent),
                    "--modalities", "audio", "--epochs", "12", "--lr", "3e-3", "--feature-cache", str(cache))
    # 24 rows and no --dev: nothing is held out, the last epoch of a fixed schedule is kept
    assert summary["trained_modalities"] == ["audio"] and not summary["dev_held_out"] and summary["kept"] == "last"
    card = ck.read_card(tmp_path / "model")
    assert card.trained_modalities == ["audio"] and card.data["train"]["rows_with_voiced_audio"] == 24
    assert card.data["dev"]["rows"] == 0 and "fixed schedule" in card.data["training"]["weights_kept"]
    assert_learned(held_out(tmp_path / "model", test_csv, cache), "audio", 11)    # chance: 6 of 12


def face_items(folder: Path, rng, n: int) -> list:
    """Half the astronaut as she is (joy), half with her mouth covered (anger); silent audio."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        covered = i % 2 == 1
        image = mediagen.face_variant(folder / f"face{i}.png", rng, covered)
        items.append(("Okay.", "anger" if covered else "joy", mediagen.still_clip(image, folder / f"face{i}.mp4")))
    return items


def test_face_branch_learns_a_covered_mouth(tmp_path):
    train_csv, test_csv, cache = labelled_splits(tmp_path, face_items, 2, 24, 12)
    summary = train(tmp_path, "--train", str(train_csv), "--clips", str(train_csv.parent),
                    "--modalities", "face", "--epochs", "15", "--lr", "3e-3", "--feature-cache", str(cache))
    assert summary["trained_modalities"] == ["face"]
    result = held_out(tmp_path / "model", test_csv, cache)
    assert result["heads"]["face"]["rows"] == 12            # a face was found in every held-out clip
    assert_learned(result, "face", 11)                      # chance: 6 of 12


JOY = ["I love this, what a wonderful day", "This is the best news ever", "I am so happy for you",
       "What a lovely surprise, thank you", "We won, this is fantastic", "I adore this place, it is great"]
ANGER = ["I hate this, you ruined everything", "Get out of my house right now", "This is outrageous, I am furious",
         "Stop lying to me, you idiot", "You broke it again, I am so mad", "Shut up and leave me alone"]


def test_text_branch_learns_words_on_identical_media(tmp_path):
    same = mediagen.tone_clip(tmp_path / "same.mp4", 440.0, volume=0.0)     # silent, no face: text only
    def items(joy, anger):
        return [(t, "joy", same) for t in joy] + [(t, "anger", same) for t in anger]
    train_csv = write_split(tmp_path / "train", items(JOY[:4] * 3, ANGER[:4] * 3))
    test_csv = write_split(tmp_path / "test", items(JOY[4:] * 3, ANGER[4:] * 3))
    cache = tmp_path / "cache"
    summary = train(tmp_path, "--train", str(train_csv), "--clips", str(train_csv.parent), "--tune-layers", "1",
                    "--epochs", "15", "--lr", "3e-3", "--feature-cache", str(cache))
    # every modality was asked for; only text had data (no face, silent audio), and the card says so
    assert summary["trained_modalities"] == ["text"]
    card = ck.read_card(tmp_path / "model")
    assert card.trained_modalities == ["text"] and card.text_encoder["tuned_layers"] == [5]
    assert summary["extracted"] == 1                     # 24 identical files: extracted once
    assert_learned(held_out(tmp_path / "model", test_csv, cache), "text", 11)   # chance: 6 of 12


# ---------------------------------------------------------------- the export round trip

def test_export_zip_trains_all_three_modalities_and_the_app_loads_it(tmp_path, talking_video):
    from core.labels import EMOTIONS
    from core.pipeline import analyze, load_models
    if not mediagen.have_espeak():
        pytest.fail("espeak-ng is required: apt-get install espeak-ng")
    base = "talk_dia3"
    export = tmp_path / "export" / base
    (export / "clips").mkdir(parents=True)
    face = mediagen.face_image(tmp_path / "face.png", size=(256, 256))
    rows = []
    for u, (text, emotion) in enumerate([(JOY[0], "joy"), (ANGER[0], "anger"), (JOY[1], "joy"),
                                         (ANGER[1], "anger"), (JOY[2], "joy"), (ANGER[2], "anger")]):
        wav = mediagen.speak(text, tmp_path / f"s{u}.wav")
        mediagen.talking_video(wav, export / "clips" / f"dia3_utt{u}.mp4", image=face, size="320x240")
        rows.append(MeldRow(text, "Speaker", emotion, SENTIMENT_OF[emotion], 3, u, None, None, 0.0, 2.0))
    write_meld_csv(rows, export / f"{base}.csv")
    zip_path = tmp_path / f"{base}.zip"
    with zipfile.ZipFile(zip_path, "w") as z:        # the layout webapp/export.py writes
        for path in sorted(export.rglob("*")):
            z.write(path, path.relative_to(export.parent).as_posix())

    summary = train(tmp_path, "--train", str(zip_path), "--epochs", "2", "--feature-cache", str(tmp_path / "cache"))
    assert summary["trained_modalities"] == ["text", "face", "audio"]
    assert not summary["dev_held_out"] and summary["dev_rows"] == 0 and summary["clips_missing"] == 0
    card = ck.read_card(tmp_path / "model")
    assert card.trained_modalities == ["text", "face", "audio"]
    assert card.data["train"]["layout"] == "export zip" and card.data["train"]["clips_found"] == 6
    assert card.data["train"]["rows_with_face"] == 6 and card.data["train"]["rows_with_voiced_audio"] == 6
    assert card.data["feature_cache"]["extracted"] == 6 and card.metrics["best_epoch"] == 2

    models = load_models(checkpoint=tmp_path / "model")
    result = analyze(talking_video, models, use_cache=False)
    assert result.utterances and result.model["trained_modalities"] == ["text", "face", "audio"]
    for p in result.utterances:
        assert p.emotion in EMOTIONS and abs(sum(p.emotion_probs) - 1.0) < 1e-4
        assert p.opinion("face").used_in_fusion and p.opinion("audio").used_in_fusion


# ---------------------------------------------------------------- missing and corrupt clips

def test_missing_and_corrupt_clips_are_reported_and_training_finishes(tmp_path, capsys):
    rng = np.random.default_rng(3)
    items = tone_items(tmp_path / "gen", rng, 8)
    broken = mediagen.truncated_copy(items[3][2], tmp_path / "gen" / "broken.mp4", keep=0.3)
    items[3] = (items[3][0], items[3][1], broken)           # dia3_utt0.mp4: corrupt
    items[1] = (items[1][0], items[1][1], None)             # dia1_utt0.mp4: missing
    train_csv = write_split(tmp_path / "train", items[:6])
    dev_csv = write_split(tmp_path / "dev", items[6:], first_dialogue=6)
    summary = train(tmp_path, "--train", str(train_csv), "--clips", str(train_csv.parent), "--dev", str(dev_csv),
                    "--dev-clips", str(dev_csv.parent), "--epochs", "2", "--feature-cache", str(tmp_path / "cache"))
    assert summary["clips_missing"] == 1 and summary["clips_corrupt"] == 1 and summary["train_rows"] == 6
    err = capsys.readouterr().err
    assert "missing clips" in err and "dia1_utt0.mp4" in err
    assert "corrupt or unreadable clips" in err and ": 1: dia3_utt0.mp4 (" in err and "Traceback" not in err
    data = ck.read_card(tmp_path / "model").data["train"]
    assert data["clips_missing"] == 1 and data["missing_names"] == ["dia1_utt0.mp4"]
    assert data["clips_corrupt"] == 1 and data["corrupt"][0].startswith("dia3_utt0.mp4: ")
    assert data["rows_with_voiced_audio"] == 4 and data["rows_trained"] == 6   # the two train their text


# ---------------------------------------------------------------- the MELD release layout, the cache

def test_meld_release_layout_is_found_and_the_second_run_uses_the_cache(tmp_path):
    from train import clips as clipdata
    rng = np.random.default_rng(4)
    root = tmp_path / "MELD.Raw"
    gen = tone_items(tmp_path / "gen", rng, 7)
    train_csv = write_split(root, gen[:3], "train_sent_emo.csv", root / "train_splits")
    dev_csv = write_split(root, gen[3:5], "dev_sent_emo.csv", root / "dev_splits_complete")
    write_split(root, gen[5:], "test_sent_emo.csv", root / "output_repeated_splits_test")
    # the split folder follows the CSV's name, whether the release is beside the CSV or given as --clips
    assert clipdata.resolve(dev_csv, None).clip_dir == root / "dev_splits_complete"
    assert clipdata.resolve(root / "test_sent_emo.csv", root).clip_dir == root / "output_repeated_splits_test"
    with pytest.raises(clipdata.ClipDataError, match="does not say which split"):
        clipdata.resolve(shutil.copy(train_csv, tmp_path / "labels.csv"), root)

    cache = ["--feature-cache", str(tmp_path / "cache"), "--epochs", "1"]
    first = train(tmp_path / "run1", "--train", str(train_csv), "--dev", str(dev_csv), "--clips", str(root), *cache)
    assert first["extracted"] == 5 and first["from_cache"] == 0 and first["clips_missing"] == 0
    card = ck.read_card(tmp_path / "run1" / "model")
    assert card.data["train"]["layout"] == "MELD release" and card.data["train"]["clips_found"] == 3
    assert card.data["dev"]["clips_found"] == 2 and not card.data["dev"]["held_out_from_train"]
    # --clips may name the split folder itself; dev's clips are then found beside the dev CSV
    second = train(tmp_path / "run2", "--train", str(train_csv), "--dev", str(dev_csv),
                   "--clips", str(root / "train_splits"), *cache)
    assert second["extracted"] == 0 and second["from_cache"] == 5


def test_a_dialogues_voices_are_heard_together_as_the_app_hears_a_video(tmp_path, monkeypatch):
    """The app hears the utterances of one video together in shared windows; a head trained only on
    clips heard alone read those at chance in the RAVDESS loop check. So a dialogue's clips are also
    heard together (in utterance order), a lone clip only alone, the result cached per dialogue, and
    training gets both (with_voices_alone)."""
    from train import features, retrain
    gen = [mediagen.tone_clip(tmp_path / f"tone{i}.mp4", f) for i, f in enumerate((220.0, 440.0, 880.0))]
    clips = {}
    for name, src in (("dia3_utt1.mp4", gen[1]), ("dia3_utt0.mp4", gen[0]), ("dia4_utt0.mp4", gen[2])):
        clips[name] = Path(shutil.copy(src, tmp_path / name))
    cache = features.FeatureCache(tmp_path / "cache")
    feats, _ = features.clip_features(clips, cache, jobs=1, quiet=True)
    assert feats["dia4_utt0.mp4"].voice_in_dialogue is None                    # alone in its dialogue
    together = features.dialogue_voices([clips["dia3_utt0.mp4"], clips["dia3_utt1.mp4"]])
    for i, name in enumerate(("dia3_utt0.mp4", "dia3_utt1.mp4")):              # utterance order
        f = feats[name]
        assert np.allclose(f.voice_in_dialogue, together[i], atol=1e-5)
        assert not np.allclose(f.voice_in_dialogue, f.voice, atol=1e-3)         # another context, other states
        assert np.array_equal(f.heard(True).voice, f.voice_in_dialogue) and f.heard(False) is f

    def not_again(paths):
        raise AssertionError("heard again instead of read from the cache")
    monkeypatch.setattr(features, "dialogue_voices", not_again)
    again, stats = features.clip_features(clips, cache, jobs=1, quiet=True)
    assert stats.from_cache == 3
    assert np.array_equal(again["dia3_utt1.mp4"].voice_in_dialogue, feats["dia3_utt1.mp4"].voice_in_dialogue)

    class Row:                          # the two fields with_voices_alone reads of a train.clips.ClipRow
        def __init__(self, name):
            self.name, self.clip = name, clips[name]
    split = type("Split", (), {"rows": [Row(n) for n in ("dia3_utt0.mp4", "dia3_utt1.mp4", "dia4_utt0.mp4")]})()
    rows = [feats[r.name].heard() for r in split.rows]
    inputs = loop.build_inputs(rows, [3, 5, 3], [2, 0, 2], text=torch.zeros(3, 4))
    both, source = retrain.with_voices_alone(inputs, split, feats)
    assert source == [0, 1, 2, 0, 1] and len(both) == 5
    assert torch.equal(both.audio[0], torch.from_numpy(feats["dia3_utt0.mp4"].voice_in_dialogue))
    assert torch.equal(both.audio[3], torch.from_numpy(feats["dia3_utt0.mp4"].voice))
    assert both.emotion.tolist() == [3, 5, 3, 3, 5]


def test_a_dev_share_held_out_of_one_csv_is_heard_with_its_dialogues_train_rows(tmp_path):
    """--holdout splits one CSV's rows: a dialogue's clips land on both sides, and each voice is still
    heard among all the clips of its dialogue, as the app heard that video."""
    import argparse

    from train import features, retrain
    gen = [mediagen.tone_clip(tmp_path / f"tone{i}.mp4", f) for i, f in enumerate((220.0, 330.0, 440.0, 660.0))]
    folder = tmp_path / "data"
    folder.mkdir()
    rows = []
    for u, clip in enumerate(gen):
        rows.append(MeldRow("Okay.", "A", "joy", "positive", 0, u, 1, 1, float(u), float(u) + 1.0))
        shutil.copy(clip, folder / f"dia0_utt{u}.mp4")
    write_meld_csv(rows, folder / "data.csv")
    args = argparse.Namespace(train=str(folder / "data.csv"), clips=str(folder), dev=None, limit=None, holdout=0.5,
                              seed=0, feature_cache=str(tmp_path / "cache"), jobs=1, quiet=True, dev_limit=None)
    data = retrain.load(args, tmp_path / "work", (0, 0), None, lambda message: None)
    assert data.held and len(data.train.rows) == 2 and len(data.dev.rows) == 2
    together = features.dialogue_voices([folder / f"dia0_utt{u}.mp4" for u in range(4)])
    for split, tag in ((data.train, "train"), (data.dev, "dev")):
        for r in split.rows:
            u = int(r.name.split("utt")[1].split(".")[0])
            assert np.allclose(data.feats[tag][r.name].voice_in_dialogue, together[u], atol=1e-5), r.name


# ---------------------------------------------------------------- fine-tuning the shipped model

def test_init_fine_tunes_and_keeps_the_text_encoder_deltas(tmp_path):
    from train.evaluate import predict_texts, text_encoder_for
    rng = np.random.default_rng(5)
    train_csv = write_split(tmp_path / "train", tone_items(tmp_path / "gen", rng, 8, "I am so happy for you!"))
    summary = train(tmp_path, "--train", str(train_csv), "--clips", str(train_csv.parent), "--init",
                    str(ck.DEFAULT_CHECKPOINT), "--epochs", "2", "--feature-cache", str(tmp_path / "cache"))
    shipped, tuned = ck.load_checkpoint(ck.DEFAULT_CHECKPOINT), ck.load_checkpoint(tmp_path / "model")
    assert summary["trained_modalities"] == ["text", "audio"] == tuned.card.trained_modalities
    assert tuned.card.text_encoder["context_turns"] == shipped.card.text_encoder["context_turns"]
    assert tuned.card.data["init"]["name"] == shipped.card.name
    assert tuned.text_state.keys() == shipped.text_state.keys()
    assert all(torch.equal(tuned.text_state[k], shipped.text_state[k]) for k in shipped.text_state)
    # what it knew from text stays (a few small steps at the lower fine-tuning rate)
    emo, _ = predict_texts(tuned, text_encoder_for(tuned), ["Get out of my house, I hate you!"], None)
    assert emo.argmax(-1).tolist() == [0]                    # anger


# ---------------------------------------------------------------- small pieces

def test_a_batch_of_one_trains():
    from core.model import EmotionModel
    data = loop.build_inputs([None], [3], [2], text=torch.randn(1, 384))
    model = EmotionModel()
    loss_fn = loop.Loss([3], [2], 0.5, 0.0, 0.5)
    optimizer, schedule = loop.make_optimizer(model, {}, 1e-3, 1e-4, 0.01, 2, 0.1)
    loss = loop.train_epoch(model, data, loop.TextSide(), {"text"}, loss_fn, optimizer, schedule,
                                 [[0]], quiet=True)
    assert np.isfinite(loss)
    batches = loop.shuffled_batches(17, 8, np.random.default_rng(0))
    assert sorted(len(b) for b in batches) == [8, 9] and sorted(i for b in batches for i in b) == list(range(17))


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "nothing.zip", "does not exist"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "holds no CSV"),
    (lambda d: (d / "bad.zip").write_bytes(b"PK\x03\x04 not really") and d / "bad.zip", "cannot be read as a zip"),
])
def test_bad_training_data_gives_one_line(tmp_path, make, message):
    with pytest.raises(SystemExit) as info:
        train(tmp_path, "--train", str(make(tmp_path)))
    assert str(info.value).startswith("error: ") and message in str(info.value)
