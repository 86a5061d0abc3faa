"""LoRA on the packaged MiniLM (core.lora) and resumable training (train.resume), on the real encoder."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core import checkpoint as ck
from core import encoders, lora
from core.text import (MPNET_FOLDER, MPNET_HUB, MPNET_TEXT_MODEL, SEGMENT_KEY,
                       TEXT_MODELS_ENV, TextEncoder, apply_text_state, resolve_text_model)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY = FIXTURES / "train_tiny.csv"
TEXTS = ["I am so happy for you!", "Get out of my house, I hate you!"]
CONTEXTS = ["Hi. | How are you?", ""]


def _trained_lora(encoder, rank=4):
    """LoRA on every layer, with B filled in as if trained (a fresh B is zero and changes nothing)."""
    params = lora.add_lora(encoder.bert.encoder.layer, list(range(6)), rank, alpha=2.0 * rank)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in params.items():
            if name.endswith(lora.B_SUFFIX):
                p.normal_(0.0, 0.02)
    return params


def test_merged_lora_gives_the_same_vectors_as_the_adapted_encoder():
    exact = "fp32"                       # the arithmetic is compared, so no bfloat16 autocast
    adapted = TextEncoder(precision=exact)
    params = _trained_lora(adapted)
    want = adapted.eval().encode(TEXTS, CONTEXTS)
    plain = TextEncoder(precision=exact).eval().encode(TEXTS, CONTEXTS)
    assert (want - plain).abs().max() > 1e-2                 # the update matters
    merged = apply_text_state(TextEncoder(precision=exact), lora.export(params, scale=2.0))
    assert not any(isinstance(m, lora.LoRALinear) for m in merged.modules())   # plain layers: plain cost
    assert torch.allclose(merged.encode(TEXTS, CONTEXTS), want, atol=1e-4)


def test_stacked_updates_equal_both_applied_one_after_the_other():
    first = lora.export(_trained_lora(TextEncoder(), rank=2), 2.0)
    second = {k: v * 0.5 for k, v in first.items()}          # any second update on the same layers
    both = lora.combine(first, second)
    assert lora.rank_of(both) == 4
    one_by_one = apply_text_state(apply_text_state(TextEncoder(precision="fp32"), first),
                                           second)
    stacked = apply_text_state(TextEncoder(precision="fp32"), both)
    assert torch.allclose(one_by_one.encode(TEXTS), stacked.encode(TEXTS), atol=1e-4)


def test_lora_tensors_that_do_not_fit_are_refused_in_one_line():
    bad = {"bert.encoder.layer.0.attention.self.query.lora_A": torch.zeros(4, 100),
           "bert.encoder.layer.0.attention.self.query.lora_B": torch.zeros(384, 4)}
    with pytest.raises(encoders.EncoderUnavailable, match="do not fit"):
        apply_text_state(TextEncoder(), bad)
    lonely = {"bert.encoder.layer.0.attention.self.query.lora_B": torch.zeros(384, 4)}
    with pytest.raises(encoders.EncoderUnavailable, match="no A"):
        apply_text_state(TextEncoder(), lonely)


def _train(tmp_path, out, *extra):
    from train import train
    threads = torch.get_num_threads()
    try:
        return train.main(["--train", str(TINY), "--dev", str(TINY), "--out", str(out), "--epochs", "2",
                           "--threads", "1", "--batch-size", "14", "--tune-layers", "0", "--lora-rank", "4",
                           "--lr", "3e-3", "--encoder-lr", "1e-3", "--ema", "0.9", "--context-turns", "2",
                           "--context-ahead", "1", "--seed", "3", "--quiet", "--no-final-eval", *extra])
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """A 2-epoch LoRA run on the tiny fixture, never stopped: (its summary, its folder)."""
    tmp = tmp_path_factory.mktemp("whole")
    return _train(tmp, tmp / "model", "--tb", str(tmp / "tb")), tmp / "model"


def test_lora_run_stopped_after_one_epoch_resumes_to_the_same_weights(tmp_path, whole):
    whole, whole_dir = whole
    stopped = _train(tmp_path, tmp_path / "parts", "--tb", str(tmp_path / "tb-parts"), "--stop-after", "1")
    assert stopped["epochs_run"] == 1 and (tmp_path / "tb-parts" / "resume.pt").is_file()
    resumed = _train(tmp_path, tmp_path / "parts", "--tb", str(tmp_path / "tb-parts"), "--resume")
    assert resumed["epochs_run"] == 2 and resumed["best_epoch"] == whole["best_epoch"]
    for name in (ck.MODEL_FILE, ck.TEXT_FILE):
        a, b = load_file(str(whole_dir / name)), load_file(str(tmp_path / "parts" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    card = ck.read_card(tmp_path / "parts")
    assert card.text_encoder["lora"]["rank"] == 4 and card.text_encoder["lora"]["layers"] == list(range(6))
    text = load_file(str(tmp_path / "parts" / ck.TEXT_FILE))
    assert text and all(lora.is_lora(k) for k in text)            # only the adapter is stored
    assert sum(t.numel() for t in text.values()) < 200_000
    # resuming with other training arguments is refused in one line
    with pytest.raises(SystemExit, match="--encoder-lr"):
        _train(tmp_path, tmp_path / "parts", "--tb", str(tmp_path / "tb-parts"), "--resume", "--encoder-lr", "2e-3")


def test_new_words_go_into_the_shipped_checkpoint_and_its_voice_stays(tmp_path, whole):
    from train import swap_text
    from train.evaluate import predict_texts, text_encoder_for
    _, text_dir = whole
    swap_text.main(["--text", str(text_dir), "--into", str(ck.DEFAULT_CHECKPOINT), "--out", str(tmp_path / "m")])
    shipped, text, swapped = (ck.load_checkpoint(d) for d in (ck.DEFAULT_CHECKPOINT, text_dir, tmp_path / "m"))
    assert (tmp_path / "m" / ck.VOICE_FILE).read_bytes() == (ck.DEFAULT_CHECKPOINT / ck.VOICE_FILE).read_bytes()
    assert swapped.card.data["voice"] == shipped.card.data["voice"] and swapped.card.data["fusion"]["late"]
    assert swapped.card.text_encoder == text.card.text_encoder and swapped.card.trained_modalities == ["text", "audio"]
    # the words alone (no voice) read exactly as the text model read them
    words = ["I am so happy for you!", "Get out of my house, I hate you!", "Okay."]
    got = predict_texts(swapped, text_encoder_for(swapped), words, None)
    want = predict_texts(text, text_encoder_for(text), words, None)
    assert all(torch.allclose(g, w, atol=1e-5) for g, w in zip(got, want))


def test_a_wider_text_model_goes_into_the_shipped_checkpoint_and_its_voice_stays(tmp_path):
    """MPNet's vectors are 768-d where the shipped MiniLM's are 384-d: the text projection comes
    from the new model at its width, the voice branch exactly from the shipped checkpoint."""
    from core.model import EmotionModel, ModelConfig
    from train import swap_text
    torch.manual_seed(0)
    wide = EmotionModel(ModelConfig(modalities=("text", "face", "audio"), text_dim=768))
    card = ck.ModelCard(name="wide-text", text_encoder={"name": "mpnet", "dim": 768, "context_turns": 3},
                        trained_modalities=["text"])
    ck.save_checkpoint(tmp_path / "text", wide, card)
    swap_text.main(["--text", str(tmp_path / "text"), "--into", str(ck.DEFAULT_CHECKPOINT), "--out", str(tmp_path / "m")])
    shipped, swapped = ck.load_checkpoint(ck.DEFAULT_CHECKPOINT), ck.load_checkpoint(tmp_path / "m")
    assert swapped.model.config.text_dim == 768 and swapped.card.text_encoder["name"] == "mpnet"
    ours, theirs = swapped.model.state_dict(), shipped.model.state_dict()
    voice = [k for k in theirs if k.startswith(ck.VOICE_PREFIXES)]
    assert voice and all(torch.equal(ours[k], theirs[k]) for k in voice)
    text = [k for k in ours if k.startswith("encoders.text.")]
    assert text and all(torch.equal(ours[k], wide.state_dict()[k]) for k in text)


# ---------------------------------------------------------------- MPNet (all-mpnet-base-v2, scripts/get_mpnet.sh)

def _mpnet_or_skip():
    try:
        resolve_text_model(MPNET_TEXT_MODEL)
    except encoders.EncoderUnavailable as err:       # setup.sh --test fetches it; without it there is nothing to load
        pytest.skip(str(err))


def test_mpnet_comes_from_its_packages_offline_and_from_the_hub_online(tmp_path, monkeypatch):
    """Unpacked by scripts/get_mpnet.sh: that folder. Missing (a Space runs no setup.sh): the same
    weights from the Hugging Face Hub when it is reachable, else a one-line message naming the
    script. Reachability is mocked (this machine has no internet)."""
    from core import online
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))          # an empty cache: nothing unpacked
    monkeypatch.delenv(TEXT_MODELS_ENV, raising=False)
    monkeypatch.setattr(online, "reachable", lambda url, timeout=5.0: False)
    with pytest.raises(encoders.EncoderUnavailable, match="get_mpnet.sh"):
        resolve_text_model(MPNET_TEXT_MODEL)
    monkeypatch.setattr(online, "reachable", lambda url, timeout=5.0: url.startswith("https://huggingface.co/"))
    assert resolve_text_model(MPNET_TEXT_MODEL) == MPNET_HUB
    unpacked = tmp_path / "models" / MPNET_FOLDER
    unpacked.mkdir(parents=True)
    (unpacked / "model.safetensors").write_bytes(b"")
    assert resolve_text_model(MPNET_TEXT_MODEL) == str(unpacked)


def test_mpnet_utterance_is_pooled_over_its_own_tokens():
    """MPNet has no token_type_ids: the encoder marks the utterance's segment itself, so an
    utterance read with its dialogue is pooled over the positions it has when read alone."""
    _mpnet_or_skip()
    enc = TextEncoder(MPNET_TEXT_MODEL)
    batch = enc.tokenize(["Hello there."], ["Previous line. | Older line."])
    seg = batch[SEGMENT_KEY][0].tolist()
    alone = enc.tokenize(["Hello there."])["input_ids"][0].tolist()        # <s> hello there . </s>
    assert seg.count(0) == len(alone) and batch["input_ids"][0, :len(alone)].tolist() == alone
    assert seg[len(alone):] == [1] * (len(seg) - len(alone))
    assert "token_type_ids" not in batch


def test_mpnet_lora_run_loads_in_the_app_with_the_logits_it_had_in_memory(tmp_path, monkeypatch):
    """A few LoRA steps on the packaged MPNet (all 12 layers), saved, loaded by core.pipeline.load_models
    (merged into the weights): the same fused probabilities as the trained model in memory."""
    _mpnet_or_skip()
    from core import pipeline
    from train import loop, train
    seen = {}
    real_fit = loop.fit

    def spy(model, trainable, train_in, dev_in, text_side, use, *rest, **kw):
        result = real_fit(model, trainable, train_in, dev_in, text_side, use, *rest, **kw)
        seen.update(probs=loop.predict(model, dev_in, text_side, use)["emotion_probs"],
                    trainable={n: p.detach().clone() for n, p in trainable.items()})
        return result

    monkeypatch.setattr(loop, "fit", spy)
    out = tmp_path / "mpnet-lora"
    threads = torch.get_num_threads()
    try:
        train.main(["--train", str(TINY), "--dev", str(TINY), "--out", str(out), "--text-model", "mpnet",
                    "--epochs", "1", "--threads", "2", "--batch-size", "14", "--tune-layers", "0", "--lora-rank", "4",
                    "--lr", "3e-3", "--encoder-lr", "2e-3", "--context-turns", "2", "--context-ahead", "1",
                    "--seed", "1", "--quiet", "--no-final-eval", "--tb", str(tmp_path / "tb")])
    finally:
        torch.set_num_threads(threads)
    lora_b = [p for n, p in seen["trainable"].items() if n.endswith(lora.B_SUFFIX)]
    assert len(lora_b) == 12 * 6 and any(float(p.abs().max()) > 0 for p in lora_b)    # it learned something
    assert (out / ck.TEXT_FILE).stat().st_size < 10 * 1024 * 1024
    stored = load_file(str(out / ck.TEXT_FILE))
    assert all(lora.is_lora(k) for k in stored) and any(".attention.attn.q." in k for k in stored)
    card = ck.read_card(out)
    assert card.text_encoder["name"] == "mpnet" and card.text_encoder["lora"]["targets"] == list(lora.MPNET_TARGETS)

    models = pipeline.load_models(out, device="cpu")
    assert not any(isinstance(m, lora.LoRALinear) for m in models.text_encoder.modules())
    from train.data import load_text_split
    from train.evaluate import predict_texts
    split = load_text_split(TINY, 2, None, 1)
    probs, _ = predict_texts(models.checkpoint, models.text_encoder, [e.text for e in split.examples],
                             [e.context for e in split.examples])
    assert torch.allclose(probs, seen["probs"], atol=2e-3), (probs - seen["probs"]).abs().max()


def test_run_killed_inside_an_epoch_resumes_from_its_last_step_save_to_the_same_weights(tmp_path, monkeypatch):
    """--save-every N writes the state inside an epoch too; a run killed right after such a save
    (here: mid epoch 2) continues from that step and ends bit for bit where an unkilled run ends,
    reading the frozen layers' output it kept (--keep-states) instead of computing it again.
    LoRA on the top 3 layers only (--lora-layers 3): the 3 below are computed once and not stored."""
    from train import resume, text_layers
    common = ("--batch-size", "7", "--lora-layers", "3")
    whole_dir = tmp_path / "whole"
    _train(tmp_path, whole_dir, "--tb", str(tmp_path / "tb-whole"), *common)
    card = ck.read_card(whole_dir)
    assert card.text_encoder["lora"]["layers"] == [3, 4, 5]
    assert {int(k.split(".")[3]) for k in load_file(str(whole_dir / ck.TEXT_FILE))} == {3, 4, 5}

    real_save, saves = resume.save, []

    def save_then_die(*a, **kw):      # 4 steps an epoch: saves after step 2, epoch 1, step 2 of epoch 2 (killed)
        real_save(*a, **kw)
        saves.append(kw.get("partial"))
        if len(saves) == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(resume, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, tmp_path / "parts", "--tb", str(tmp_path / "tb-parts"), "--save-every", "2",
               "--keep-states", *common)
    assert [p["step"] if p else None for p in saves] == [2, None, 2]
    assert len(list((tmp_path / "tb-parts").glob("states-*.pt"))) == 1    # train and dev are one CSV here: one file
    monkeypatch.setattr(resume, "save", real_save)

    def not_again(*a, **kw):
        raise AssertionError("the frozen layers were computed again instead of read back")
    monkeypatch.setattr(text_layers, "frozen_states", not_again)
    _train(tmp_path, tmp_path / "parts", "--tb", str(tmp_path / "tb-parts"), "--resume", "--keep-states", *common)
    for name in (ck.MODEL_FILE, ck.TEXT_FILE):
        a, b = load_file(str(whole_dir / name)), load_file(str(tmp_path / "parts" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


# ---------------------------------------------------------------- train/gpu_text.sh: the encoder in pieces

MELD = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "meld"


def test_encoder_reaches_the_gpu_machine_in_pieces_and_loads_there(tmp_path, monkeypatch):
    """prepare cuts the base encoder (fp16) into pieces a device call can carry; calls that each
    carry one piece add up, on the far machine, to the encoder the aliases resolve to there."""
    from train import gpu_text
    if not (MELD / "train_sent_emo.csv").is_file():
        pytest.skip(f"MELD CSVs not found at {MELD}")
    here, there = tmp_path / "here" / ".gpu", tmp_path / "there"
    manifest = gpu_text.prepare("minilm", "fp16", MELD, here)
    pieces = sorted((here / "enc").iterdir())
    assert manifest["pieces"] == len(pieces) == 2 and all(p.stat().st_size <= gpu_text.PIECE_BYTES for p in pieces)
    calls = gpu_text.calls(manifest, "--tiny")
    assert [c["carry"] for c in calls] == [[".gpu/enc/piece-01"], [".gpu/meld", ".gpu/enc/piece-02"]]

    def call(carried: list[str]) -> Path:          # the working tree of one device call: only what it carries
        root = tmp_path / "call"
        shutil.rmtree(root, ignore_errors=True)
        for rel in carried:
            src, dst = here.parent / rel, root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copyfile(src, dst)
        return root / ".gpu"

    with pytest.raises(SystemExit, match="piece-01 never reached"):     # a fresh machine: the first call is missing
        gpu_text.assemble(call(calls[1]["carry"]), tmp_path / "fresh")
    assert gpu_text.receive(call(calls[0]["carry"]), there) == ["piece-01"]
    models = gpu_text.assemble(call(calls[1]["carry"]), there)
    monkeypatch.setenv(TEXT_MODELS_ENV, str(models))
    far = TextEncoder()                    # "minilm", resolved to the unpacked fp16 copy, run in fp32
    assert Path(resolve_text_model("minilm")).parent == models
    assert next(far.bert.parameters()).dtype == torch.float32
    monkeypatch.delenv(TEXT_MODELS_ENV)
    near = TextEncoder()
    assert torch.allclose(far.encode(TEXTS, CONTEXTS), near.encode(TEXTS, CONTEXTS), atol=5e-3)
