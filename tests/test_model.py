"""Model, checkpoint and the text/audio/video encoders (real packaged weights, no mocks)."""

import json

import numpy as np
import pytest
import torch

from core import checkpoint as ck
from core import encoders
from core.model import EmotionModel, ModelConfig
from core.precision import native_bf16
from core.text import (TEXT_PRECISION_ENV, TextEncoder, build_context,
                       build_contexts, length_batches, load_text_encoder, text_precision)


def _inputs(batch: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"text": torch.randn(batch, 384, generator=g),
            "face": torch.rand(batch, encoders.FACE_DIM, generator=g),
            "audio": torch.randn(batch, encoders.AUDIO_DIM, generator=g)}


def test_forward_shapes_and_per_modality_heads():
    model = EmotionModel().eval()
    out = model(_inputs(4))
    assert out.emotion_logits.shape == (4, 7) and out.sentiment_logits.shape == (4, 3)
    assert set(out.modality_logits) == {"text", "face", "audio"}


def test_masked_modality_has_no_influence():
    model = EmotionModel().eval()
    a, b = _inputs(3, seed=1), _inputs(3, seed=1)
    b["face"] = torch.rand_like(b["face"]) * 5          # a different face ...
    mask = {"face": torch.tensor([False, False, False])}
    with torch.no_grad():
        ea, eb = model(a, mask).emotion_logits, model(b, mask).emotion_logits
        ec = model(b).emotion_logits                     # ... that matters when unmasked
    assert torch.allclose(ea, eb)
    assert not torch.allclose(ea, ec)


def test_batch_of_one_trains():
    model = EmotionModel().train()
    out = model(_inputs(1))
    out.emotion_logits.sum().backward()                  # LayerNorm: no BatchNorm batch-size error
    assert model.encoders["audio"][2].weight.grad is not None


def test_checkpoint_round_trip_is_exact(tmp_path):
    model = EmotionModel(ModelConfig(modalities=("text", "audio"))).eval()
    card = ck.ModelCard(name="t", trained_modalities=["text"], metrics={"dev": {"emotion_weighted_f1": 50.0}})
    text_state = {"bert.pooler.dense.bias": torch.arange(384, dtype=torch.float32) / 384}
    ck.save_checkpoint(tmp_path, model, card, text_state)
    loaded = ck.load_checkpoint(tmp_path)
    x = _inputs(2)
    x.pop("face")
    with torch.no_grad():
        assert torch.equal(model(x).emotion_logits, loaded.model(x).emotion_logits)
    assert loaded.card.trained_modalities == ["text"] and loaded.card.trained
    assert loaded.model.config.modalities == ("text", "audio")
    assert torch.allclose(loaded.text_state["bert.pooler.dense.bias"], text_state["bert.pooler.dense.bias"], atol=1e-3)
    assert not any(p.suffix in ck.PICKLE_SUFFIXES for p in tmp_path.iterdir())


def test_pickle_only_folder_is_refused(tmp_path):
    model = EmotionModel()
    ck.save_checkpoint(tmp_path, model, ck.ModelCard())
    (tmp_path / ck.MODEL_FILE).unlink()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    with pytest.raises(ck.CheckpointError, match="pickled weights are refused"):
        ck.load_checkpoint(tmp_path)


def test_wrong_shapes_and_bad_card_are_clear(tmp_path):
    ck.save_checkpoint(tmp_path, EmotionModel(), ck.ModelCard())
    card = json.loads((tmp_path / ck.CARD_FILE).read_text())
    card["model"]["hidden"] = 64
    (tmp_path / ck.CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ck.CheckpointError, match="do not match") as err:
        ck.load_checkpoint(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / ck.CARD_FILE).write_text("{not json")
    with pytest.raises(ck.CheckpointError, match="not a valid card"):
        ck.load_checkpoint(tmp_path)


def test_untrained_card_says_so():
    c = ck.untrained()
    assert not c.card.trained and c.card.summary()["trained"] is False


