"""An unfamiliar voice counts less in fusion (core.familiarity), and the gate travels with the checkpoint.

Fast tests on the arithmetic and the model; the shipped head's gate on real speech (held-out
RAVDESS actors counted fully, a speech synthesiser not) is in tests/test_voice.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core import checkpoint as ck
from core import familiarity
from core.labels import EMOTIONS
from core.model import EmotionModel, ModelConfig


def test_distance_is_the_share_of_energy_outside_the_learned_directions():
    basis = torch.eye(4)[:2]                       # the first two of four dimensions
    inside = torch.tensor([[3.0, -1.0, 0.0, 0.0]])
    outside = torch.tensor([[0.0, 0.0, 2.0, 0.0]])
    mixed = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    assert familiarity.distance(inside, basis).item() == pytest.approx(0.0)
    assert familiarity.distance(outside, basis).item() == pytest.approx(4.0 / 4)
    assert familiarity.distance(mixed, basis).item() == pytest.approx(2.0 / 4)


def test_reliance_is_full_up_to_full_none_from_none_and_linear_between():
    d = torch.tensor([0.1, 0.5, 0.75, 1.0, 3.0])
    assert familiarity.reliance(d, 0.5, 1.0).tolist() == pytest.approx([1.0, 1.0, 0.5, 0.0, 0.0])


def test_held_out_distances_are_larger_for_a_voice_unlike_the_others():
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((3, 16))             # speakers vary along 3 directions of 16
    x = rng.standard_normal((120, 3)) @ mix + 0.05 * rng.standard_normal((120, 16))
    groups = np.repeat(np.arange(6), 20)
    held = familiarity.held_out_distances(x, groups, components=3)
    stranger = x[:1] + 3.0 * rng.standard_normal((1, 16))
    mean, std = x.mean(0), x.std(0)
    far = familiarity.distance(torch.from_numpy(((stranger - mean) / std).astype(np.float32)),
                               torch.from_numpy(familiarity.fit_basis((x - mean) / std, 3)))
    assert float(far) > 10 * float(np.percentile(held, 99))


def _model_with_gate(full: float = 0.5, none: float = 1.0) -> EmotionModel:
    torch.manual_seed(0)
    config = ModelConfig(modalities=("text", "audio"), text_dim=8, audio_dim=6, late=("audio",), voice_familiarity=2)
    model = EmotionModel(config).eval()
    with torch.no_grad():
        model.emotion_by["audio"].bias.copy_(torch.tensor([9.0, 0, 0, 0, 0, 0, 0]))   # the voice: anger
        model.sentiment_by["audio"].bias.copy_(torch.tensor([9.0, 0, 0]))
    model.familiarity.set(np.eye(6, dtype=np.float32)[:2], full, none)
    return model


def test_a_familiar_voice_counts_fully_and_an_unfamiliar_one_not_at_all():
    model = _model_with_gate()
    text = torch.randn(2, 8)
    familiar = torch.tensor([[2.0, 1.0, 0, 0, 0, 0]])           # inside the learned directions
    stranger = torch.tensor([[0.0, 0.0, 3.0, 3.0, 3.0, 3.0]])   # all outside: distance 6
    voices = torch.cat([familiar, stranger])
    on = {"text": torch.ones(2, dtype=torch.bool), "audio": torch.ones(2, dtype=torch.bool)}
    out = model({"text": text, "audio": voices}, on)
    alone = model({"text": text}, {"text": on["text"]})
    assert out.late_share["audio"].tolist() == pytest.approx([1.0, 0.0])
    anger = EMOTIONS.index("anger")
    assert out.emotion_logits.softmax(-1)[0, anger] > 0.3                  # the familiar voice was heard
    assert torch.allclose(out.emotion_logits[1].softmax(-1), alone.emotion_logits[1].softmax(-1), atol=1e-5)
    assert torch.allclose(out.sentiment_logits[1].softmax(-1), alone.sentiment_logits[1].softmax(-1), atol=1e-5)
    # its own opinion is still computed and shown: anger, sure
    assert out.modality_logits["audio"][0][1].softmax(-1)[anger] > 0.9


def test_an_unfitted_gate_and_a_model_without_one_count_every_voice():
    config = ModelConfig(modalities=("text", "audio"), text_dim=8, audio_dim=6, late=("audio",))
    for cfg in (config, ModelConfig.from_dict({**config.to_dict(), "voice_familiarity": 2})):
        model = EmotionModel(cfg).eval()
        out = model({"text": torch.randn(3, 8), "audio": 100 * torch.randn(3, 6)},
                    {"text": torch.ones(3, dtype=torch.bool), "audio": torch.tensor([True, False, True])})
        assert out.late_share["audio"].tolist() == [1.0, 0.0, 1.0]


def test_the_gate_is_saved_with_the_voice_and_loads_back(tmp_path):
    model = _model_with_gate(0.4, 0.9)
    card = ck.ModelCard(model=model.config.to_dict(),
                        data={"voice": {"licence": "CC BY-NC-SA 4.0", "notice": "test"}})
    ck.save_checkpoint(tmp_path / "m", model, card)
    from safetensors.torch import load_file
    voice = load_file(str(tmp_path / "m" / ck.VOICE_FILE))
    assert {"familiarity.basis", "familiarity.full", "familiarity.none"} <= set(voice)
    back = ck.load_checkpoint(tmp_path / "m").model
    assert float(back.familiarity.full) == pytest.approx(0.4) and float(back.familiarity.none) == pytest.approx(0.9)
    assert torch.equal(back.familiarity.basis, model.familiarity.basis)


@pytest.mark.parametrize("value", [-1, 10**6, 2.5, True])
def test_a_card_asking_for_an_absurd_gate_is_refused_before_any_tensor(tmp_path, value):
    model = EmotionModel(ModelConfig(modalities=("text", "audio"), text_dim=8, audio_dim=6, late=("audio",)))
    ck.save_checkpoint(tmp_path / "m", model, ck.ModelCard(model=model.config.to_dict()))
    import json
    path = tmp_path / "m" / ck.CARD_FILE
    raw = json.loads(path.read_text())
    raw["model"]["voice_familiarity"] = value
    path.write_text(json.dumps(raw))
    with pytest.raises(ck.CheckpointError, match="voice_familiarity"):
        ck.load_checkpoint(tmp_path / "m")
