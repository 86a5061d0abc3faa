"""train.soup: runs of one recipe averaged into one checkpoint that the app loads (real MiniLM)."""

import copy
import json

import pytest
import torch

from core import checkpoint as ck
from core import lora
from core.text import TextEncoder, apply_text_state
from train import soup

TEXTS = ["I am so happy for you!", "Get out of my house, I hate you!", "Kids are talking by the door."]


def _run(seed: int, shared: dict[str, torch.Tensor]) -> ck.Checkpoint:
    """A checkpoint as a second LoRA stage leaves it: the shared first stage stacked with its own."""
    torch.manual_seed(seed)
    params = lora.add_lora(TextEncoder().bert.encoder.layer, list(range(6)), 2, alpha=4.0)
    with torch.no_grad():
        for name, p in params.items():
            if name.endswith(lora.B_SUFFIX):
                p.normal_(0.0, 0.02)
    model = ck.untrained(seed=seed)
    voice = {k: v for k, v in ck.untrained(seed=0).model.state_dict().items() if k.startswith(ck.VOICE_PREFIXES)}
    model.model.load_state_dict(voice, strict=False)              # one voice, as text runs share it
    card = ck.ModelCard(name=f"run-{seed}", trained_modalities=["text"],
                        text_encoder={"name": "minilm", "dim": 384, "context_turns": 0, "tuned": True,
                                      "lora": {"rank": 4}})
    return ck.Checkpoint(model.model, card, lora.combine(shared, lora.export(params, 2.0)))


@pytest.fixture(scope="module")
def runs():
    torch.manual_seed(99)
    first = lora.export(lora.add_lora(TextEncoder().bert.encoder.layer, list(range(6)), 2, alpha=4.0), 2.0)
    first = {k: (torch.randn_like(v) * 0.02 if k.endswith(lora.B_SUFFIX) else v) for k, v in first.items()}
    return [_run(seed, first) for seed in (1, 2, 3)]


def test_low_rank_holds_an_update_of_that_rank_exactly():
    torch.manual_seed(0)
    update = torch.randn(40, 3) @ torch.randn(3, 30)
    a, b, error = soup.low_rank(update, max_rank=64)
    assert a.shape == (3, 30) and b.shape == (40, 3)
    assert torch.allclose(b @ a, update, atol=1e-4) and error < 1e-5
    a, b, error = soup.low_rank(update, max_rank=2)          # a cut loses what the third direction held
    assert a.shape[0] == 2 and 0.01 < error < 1


def test_averaged_words_are_the_mean_of_the_runs_updates(runs):
    state, report = soup.soup_text_state([r.text_state for r in runs], max_rank=64)
    assert report["lora_rank"] == 2 + 3 * 2 and report["relative_error"] < 1e-5   # shared stage counted once
    name = next(k for k in state if k.endswith(lora.A_SUFFIX))
    layer = name[: -len(lora.A_SUFFIX)]
    want = sum(r.text_state[layer + lora.B_SUFFIX] @ r.text_state[name] for r in runs) / len(runs)
    assert torch.allclose(state[layer + lora.B_SUFFIX] @ state[name], want, atol=1e-6)