@pytest.fixture(scope="module")
def text_encoder():
    return load_text_encoder()


def test_text_encoder_meaningful_and_context_aware(text_encoder):
    v = text_encoder.encode(["I am so happy for you!", "I am really glad for you!",
                             "The train leaves at nine."])
    assert v.shape == (3, 384)
    cos = torch.nn.functional.cosine_similarity
    assert cos(v[0:1], v[1:2]) > cos(v[0:1], v[2:3]) + 0.2
    alone = text_encoder.encode(["Really?"])
    with_ctx = text_encoder.encode(["Really?"], ["You won the lottery!"])
    assert not torch.allclose(alone, with_ctx, atol=1e-3)
    assert cos(alone, with_ctx) > 0.5                      # still the same utterance


def test_length_batches_group_similar_lengths_and_keep_every_index():
    lengths = [60, 12, 58, 14, 61, 13, 15, 59]
    groups = length_batches(lengths, batch_size=32, overhead=30)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert [sorted(lengths[i] for i in g) for g in groups] == [[12, 13, 14, 15], [58, 59, 60, 61]]
    # a batch that costs more than the padding it saves stays one batch; batch_size caps a batch
    assert length_batches(lengths, batch_size=32, overhead=10_000) == [[1, 5, 3, 6, 2, 7, 0, 4]]
    assert max(len(g) for g in length_batches(lengths, batch_size=3, overhead=0)) <= 3
    assert length_batches([], batch_size=32) == []


def test_text_vectors_do_not_depend_on_the_batch_they_are_read_in():
    """encode() regroups utterances by length; each one's vector is what it gets read alone
    (fp32: the arithmetic; bf16 rounds differently with a batch's shape)."""
    text_encoder = TextEncoder(precision="fp32")
    texts = ["Okay.", "I told you a hundred times that I am not going to that party with him!",
             "Really?", "What are you doing here at this hour of the night, Joey?", "No."]
    contexts = ["Hi.", "", "You won the lottery! | Sit down.", "Hey.", ""]
    together = text_encoder.encode(texts, contexts)
    alone = torch.cat([text_encoder.encode([t], [c]) for t, c in zip(texts, contexts)])
    assert torch.allclose(together, alone, atol=1e-4)


def test_text_precision_is_bf16_on_a_cpu_that_computes_it_natively_and_fp32_when_asked(monkeypatch):
    monkeypatch.delenv(TEXT_PRECISION_ENV, raising=False)
    native = native_bf16()
    assert text_precision("cpu") == ("bf16" if native else "fp32")
    assert text_precision("cuda") == "fp32"         # a GPU halves the encoder itself instead
    for value in ("fp32", "FP32", "nonsense"):
        monkeypatch.setenv(TEXT_PRECISION_ENV, value)
        assert text_precision("cpu") == "fp32"
    assert TextEncoder(precision="fp32").precision() == "fp32"     # training asks for fp32


def test_bf16_text_vectors_stay_close_to_fp32(monkeypatch):
    """What the app reads on a bf16 CPU (autocast) is the fp32 encoder's reading, a little rounded:
    the same nearest neighbours, cosine above 0.995 (MELD dev moves by < 0.1 F1: README)."""
    if not native_bf16():
        pytest.skip("this CPU has no native bfloat16: the text encoder runs in fp32 here")
    monkeypatch.delenv(TEXT_PRECISION_ENV, raising=False)
    texts = ["I am so happy for you!", "Get out of my house, I hate you!", "Okay.", "Really?"]
    contexts = ["Hi. | How are you?", "", "Fine.", "You won the lottery!"]
    enc = TextEncoder()
    assert enc.precision() == "bf16"
    fast = enc.encode(texts, contexts)
    enc.fixed_precision = "fp32"
    exact = enc.encode(texts, contexts)
    assert fast.dtype == torch.float32 and not torch.equal(fast, exact)      # autocast really ran
    assert float(torch.nn.functional.cosine_similarity(fast, exact).min()) > 0.995


