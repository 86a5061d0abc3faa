"""Train the emotion/sentiment model on a MELD-format CSV, text only (no clips needed).

    python -m train.train --train ../shared/data/meld/train_sent_emo.csv \\
                          --dev ../shared/data/meld/dev_sent_emo.csv --out assets/model

What it does, top to bottom:
1. Read both CSVs (core.meld) into examples: each utterance with the previous `--context-turns`
   utterances of its dialogue as a second segment (core.encoders.build_context, the app's own
   function; no speaker names, since Whisper gives none).
2. Tokenise once with the app's TextEncoder. The encoder's bottom layers stay frozen, so their
   output is computed once per example and kept in memory; each step only runs the top
   `--tune-layers` layers, the same mean pooling as the app, and the fusion model (text branch;
   face and audio are absent and masked, their branches stay in the model for later training).
3. One loop: AdamW with a higher learning rate for the fusion model than for the encoder layers,
   warm-up then linear decay, class-weighted cross-entropy on emotion and sentiment (fused heads
   and the text branch's own heads), dev scored after every epoch; the best epoch by dev emotion
   weighted F1 is kept.
4. Save a checkpoint (core.checkpoint) holding the fusion model and only the tuned encoder
   layers, then score dev again through the saved files exactly as the app loads them; the card
   records those metrics.

Seeded and single-process: the same command on the same machine gives the same checkpoint.
TensorBoard logs go to --tb (default runs/<out folder name>).

With --clips DIR (or --train naming the workbench's export zip or folder) it trains on clips
instead: text, face and audio; see train/retrain.py.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core import checkpoint as ck
from core.encoders import DEFAULT_TEXT_MODEL, TextEncoder, apply_text_state
from core.labels import EMOTIONS, SENTIMENTS
from core.model import EmotionModel, ModelConfig

from . import metrics
from .clip_args import CLIP_OPTIONS, UNSET_IN_CLIP_MODE, add_clip_options
from .data import TextExample, TextSplit, load_text_split
from .ema import WeightAverage


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train", required=True,
                   help="MELD-format CSV to fit on (with clips: also the workbench's export zip or folder)")
    p.add_argument("--dev", default=None, help="MELD-format CSV to choose the epoch on (required without clips)")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--init", default=None, help="start from this checkpoint folder")
    p.add_argument("--text-model", default=DEFAULT_TEXT_MODEL, help="text encoder (packaged alias or HF name)")
    p.add_argument("--context-turns", type=int, default=3, help="previous utterances read as context (0: none)")
    p.add_argument("--context-ahead", type=int, default=0,
                   help="following utterances read as context too (the app has the whole video)")
    p.add_argument("--ema", type=float, default=0.0,
                   help="score and keep an exponential moving average of the weights with this decay (0: off)")
    p.add_argument("--tune-layers", type=int, default=2, help="top encoder layers to fine-tune")
    p.add_argument("--tune-attention", type=int, default=0,
                   help="layers below those whose self-attention block is fine-tuned too")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the fusion model")
    p.add_argument("--encoder-lr", type=float, default=1e-4, help="learning rate of the tuned encoder layers")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=float, default=0.06, help="share of the steps spent warming up")
    p.add_argument("--class-weight-power", type=float, default=0.5,
                   help="class weight = (1/frequency)^power (0: none, 1: inverse frequency)")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--aux-weight", type=float, default=0.5, help="loss weight of the text branch's own heads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="use only the first N train examples")
    p.add_argument("--dev-limit", type=int, default=None, help="use only the first N dev examples")
    p.add_argument("--tb", default=None, help="TensorBoard folder (default runs/<out folder name>)")
    p.add_argument("--name", default=None, help="checkpoint name in its card")
    p.add_argument("--no-final-eval", action="store_true", help="skip the dev check of the saved files")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_clip_options(p)
    return p


def clip_mode(args: argparse.Namespace) -> bool:
    """Clips were asked for: --clips/--dev-clips, or --train names an export zip or folder."""
    train = Path(args.train)
    return bool(args.clips or args.dev_clips) or train.is_dir() or train.suffix.lower() == ".zip"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Text path: the options as before (clip-only ones removed). Clip path: its own defaults
    for the options left unset (train.retrain.fill_defaults)."""
    p = build_parser()
    args = p.parse_args(argv)
    if clip_mode(args):
        p.set_defaults(**UNSET_IN_CLIP_MODE)
        return p.parse_args(argv)
    if not args.dev:
        p.error("--dev is required when training on text only (or give --clips DIR to train on clips)")
    for name in CLIP_OPTIONS:
        delattr(args, name)
    return args


