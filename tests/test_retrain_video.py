"""The R3D-18 video branch: trained only when weights exist, and learning when it is.

MOCKED: the real R3D-18 Kinetics-400 weights cannot be downloaded here, so these tests save a
seeded, randomly initialised R3D-18 as the "weights file". That is enough to check that the
branch's plumbing (weights file -> cached features -> trained projection and heads -> card ->
the app's pipeline) works end to end; it says nothing about how well real weights would do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core import checkpoint as ck
from core import encoders
from core.model import EmotionModel, ModelConfig, with_modalities
from tests import mediagen
from tests.test_retrain import assert_learned, held_out, labelled_splits, train, write_split


@pytest.fixture(scope="module")
def r3d_weights(tmp_path_factory) -> Path:
    """A seeded random R3D-18 saved as safetensors (stand-in for the Kinetics-400 file). Its
    batch-norm statistics are measured on random clips, as a trained network's are on its data
    (at their defaults every layer would squash the differences between clips)."""
    from safetensors.torch import save_file
    from torchvision.models.video import r3d_18
    torch.manual_seed(0)
    net = r3d_18(weights=None)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.momentum = None                     # a plain average over the calibration batch
            m.reset_running_stats()
    with torch.no_grad():
        net.train()(torch.rand(4, 3, encoders.VIDEO_FRAMES, encoders.VIDEO_SIZE, encoders.VIDEO_SIZE) * 2 - 1)
    path = tmp_path_factory.mktemp("r3d") / "r3d18_stand_in.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def tint_items(folder: Path, rng, n: int) -> list:
    """Half warm pictures (joy), half cool ones (sadness); silent, no face, same words."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        warm = i % 2 == 0
        main, other = rng.integers(170, 256), rng.integers(40, 120)
        rgb = (main, rng.integers(80, 160), other) if warm else (other, rng.integers(80, 160), main)
        items.append(("Okay.", "joy" if warm else "sadness", mediagen.tinted_clip(folder / f"tint{i}.mp4", rgb)))
    return items


def test_video_branch_learns_a_picture_cue_and_the_app_uses_it(tmp_path, r3d_weights, monkeypatch):
    monkeypatch.delenv(encoders.VIDEO_WEIGHTS_ENV, raising=False)
    train_csv, test_csv, cache = labelled_splits(tmp_path, tint_items, 3, 16, 8)
    summary = train(tmp_path, "--train", str(train_csv), "--clips", str(train_csv.parent), "--holdout", "0.25",
                    "--modalities", "video", "--video-weights", str(r3d_weights), "--epochs", "30",
                    "--patience", "30", "--lr", "3e-3", "--feature-cache", str(cache), "--batch-size", "4")
    assert summary["trained_modalities"] == ["video"]
    card = ck.read_card(tmp_path / "model")
    assert card.trained_modalities == ["video"] and card.data["train"]["rows_with_video"] == 12
    assert card.video_encoder["weights"] == str(r3d_weights) and len(card.video_encoder["sha256"]) == 64
    from train.video_features import video_features             # a second pass reads the cache only
    clips = {c.stem: c for c in sorted(train_csv.parent.glob("dia*_utt0.mp4"))}
    _, again = video_features(clips, encoders.VideoEncoder(str(r3d_weights)), cache, quiet=True)
    assert len(clips) == 16 and again.extracted == 0 and again.from_cache == 16
    result = held_out(tmp_path / "model", test_csv, cache)
    assert result["heads"]["video"]["rows"] == 8
    assert_learned(result, "video", 7)                      # chance: 4 of 8

    # the app's pipeline loads the video branch from the card and gives its opinion
    from core.pipeline import load_models, _predict
    from core.types import Utterance, UtterancePrediction
    models = load_models(tmp_path / "model", device="cpu")
    assert models.video_encoder is not None and models.signature()["video"] == card.video_encoder["sha256"]
    frames = np.stack([np.full((64, 96, 3), (230, 110, 60), np.uint8)] * encoders.VIDEO_FRAMES)
    preds = [UtterancePrediction(index=0, utterance=Utterance(0.0, 1.0, "Okay."))]
    text = models.text_encoder.encode(["Okay."])
    _predict(models, preds, text, [None], [None], [False], [models.video_encoder.encode(frames)])
    video = next(o for o in preds[0].opinions if o.modality == "video")
    assert video.present and video.used_in_fusion and len(video.emotion_probs) == 7


def test_video_is_not_trained_without_weights_and_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(encoders.VIDEO_WEIGHTS_ENV, raising=False)
    rng = np.random.default_rng(4)
    train_csv = write_split(tmp_path / "train", tint_items(tmp_path / "gen", rng, 2))
    with pytest.raises(SystemExit, match="R3D-18 weights not found"):
        train(tmp_path, "--train", str(train_csv), "--clips", str(train_csv.parent),
              "--modalities", "text,video", "--video-weights", str(tmp_path / "missing.safetensors"))
    pickle = tmp_path / "r3d.pth"
    pickle.write_bytes(b"not a safetensors file")
    with pytest.raises(SystemExit, match="never a pickle"):
        train(tmp_path, "--train", str(train_csv), "--clips", str(train_csv.parent),
              "--modalities", "video", "--video-weights", str(pickle))


def test_video_encoder_refuses_other_weights_than_the_checkpoint_learned_on(r3d_weights):
    assert encoders.VideoEncoder(str(r3d_weights)).digest == encoders.VideoEncoder(
        str(r3d_weights), sha256=encoders.VideoEncoder(str(r3d_weights)).digest).digest
    with pytest.raises(encoders.EncoderUnavailable, match="sha256 differs"):
        encoders.VideoEncoder(str(r3d_weights), sha256="0" * 64)


def test_adding_a_branch_to_a_trained_model_changes_nothing_until_it_learns():
    torch.manual_seed(0)
    model = EmotionModel(ModelConfig(text_dim=16)).eval()
    wider = with_modalities(model, model.config.modalities + ("video",)).eval()
    inputs = {"text": torch.randn(4, 16), "face": torch.randn(4, encoders.FACE_DIM),
              "audio": torch.randn(4, encoders.AUDIO_DIM)}
    with torch.no_grad():
        before = model(inputs)
        after = wider({**inputs, "video": torch.randn(4, encoders.VIDEO_DIM)})
    assert wider.config.modalities == ("text", "face", "audio", "video")
    assert torch.allclose(before.emotion_logits, after.emotion_logits, atol=1e-5)
    assert torch.allclose(before.sentiment_logits, after.sentiment_logits, atol=1e-5)
    with pytest.raises(ValueError, match="cannot drop"):
        with_modalities(model, ("text",))