def test_bf16_weight_copies_read_what_autocast_reads_and_follow_a_changed_weight(monkeypatch):
    """encode() hands autocast bfloat16 copies of the Linear weights (so it does not cast them at
    every call): the vectors are those of plain autocast over the fp32 weights, bit for bit, and a
    weight changed in place (a LoRA merge) is copied again, never read stale."""
    if not native_bf16():
        pytest.skip("this CPU has no native bfloat16: the text encoder runs in fp32 here")
    monkeypatch.delenv(TEXT_PRECISION_ENV, raising=False)
    texts = ["I am so happy for you!", "Get out of my house, I hate you!", "Okay."]
    contexts = ["Hi. | How are you?", "", "Fine."]
    enc = TextEncoder()

    def plain_autocast() -> torch.Tensor:
        batch = enc.tokenize(texts, contexts)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return enc(batch).float()

    assert torch.equal(enc.encode(texts, contexts), plain_autocast())
    copies = enc.bf16_linear_weights()
    assert copies and all(t.dtype == torch.bfloat16 for t in copies.values())
    assert enc.bf16_linear_weights() is copies                     # reused while nothing changes
    with torch.no_grad():
        next(m for m in enc.bert.modules() if isinstance(m, torch.nn.Linear)).weight.mul_(1.5)
    changed = enc.encode(texts, contexts)
    assert enc.bf16_linear_weights() is not copies
    assert torch.equal(changed, plain_autocast())

def test_build_context_most_recent_first():
    texts = ["a", "b", "c", "d"]
    assert build_context(texts, 3, 2) == "c | b"
    assert build_context(texts, 0, 3) == ""


def test_build_context_reads_the_following_utterance_first():
    texts = ["a", "b", "c", "d"]
    assert build_context(texts, 1, 2, ahead=1) == "c || a"
    assert build_context(texts, 0, 2, ahead=1) == "b ||"          # nothing before
    assert build_context(texts, 3, 2, ahead=1) == "|| c | b"      # nothing after
    assert build_context(["only"], 0, 3, ahead=1) == ""
    assert build_contexts(texts, 0) is None
    assert build_contexts(texts, 1, 1) == ["b ||", "c || a", "d || b", "|| c"]


def test_card_context_defaults_for_old_cards():
    card = ck.ModelCard(text_encoder={"name": "minilm", "context_turns": 3})
    assert card.context == (3, 0)
    card.text_encoder["context_ahead"] = 1
    assert card.context == (3, 1) and card.summary()["context_ahead"] == 1


def test_silence_is_no_voice():
    t = np.arange(16000 * 2) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    assert encoders.audio_is_silent(np.zeros(16000, np.float32))
    assert not encoders.audio_is_silent(tone)


def test_late_fusion_neutral_is_no_evidence():
    """core.model.late_fuse: one modality alone is unchanged; an emotional opinion beats a neutral one
    either way round (flat words + angry voice -> anger; angry words + flat voice -> anger)."""
    from core.labels import EMOTIONS
    from core.model import late_fuse
    n, a, j = EMOTIONS.index("neutral"), EMOTIONS.index("anger"), EMOTIONS.index("joy")

    def logits(**p):
        v = torch.full((1, 7), 0.01)
        for k, x in p.items():
            v[0, EMOTIONS.index(k)] = x
        return (v / v.sum()).log()

    flat, angry = logits(neutral=0.8, joy=0.1), logits(anger=0.9, neutral=0.02)
    one = torch.ones(1)
    assert torch.allclose(late_fuse(flat, [(angry, torch.zeros(1), torch.tensor(1.0))], n).exp(),
                          flat.exp(), atol=1e-6)                       # absent: unchanged
    assert late_fuse(flat, [(angry, one, torch.tensor(1.0))], n).argmax().item() == a
    assert late_fuse(angry, [(flat, one, torch.tensor(1.0))], n).argmax().item() == a
    both = late_fuse(flat, [(flat, one, torch.tensor(1.0))], n)
    assert both.argmax().item() == n and abs(both.exp().sum().item() - 1) < 1e-5
    happy = logits(joy=0.9, neutral=0.05)
    assert late_fuse(happy, [(angry, one, torch.tensor(0.5))], n).argmax().item() == j   # weights decide