# ---------------------------------------------------------------- frozen bottom, tuned top

def run_layers(bert, hidden: torch.Tensor, attention_mask: torch.Tensor, layers) -> torch.Tensor:
    """Run some of the encoder's layers with the same attention mask BertModel builds itself."""
    from transformers.masking_utils import create_bidirectional_mask
    mask = create_bidirectional_mask(config=bert.config, inputs_embeds=hidden, attention_mask=attention_mask)
    for layer in layers:
        hidden = layer(hidden, mask)
    return hidden


def tune_setup(encoder: TextEncoder, tune: int, attention: int):
    """Freeze the encoder except its top `tune` layers and the self-attention of `attention` below.

    Returns (first layer run in every step, those layers, the trainable tensors by state-dict name,
    the fully tuned layer indices, the attention-only layer indices).
    """
    layers = encoder.bert.encoder.layer
    n = len(layers)
    k = max(0, min(tune, n))
    a = max(0, min(attention, n - k))
    first = n - k - a
    for p in encoder.parameters():
        p.requires_grad_(False)
    tuned = layers[first:]
    for j, layer in enumerate(tuned):
        for p in (layer if first + j >= n - k else layer.attention).parameters():
            p.requires_grad_(True)
    trainable = {f"bert.encoder.layer.{first + j}.{name}": p for j, layer in enumerate(tuned)
                 for name, p in layer.named_parameters() if p.requires_grad}
    return first, tuned, trainable, list(range(n - k, n)), list(range(first, n - k))


@torch.no_grad()
def frozen_states(encoder: TextEncoder, examples: list[TextExample], n_frozen: int,
                  batch_size: int = 64, quiet: bool = False) -> list[dict]:
    """Per example: the output of the first `n_frozen` layers (embeddings when 0), unpadded."""
    from tqdm import tqdm
    encoder.eval()
    bert = encoder.bert
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].text) + len(examples[i].context))
    out: list[dict] = [{}] * len(examples)
    for start in tqdm(range(0, len(order), batch_size), desc="encoding (frozen layers)", unit="batch",
                      disable=quiet, file=sys.stderr):
        idx = order[start:start + batch_size]
        batch = encoder.tokenize([examples[i].text for i in idx], [examples[i].context for i in idx])
        hidden = bert.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
        hidden = run_layers(bert, hidden, batch["attention_mask"], bert.encoder.layer[:n_frozen])
        for row, i in enumerate(idx):
            n = int(batch["attention_mask"][row].sum())
            out[i] = {"hidden": hidden[row, :n].clone(), "token_type_ids": batch["token_type_ids"][row, :n].clone()}
    return out


def collate(items: list[dict]) -> dict:
    """Pad cached states into a batch: hidden [B, T, d], attention_mask and token_type_ids [B, T]."""
    width = max(it["hidden"].shape[0] for it in items)
    dim = items[0]["hidden"].shape[1]
    hidden = torch.zeros(len(items), width, dim)
    mask = torch.zeros(len(items), width, dtype=torch.long)
    types = torch.zeros(len(items), width, dtype=torch.long)
    for b, it in enumerate(items):
        n = it["hidden"].shape[0]
        hidden[b, :n], mask[b, :n], types[b, :n] = it["hidden"], 1, it["token_type_ids"]
    return {"hidden": hidden, "attention_mask": mask, "token_type_ids": types}