def test_soup_written_by_the_command_loads_and_reads_words_as_the_mean_update(tmp_path, runs):
    folders = []
    for r in runs:
        folders.append(str(tmp_path / r.card.name))
        ck.save_checkpoint(folders[-1], r.model, r.card, r.text_state, text_dtype=torch.float32)
    summary = soup.main(["--from", *folders, "--out", str(tmp_path / "soup")])
    assert summary["lora_rank"] == 8
    loaded = ck.load_checkpoint(tmp_path / "soup")
    card = json.loads((tmp_path / "soup" / "card.json").read_text())
    assert card["data"]["soup"]["from"] == ["run-1", "run-2", "run-3"] and card["text_encoder"]["lora"]["rank"] == 8
    for name, tensor in loaded.model.state_dict().items():          # fusion weights: the mean
        assert torch.allclose(tensor, sum(r.model.state_dict()[name] for r in runs) / 3, atol=1e-6)
    exact = "fp32"
    got = apply_text_state(TextEncoder(precision=exact), loaded.text_state).encode(TEXTS)
    mean_state = {}
    for k in runs[0].text_state:                  # the mean update as one stacked pair: [A_1; A_2; A_3], [B_i / 3]
        parts = [r.text_state[k] for r in runs]
        mean_state[k] = torch.cat(parts, 0) if k.endswith(lora.A_SUFFIX) else torch.cat(parts, 1) / 3
    want = apply_text_state(TextEncoder(precision=exact), mean_state).encode(TEXTS)
    assert torch.allclose(got, want, atol=1e-4)
    one = apply_text_state(TextEncoder(precision=exact), runs[0].text_state).encode(TEXTS)
    assert (one - want).abs().max() > 1e-3                           # the runs differ, so this says something


def test_runs_with_different_voices_or_shapes_are_refused_in_one_line(tmp_path, runs):
    other = ck.Checkpoint(copy.deepcopy(runs[1].model), copy.deepcopy(runs[1].card), runs[1].text_state)
    with torch.no_grad():
        next(p for n, p in other.model.named_parameters() if n.startswith(ck.VOICE_PREFIXES)).add_(1.0)
    untrained_voice, _ = soup.soup([runs[0], other])                 # text runs: the first run's voice, as it is
    assert all(torch.equal(v, runs[0].model.state_dict()[k]) for k, v in untrained_voice.model.state_dict().items()
               if k.startswith(ck.VOICE_PREFIXES))
    other.card.trained_modalities = ["text", "audio"]                  # a trained voice must be the same in all
    with pytest.raises(ck.CheckpointError, match="voice"):
        soup.soup([runs[0], other])
    with pytest.raises(ck.CheckpointError, match="at least two"):
        soup.soup(runs[:1])
    narrower = dict(runs[1].text_state)
    narrower.pop(next(iter(narrower)))
    with pytest.raises(ck.CheckpointError, match="different text-encoder tensors"):
        soup.soup([runs[0], ck.Checkpoint(runs[1].model, runs[1].card, narrower)])


def test_an_update_too_big_for_the_size_limit_is_cut_to_the_largest_rank_that_fits(runs, monkeypatch):
    whole, exact = soup.soup_text_state([r.text_state for r in runs])
    assert exact["lora_rank"] == 8 and exact["relative_error"] < 1e-5
    monkeypatch.setattr(soup, "SIZE_LIMIT_MB", exact["text_megabytes_fp16"] * 0.8)
    cut, report = soup.soup_text_state([r.text_state for r in runs])
    assert report["lora_rank"] < 8 and report["text_megabytes_fp16"] <= soup.SIZE_LIMIT_MB
    assert 0 < report["relative_error"] <= report["largest_relative_error"] < 1
    assert sum(t.numel() for t in cut.values()) * 2 / 1e6 == pytest.approx(report["text_megabytes_fp16"], abs=0.01)


def test_the_shipped_words_are_the_soup_their_card_describes():
    """assets/model: the card says what the app loads (three runs averaged, the rank stored), the
    notes the Model panel shows say so too, and the file stays under a Space's 10 MB limit."""
    shipped = ck.load_checkpoint(ck.DEFAULT_CHECKPOINT)
    described = shipped.card.data["soup"]
    assert described["runs"] == 3 and described["seeds"] == [2, 3, 4]
    assert shipped.card.text_encoder["lora"]["rank"] == lora.rank_of(shipped.text_state) == described["lora_rank"]
    assert "three averaged" in shipped.card.notes and "mpnet-lora16-top6-soup" in shipped.card.notes
    assert (ck.DEFAULT_CHECKPOINT / ck.TEXT_FILE).stat().st_size < 10 * 1024 * 1024
    assert shipped.card.metrics["dev"]["rows"] == 1109