def test_a_voice_read_for_sentiment_off_its_emotion_never_contradicts_it():
    """ModelConfig.sentiment_from_emotion: the modality's sentiment is the summed probability of the
    emotions of each polarity, whatever its own sentiment head says; with_own_sentiment (a retraining
    on real sentiment labels) gives the head back; the setting survives the card round trip."""
    from core.labels import EMOTIONS, SENTIMENTS
    from core.model import sentiment_of_emotion, with_own_sentiment
    config = ModelConfig(late=("audio",), sentiment_from_emotion=("audio",))
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="sentiment_from_emotion"):
        ModelConfig.from_dict({**config.to_dict(), "modalities": ["text", "face"], "late": []})
    model = EmotionModel(config).eval()
    with torch.no_grad():
        model.sentiment_by["audio"].bias.copy_(torch.tensor([50.0, 0.0, 0.0]))   # a head sure of "negative"
        model.emotion_by["audio"].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 6.0, 0.0, 0.0, 0.0]))   # joy
        emotion, sentiment = model(_inputs(3)).modality_logits["audio"]
    p_e, p_s = emotion.softmax(-1), sentiment.softmax(-1)
    pos, neg = SENTIMENTS.index("positive"), SENTIMENTS.index("negative")
    assert torch.allclose(p_s[:, pos], p_e[:, EMOTIONS.index("joy")], atol=1e-5)
    assert torch.allclose(p_s[:, neg], p_e[:, [EMOTIONS.index(e) for e in ("anger", "disgust", "fear", "sadness")]].sum(-1),
                          atol=1e-5)
    assert (p_s.argmax(-1) == pos).all()                                      # joy reads positive
    assert torch.allclose(sentiment_of_emotion(emotion).exp().sum(-1), torch.ones(3), atol=1e-5)
    assert with_own_sentiment(model, {"audio", "text"}) == ["audio"] and model.config.sentiment_from_emotion == ()
    with torch.no_grad():
        assert (model(_inputs(3)).modality_logits["audio"][1].argmax(-1) == neg).all()   # its head again


def test_model_batch_leaves_out_what_no_row_has():
    from core.model import model_batch
    config = ModelConfig()
    feats = _inputs(3)
    present = {"text": torch.ones(3, dtype=torch.bool), "face": torch.tensor([True, False, True]),
               "audio": torch.zeros(3, dtype=torch.bool)}
    inputs, mask = model_batch(config, feats, present, lambda m: m != "face")
    assert set(inputs) == {"text", "face"}                    # no row has audio: its branch is not run
    assert mask["face"].tolist() == [False, False, False]      # not used: masked everywhere
    assert mask["text"].tolist() == [True, True, True]


def test_sample_times_span_whole_utterance():
    ts = encoders.sample_times(10.0, 18.0, 8)
    assert len(ts) == 8 and ts[0] < 11.0 and ts[-1] > 17.0


def test_video_encoder_refuses_without_kinetics_weights(tmp_path):
    bad = tmp_path / "r3d.safetensors"
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(bad))
    with pytest.raises(encoders.EncoderUnavailable, match="do not load"):
        encoders.VideoEncoder(str(bad))


def test_a_torch_that_cannot_say_whether_the_cpu_has_bf16_runs_fp32(monkeypatch):
    """The question is a private torch API: where it is missing, the answer is "no", not a crash."""
    from core import precision

    class NoAnswer:
        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(torch.ops, "mkldnn", NoAnswer())
    precision.native_bf16.cache_clear()
    try:
        assert precision.native_bf16() is False
        monkeypatch.delenv(TEXT_PRECISION_ENV, raising=False)
        assert text_precision("cpu") == "fp32"
    finally:
        monkeypatch.undo()
        precision.native_bf16.cache_clear()