def text_vectors(encoder: TextEncoder, tuned, batch: dict) -> torch.Tensor:
    """Top layers on cached states, then the app's pooling (TextEncoder.pool)."""
    hidden = run_layers(encoder.bert, batch["hidden"], batch["attention_mask"], tuned)
    return TextEncoder.pool(hidden, batch)


def length_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffled batches of similar lengths (less padding), in a shuffled order."""
    order = rng.permutation(len(lengths)).tolist()
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def class_weights(labels: list[int], n: int, power: float) -> torch.Tensor:
    """(1/frequency)^power, scaled so that the average weight over the examples is 1."""
    counts = np.bincount(labels, minlength=n).astype(np.float64)
    w = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** power, 0.0)
    w = w / (w[labels].mean() if len(labels) else 1.0)
    return torch.tensor(w, dtype=torch.float32)


@torch.no_grad()
def predict_cached(encoder, tuned, model, cache: list[dict], batch_size: int = 128) -> tuple[list, list]:
    """Emotion and sentiment predictions (argmax) for cached examples, in order."""
    encoder.eval(), model.eval()
    emo, sen = [0] * len(cache), [0] * len(cache)
    order = sorted(range(len(cache)), key=lambda i: cache[i]["hidden"].shape[0])
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        out = model({"text": text_vectors(encoder, tuned, collate([cache[i] for i in idx]))})
        for i, e, s in zip(idx, out.emotion_logits.argmax(-1).tolist(), out.sentiment_logits.argmax(-1).tolist()):
            emo[i], sen[i] = e, s
    return emo, sen


def score(split: TextSplit, emo: list[int], sen: list[int]) -> dict:
    return {"emotion": metrics.report([e.emotion for e in split.examples], emo, EMOTIONS),
            "sentiment": metrics.report([e.sentiment for e in split.examples], sen, SENTIMENTS)}


def headline(scores: dict) -> dict:
    return {"emotion_weighted_f1": scores["emotion"]["weighted_f1"],
            "emotion_accuracy": scores["emotion"]["accuracy"],
            "sentiment_weighted_f1": scores["sentiment"]["weighted_f1"],
            "sentiment_accuracy": scores["sentiment"]["accuracy"]}


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if hasattr(args, "clips"):               # the clip path: text, face and audio (train/retrain.py)
        from .retrain import main as retrain_main
        return retrain_main(args)
    t_start = time.time()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    out_dir = Path(args.out)
    tb_dir = Path(args.tb) if args.tb else Path("runs") / (out_dir.resolve().name or "model")
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))

    # -- data
    train = load_text_split(args.train, args.context_turns, args.limit, args.context_ahead)
    dev = load_text_split(args.dev, args.context_turns, args.dev_limit, args.context_ahead)
    if not train.examples or not dev.examples:
        raise SystemExit(f"no labelled rows in {args.train if not train.examples else args.dev}")
    log(f"train: {len(train.examples)} examples ({len(train.skipped)} rows skipped), "
        f"dev: {len(dev.examples)} examples; context: {args.context_turns} previous utterances")

    # -- model: the app's text encoder + the fusion model (default config: text, face, audio)
    encoder = TextEncoder(args.text_model)
    model = EmotionModel(ModelConfig(text_dim=encoder.dim))
    if args.init:
        init = ck.load_checkpoint(args.init)
        model = init.model
        apply_text_state(encoder, init.text_state)
    first, tuned, trainable, tuned_layers, attention_layers = tune_setup(encoder, args.tune_layers,
                                                                         args.tune_attention)
    n_layers = len(encoder.bert.encoder.layer)
    log(f"fine-tuning {sum(p.numel() for p in trainable.values()) / 1e6:.2f} M encoder parameters "
        f"(layers {first}-{n_layers - 1}; attention only in {attention_layers})")

    # -- the frozen bottom, once
    t0 = time.time()
    train_cache = frozen_states(encoder, train.examples, first, quiet=args.quiet)
    dev_cache = frozen_states(encoder, dev.examples, first, quiet=args.quiet)
    t_cache = time.time() - t0
    lengths = [c["hidden"].shape[0] for c in train_cache]
    log(f"frozen layers encoded in {t_cache:.0f} s; mean length {np.mean(lengths):.1f} tokens")

    # -- loss, optimiser, schedule
    y_emo = [e.emotion for e in train.examples]
    y_sen = [e.sentiment for e in train.examples]
    ce_emo = nn.CrossEntropyLoss(weight=class_weights(y_emo, len(EMOTIONS), args.class_weight_power),
                                 label_smoothing=args.label_smoothing)
    ce_sen = nn.CrossEntropyLoss(weight=class_weights(y_sen, len(SENTIMENTS), args.class_weight_power),
                                 label_smoothing=args.label_smoothing)
    decay = lambda n, p: p.ndim >= 2   # noqa: E731  (no weight decay on biases and norms)
    groups = [
        {"params": [p for n, p in model.named_parameters() if decay(n, p)], "lr": args.lr},
        {"params": [p for n, p in model.named_parameters() if not decay(n, p)], "lr": args.lr, "weight_decay": 0.0},
        {"params": [p for n, p in trainable.items() if decay(n, p)], "lr": args.encoder_lr},
        {"params": [p for n, p in trainable.items() if not decay(n, p)], "lr": args.encoder_lr,
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_cache) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warm = max(1, int(args.warmup * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))

    writer = SummaryWriter(str(tb_dir))
    writer.add_text("args", json.dumps(vars(args), indent=2))
    rng = np.random.default_rng(args.seed)
    best = {"epoch": 0, "key": (-1.0, -1.0)}
    average = WeightAverage({**{f"model.{n}": p for n, p in model.named_parameters()}, **trainable},
                            args.ema) if args.ema else None
    history = []
    step = 0
    t_train = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train(), tuned.train()
        batches = length_batches(lengths, args.batch_size, rng)
        bar = tqdm(batches, desc=f"epoch {epoch}/{args.epochs}", unit="batch", disable=args.quiet, file=sys.stderr)
        seen, total_loss = 0, 0.0
        for idx in bar:
            batch = collate([train_cache[i] for i in idx])
            te = torch.tensor([y_emo[i] for i in idx])
            ts = torch.tensor([y_sen[i] for i in idx])
            out = model({"text": text_vectors(encoder, tuned, batch)})
            aux_e, aux_s = out.modality_logits["text"]
            loss_main = ce_emo(out.emotion_logits, te) + ce_sen(out.sentiment_logits, ts)
            loss_aux = ce_emo(aux_e, te) + ce_sen(aux_s, ts)
            loss = loss_main + args.aux_weight * loss_aux
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            optimizer.step()
            schedule.step()
            if average:
                average.update()
            step += 1
            seen, total_loss = seen + 1, total_loss + loss.item()
            bar.set_postfix(loss=f"{total_loss / seen:.3f}")
            writer.add_scalar("train/loss", loss.item(), step)
            writer.add_scalar("train/loss_fused", loss_main.item(), step)
            writer.add_scalar("train/lr_encoder", schedule.get_last_lr()[-1], step)

        with average.applied() if average else contextlib.nullcontext():
            emo, sen = predict_cached(encoder, tuned, model, dev_cache)
            dev_scores = score(dev, emo, sen)
            key = (dev_scores["emotion"]["weighted_f1"], dev_scores["sentiment"]["weighted_f1"])
            if key > best["key"]:            # copy the (averaged) weights only when they are the best yet
                best = {"epoch": epoch, "key": key, "scores": dev_scores,
                        "model": copy.deepcopy(model.state_dict()),
                        "tuned": {n: p.detach().clone() for n, p in trainable.items()}}
        head = headline(dev_scores)
        history.append({"epoch": epoch, **head, "seconds": round(time.time() - t_train, 1)})
        for key, value in head.items():
            writer.add_scalar(f"dev/{key}", value, epoch)
        log(f"epoch {epoch}: dev emotion wF1 {head['emotion_weighted_f1']:.2f} acc {head['emotion_accuracy']:.2f} | "
            f"sentiment wF1 {head['sentiment_weighted_f1']:.2f} acc {head['sentiment_accuracy']:.2f} "
            f"({time.time() - t_train:.0f} s)")
    writer.flush()
    train_seconds = time.time() - t_train

    # -- the best epoch's weights, saved with only the tuned encoder tensors
    model.load_state_dict(best["model"])
    with torch.no_grad():
        for n, p in trainable.items():
            p.copy_(best["tuned"][n])
    model.eval()
    text_state = {n: p.detach() for n, p in trainable.items()}
    card = ck.ModelCard(
        name=args.name or (f"meld-text-{args.text_model}-ctx{args.context_turns}"
                           + (f"+{args.context_ahead}" if args.context_ahead else "")),
        text_encoder={"name": args.text_model, "dim": encoder.dim, "context_turns": args.context_turns,
                      "context_ahead": args.context_ahead,
                      "tuned": bool(text_state), "tuned_layers": tuned_layers,
                      "tuned_attention_layers": attention_layers,
                      "max_tokens": encoder.max_tokens,
                      "pooling": "mean over the utterance's own tokens (segment 0)",
                      "context": (f"the {args.context_ahead} following utterance(s), ' || ', then " if args.context_ahead
                                  else "") + "previous utterances of the same dialogue, most recent first, "
                                 "joined by ' | ', as the second segment; no speaker names"},
        trained_modalities=["text"],
        data={"train": train.describe(), "dev": dev.describe(),
              "note": "MELD (Poria et al., ACL 2019) text and labels only; no MELD video was available, "
                      "so face and audio are untrained here"},
        metrics={"dev_during_training": history, "best_epoch": best["epoch"]},
        notes=("Text-only model: fine-tuned on MELD utterances with their dialogue context. "
               "Face and audio branches are present but untrained; the app shows the pretrained "
               "face-expression net's own opinion beside this model's."),
    )
    settings = {k_: v for k_, v in vars(args).items() if k_ not in ("out", "tb", "quiet", "no_final_eval")}
    card.data["training"] = {"args": settings, "train_seconds": round(train_seconds),
                             "cache_seconds": round(t_cache), "steps": step, "torch": torch.__version__,
                             "threads": args.threads, "machine": platform.machine()}
    ck.save_checkpoint(out_dir, model, card, text_state)

    # -- the truth: dev scored from the saved files, through the app's code path
    if not args.no_final_eval:
        from .evaluate import evaluate_split
        result = evaluate_split(dev, ck.load_checkpoint(out_dir))
        card.metrics["dev"] = {**headline(result), "rows": len(dev.examples),
                               "emotion": result["emotion"], "sentiment": result["sentiment"]}
    else:
        card.metrics["dev"] = {**headline(best["scores"]), "rows": len(dev.examples),
                               "emotion": best["scores"]["emotion"], "sentiment": best["scores"]["sentiment"],
                               "note": "scored during training (before the save/load round trip)"}
    card.data["training"]["total_seconds"] = round(time.time() - t_start)
    ck.save_checkpoint(out_dir, model, card, text_state)
    final = headline({"emotion": card.metrics["dev"]["emotion"], "sentiment": card.metrics["dev"]["sentiment"]})
    for key, value in final.items():
        writer.add_scalar(f"dev_saved/{key}", value, best["epoch"])
    writer.close()
    log(f"best epoch {best['epoch']}; saved {out_dir}; dev (saved files): "
        f"emotion wF1 {final['emotion_weighted_f1']:.2f} acc {final['emotion_accuracy']:.2f}, "
        f"sentiment wF1 {final['sentiment_weighted_f1']:.2f} acc {final['sentiment_accuracy']:.2f}; "
        f"training {train_seconds:.0f} s, total {time.time() - t_start:.0f} s")
    summary = {**final, "best_epoch": best["epoch"], "train_seconds": round(train_seconds),
               "total_seconds": round(time.time() - t_start), "out": str(out_dir)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
