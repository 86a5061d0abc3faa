"""The one training loop: inputs, loss, optimiser, epoch, predict, fit. Text-only and clip runs share it.

Inputs hold a split's rows: text (frozen vectors, or frozen-bottom states for tuned top layers),
face, voice (core.voice features) and video vectors, each with a per-row "present" flag, and the
labels. Every batch goes through core.model.model_batch, the function core.pipeline uses too, so
training feeds the model exactly as the app does.

Loss: class-weighted cross-entropy on the fused emotion and sentiment heads, plus `aux_weight`
times the same on each trained modality's own heads over the rows where that modality is present.

fit() runs the epochs with AdamW (no decay on biases and norms; tuned encoder layers at their own
rate; warm-up then linear decay), an optional weight average (EMA), and one of two ways to keep
weights: "dev" scores dev after every epoch and keeps the best epoch by dev emotion weighted F1,
then sentiment's (a tie keeps the earlier epoch), stopping after `patience` epochs without a
better one; "last" runs a fixed number of epochs and keeps the last (averaged) weights, for data
too small to hold a dev set worth choosing on.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from core.encoders import AUDIO_DIM, FACE_DIM, VIDEO_DIM
from core.text import TextEncoder
from core.labels import EMOTIONS, SENTIMENTS
from core.model import EmotionModel, model_batch

from . import metrics, resume
from .ema import WeightAverage
from .text_layers import collate, length_batches, text_vectors

TRAINABLE = ("text", "face", "audio", "video")


@dataclass
class Inputs:
    """Row-aligned model inputs and labels of one split (CPU tensors)."""

    text: torch.Tensor | None        # [N, text_dim]: frozen text vectors (None when layers are tuned)
    states: list[dict] | None        # per row: frozen-bottom states for the tuned layers
    face: torch.Tensor               # [N, FACE_DIM]
    face_ok: torch.Tensor            # [N] bool: a face was found
    audio: torch.Tensor              # [N, AUDIO_DIM]: core.voice features
    audio_ok: torch.Tensor           # [N] bool: audio track present and not silent
    emotion: torch.Tensor            # [N] long
    sentiment: torch.Tensor          # [N] long
    video: torch.Tensor | None = None      # [N, VIDEO_DIM]: frozen R3D-18 vectors (None: no video features)
    video_ok: torch.Tensor | None = None   # [N] bool: the clip has a picture and was encoded

    def __len__(self) -> int:
        return len(self.emotion)

    def subset(self, keep: list[int]) -> "Inputs":
        idx = torch.tensor(keep, dtype=torch.long)
        return Inputs(None if self.text is None else self.text[idx],
                      None if self.states is None else [self.states[i] for i in keep],
                      self.face[idx], self.face_ok[idx], self.audio[idx], self.audio_ok[idx],
                      self.emotion[idx], self.sentiment[idx],
                      None if self.video is None else self.video[idx],
                      None if self.video_ok is None else self.video_ok[idx])

    def present(self, m: str) -> torch.Tensor:
        """[N] bool: rows where modality m has data."""
        if m == "face":
            return self.face_ok
        if m == "audio":
            return self.audio_ok
        if m == "video" and self.video_ok is not None:
            return self.video_ok
        make = torch.ones if m == "text" else torch.zeros
        return make(len(self), dtype=torch.bool, device=self.emotion.device)

    def to(self, device: torch.device | str) -> "Inputs":
        """The same rows with every tensor (cached text states too) on `device`."""
        move = (lambda t: None if t is None else t.to(device))
        states = None if self.states is None else [{k: v.to(device) for k, v in s.items()} for s in self.states]
        return Inputs(move(self.text), states, move(self.face), move(self.face_ok), move(self.audio),
                      move(self.audio_ok), move(self.emotion), move(self.sentiment), move(self.video),
                      move(self.video_ok))

    def lengths(self) -> list[int] | None:
        """Token counts of the cached text states (None with frozen text vectors)."""
        return None if self.states is None else [s["hidden"].shape[0] for s in self.states]


def build_inputs(features: list | None, emotion: list[int], sentiment: list[int],
                 text: torch.Tensor | None = None, states: list[dict] | None = None,
                 videos: list[np.ndarray | None] | None = None) -> Inputs:
    """Stack per-row clip features (train.features.ClipFeatures; None: no usable clip, face and
    voice absent; `features` None: text only) into tensors; `videos`, when given, holds each
    row's R3D-18 vector (None: absent)."""
    n = len(emotion)
    features = features if features is not None else [None] * n
    face = np.zeros((n, FACE_DIM), np.float32)
    audio = np.zeros((n, AUDIO_DIM), np.float32)
    face_ok, audio_ok = np.zeros(n, bool), np.zeros(n, bool)
    for i, f in enumerate(features):
        if f is None:
            continue
        face_ok[i], audio_ok[i] = f.face_present, f.audio_present
        if f.face_present:
            face[i] = f.face
        if f.audio_present:
            audio[i] = f.voice
    video = video_ok = None
    if videos is not None:
        video_ok = torch.tensor([v is not None for v in videos], dtype=torch.bool)
        video = torch.zeros(n, VIDEO_DIM)
        for i, v in enumerate(videos):
            if v is not None:
                video[i] = torch.from_numpy(v)
    return Inputs(text, states, torch.from_numpy(face), torch.from_numpy(face_ok), torch.from_numpy(audio),
                  torch.from_numpy(audio_ok), torch.tensor(emotion, dtype=torch.long),
                  torch.tensor(sentiment, dtype=torch.long), video, video_ok)


class TextSide:
    """Text vectors for a batch: looked up (frozen encoder) or computed by the tuned top layers."""

    def __init__(self, encoder: TextEncoder | None = None, tuned: nn.ModuleList | None = None):
        self.encoder, self.tuned = encoder, tuned

    def vectors(self, data: Inputs, idx: list[int]) -> torch.Tensor:
        if data.text is not None:
            return data.text[idx]
        return text_vectors(self.encoder, self.tuned, collate([data.states[i] for i in idx]))

    def train(self, on: bool = True) -> None:
        if self.tuned is not None:
            self.tuned.train(on)


def batch_of(model: EmotionModel, data: Inputs, idx: list[int], text: TextSide,
             use: set[str]) -> tuple[dict, dict]:
    """Inputs and mask for rows `idx` (core.model.model_batch, as core.pipeline feeds the model)."""
    features = {"text": text.vectors(data, idx), "face": data.face[idx], "audio": data.audio[idx]}
    if data.video is not None:
        features["video"] = data.video[idx]
    present = {m: data.present(m)[idx] for m in features}
    return model_batch(model.config, features, present, lambda m: m in use)


def class_weights(labels: list[int], n: int, power: float) -> torch.Tensor:
    """(1/frequency)^power, scaled so that the average weight over the examples is 1."""
    counts = np.bincount(labels, minlength=n).astype(np.float64)
    w = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** power, 0.0)
    w = w / (w[labels].mean() if len(labels) else 1.0)
    return torch.tensor(w, dtype=torch.float32)


class Loss:
    """Class-weighted CE on the fused heads + aux_weight x CE on each used modality's own heads."""

    def __init__(self, y_emotion: list[int], y_sentiment: list[int], power: float, smoothing: float,
                 aux_weight: float):
        self.emo = nn.CrossEntropyLoss(weight=class_weights(y_emotion, len(EMOTIONS), power),
                                       label_smoothing=smoothing)
        self.sen = nn.CrossEntropyLoss(weight=class_weights(y_sentiment, len(SENTIMENTS), power),
                                       label_smoothing=smoothing)
        self.aux_weight = aux_weight

    def to(self, device: torch.device | str) -> "Loss":
        self.emo.to(device), self.sen.to(device)
        return self

    def __call__(self, out, mask: dict, y_e: torch.Tensor, y_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.emo(out.emotion_logits, y_e) + self.sen(out.sentiment_logits, y_s)
        aux = torch.zeros(())
        for m, (e, s) in out.modality_logits.items():
            keep = mask.get(m)
            if keep is not None and bool(keep.any()):
                aux = aux + self.emo(e[keep], y_e[keep]) + self.sen(s[keep], y_s[keep])
        return fused + self.aux_weight * aux, fused


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """A seeded permutation cut into batches; a last batch of one is merged into the one before
    (a batch of one is safe in this model, but gives a noisy step)."""
    order = rng.permutation(n).tolist()
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] = batches[-1] + last
    return batches


def make_optimizer(model: EmotionModel, encoder_params: dict, lr: float, encoder_lr: float,
                   weight_decay: float, total_steps: int, warmup: float):
    """AdamW (no decay on biases and norms; encoder layers at their own rate), warm-up then linear decay."""
    def split(named):
        named = list(named)
        return [p for _, p in named if p.ndim >= 2], [p for _, p in named if p.ndim < 2]
    m_decay, m_plain = split(model.named_parameters())
    e_decay, e_plain = split(encoder_params.items())
    groups = [{"params": m_decay, "lr": lr}, {"params": m_plain, "lr": lr, "weight_decay": 0.0},
              {"params": e_decay, "lr": encoder_lr}, {"params": e_plain, "lr": encoder_lr, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    warm = max(1, int(warmup * total_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total_steps - s) / max(1, total_steps - warm))))
    return optimizer, schedule


def epoch_batches(data: Inputs, batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch's batches: of similar token lengths when text layers are tuned (less padding),
    else a plain seeded shuffle."""
    lengths = data.lengths()
    if lengths is not None:
        return length_batches(lengths, batch_size, rng)
    return shuffled_batches(len(data), batch_size, rng)


def train_epoch(model: EmotionModel, data: Inputs, text: TextSide, use: set[str], loss_fn: Loss,
                optimizer, schedule, batches: list[list[int]], desc: str = "epoch", quiet: bool = False,
                on_step=None) -> float:
    """One pass over `batches`; returns the mean loss. `on_step(loss, fused_loss)` is called per step."""
    from tqdm import tqdm
    model.train(), text.train(True)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    total = 0.0
    bar = tqdm(batches, desc=desc, unit="batch", disable=quiet, file=sys.stderr)
    for step, idx in enumerate(bar, start=1):
        inputs, mask = batch_of(model, data, idx, text, use)
        out = model(inputs, mask)
        loss, fused = loss_fn(out, mask, data.emotion[idx], data.sentiment[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        total += loss.item()
        bar.set_postfix(loss=f"{total / step:.3f}")
        if on_step is not None:
            on_step(loss.item(), fused.item())
    return total / max(1, len(batches))


@torch.no_grad()
def predict(model: EmotionModel, data: Inputs, text: TextSide, use: set[str],
            batch_size: int = 256) -> dict:
    """Predictions in row order: fused emotion and sentiment (argmax), their probabilities, and
    each modality head's emotion (argmax)."""
    model.eval(), text.train(False)
    emo, sen, heads, probs = [], [], {}, []
    order = list(range(len(data)))
    lengths = data.lengths()
    if lengths is not None:                   # similar lengths together: less padding
        order.sort(key=lambda i: lengths[i])
    for start in range(0, len(data), batch_size):
        idx = order[start:start + batch_size]
        inputs, mask = batch_of(model, data, idx, text, use)
        out = model(inputs, mask)
        probs.append(out.emotion_logits.softmax(-1).cpu())
        emo += out.emotion_logits.argmax(-1).tolist()
        sen += out.sentiment_logits.argmax(-1).tolist()
        for m, (e, _) in out.modality_logits.items():
            heads.setdefault(m, {}).update(zip(idx, e.argmax(-1).tolist()))
    back = {i: k for k, i in enumerate(order)}
    rows = range(len(data))
    return {"emotion": [emo[back[i]] for i in rows], "sentiment": [sen[back[i]] for i in rows],
            "emotion_probs": torch.cat(probs)[[back[i] for i in rows]] if probs else torch.zeros(0, len(EMOTIONS)),
            "heads": {m: [h.get(i, -1) for i in rows] for m, h in heads.items()}}


def head_accuracy(data: Inputs, pred: dict, use: set[str]) -> dict[str, dict]:
    """Emotion accuracy (%) of each used modality's own head over the rows where it is present."""
    out = {}
    for m in sorted(use):
        if m not in pred["heads"]:
            continue
        keep = data.present(m).tolist()
        rows = [i for i, k in enumerate(keep) if k]
        hits = sum(pred["heads"][m][i] == int(data.emotion[i]) for i in rows)
        out[m] = {"rows": len(rows), "emotion_accuracy": round(100.0 * hits / len(rows), 2) if rows else None}
    return out


def score(data: Inputs, pred: dict, use: set[str]) -> dict:
    """Headline metrics (weighted F1 and accuracy, %), full reports, and each head's accuracy."""
    y_e, y_s = data.emotion.tolist(), data.sentiment.tolist()
    emotion, sentiment = metrics.report(y_e, pred["emotion"], EMOTIONS), metrics.report(y_s, pred["sentiment"], SENTIMENTS)
    return {**headline({"emotion": emotion, "sentiment": sentiment}), "rows": len(data),
            "heads": head_accuracy(data, pred, use), "emotion": emotion, "sentiment": sentiment}


HEADLINE = ("emotion_weighted_f1", "emotion_accuracy", "sentiment_weighted_f1", "sentiment_accuracy")


def headline(scores: dict) -> dict:
    """The four numbers a card and a log line show, from {"emotion": report, "sentiment": report}."""
    return {"emotion_weighted_f1": scores["emotion"]["weighted_f1"],
            "emotion_accuracy": scores["emotion"]["accuracy"],
            "sentiment_weighted_f1": scores["sentiment"]["weighted_f1"],
            "sentiment_accuracy": scores["sentiment"]["accuracy"]}


def steps_for(n_rows: int, batch_size: int, epochs: int) -> int:
    return max(1, math.ceil(n_rows / batch_size)) * epochs


# ---------------------------------------------------------------- fit

def fit_standardizers(model: EmotionModel, data: Inputs) -> list[str]:
    """Set each branch's core.model.Standardize from the train rows where that modality is
    present, unless it already holds statistics (a branch from --init keeps its own). Returns
    the modalities set."""
    from core.model import Standardize
    done = []
    for m, branch in model.encoders.items():
        scaler = next((b for b in branch.modules() if isinstance(b, Standardize)), None)
        rows = data.present(m)
        if scaler is None or scaler.fitted or int(rows.sum()) < 2:
            continue
        x = {"audio": data.audio, "face": data.face}.get(m)
        if x is None:
            continue
        x = x[rows].double()
        with torch.no_grad():
            scaler.mean.copy_(x.mean(0).float())
            scaler.std.copy_(x.std(0).float().clamp_min(1e-4))
        done.append(m)
    return done


@dataclass
class FitOptions:
    epochs: int
    batch_size: int = 32
    keep: str = "dev"                 # "dev": best epoch on dev (early stopping); "last": fixed schedule
    patience: int | None = None       # with keep="dev": stop after this many epochs without a better one
    ema: float = 0.0                  # weight-average decay (0: off)
    seed: int = 0
    quiet: bool = False
    state_file: str | None = None     # train.resume: the loop's state is saved here after every epoch
    resume: bool = False              # start from the state in state_file
    stop_after: int | None = None     # stop after this epoch, as a stopped run would (state kept)
    args: dict | None = None          # the run's arguments, saved with the state (train.resume.check_args)
    save_every: int = 0               # also save the state every this many steps inside an epoch (0: off)


@dataclass
class FitResult:
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    scores: dict | None = None        # dev scores of the kept weights (None without dev)
    epoch_seconds: list[float] = field(default_factory=list)
    steps: int = 0


def fit(model: EmotionModel, trainable: dict[str, torch.Tensor], train: Inputs, dev: Inputs | None,
        text: TextSide, use: set[str], loss_fn: Loss, optimizer, schedule, opts: FitOptions,
        log: Callable = print, writer=None) -> FitResult:
    """Train; leave the kept weights (best dev epoch, or the last) in `model` and `trainable`."""
    rng = np.random.default_rng(opts.seed)
    average = WeightAverage({**{f"model.{n}": p for n, p in model.named_parameters()}, **trainable},
                            opts.ema) if opts.ema else None
    result, best, t_train = FitResult(0), {"key": (-1.0, -1.0)}, time.time()
    first, partial = 1, None
    if opts.resume:
        first, partial = resume.restore(opts.state_file, model, trainable, optimizer, schedule, average, rng,
                                        result, best)
        log(f"resumed after epoch {first - 1}" + (f", step {partial['step']} of epoch {first}" if partial else "")
            + f" from {opts.state_file}")

    def on_step(loss: float, fused: float) -> None:
        result.steps += 1
        if writer is not None:
            writer.add_scalar("train/loss", loss, result.steps)
            writer.add_scalar("train/loss_fused", fused, result.steps)

    for epoch in range(first, opts.epochs + 1):
        t0 = time.perf_counter()
        rng_before = rng.bit_generator.state
        batches = epoch_batches(train, opts.batch_size, rng)
        done = dict(partial) if partial and epoch == first else {"step": 0, "loss_sum": 0.0}

        def step_done(a: float, b: float, epoch=epoch, batches=batches, done=done) -> None:
            if average is not None:
                average.update()
            on_step(a, b)
            done["step"], done["loss_sum"] = done["step"] + 1, done["loss_sum"] + a
            if opts.save_every and opts.state_file and done["step"] % opts.save_every == 0 \
                    and done["step"] < len(batches):
                resume.save(opts.state_file, epoch - 1, opts.args or {}, model, trainable, optimizer, schedule,
                            average, rng, result, best, partial={**done, "rng": rng_before})

        train_epoch(model, train, text, use, loss_fn, optimizer, schedule, batches[done["step"]:],
                    desc=f"epoch {epoch}/{opts.epochs}", quiet=opts.quiet, on_step=step_done)
        loss = done["loss_sum"] / max(1, len(batches))
        result.epoch_seconds.append(time.perf_counter() - t0)
        entry = {"epoch": epoch, "loss": round(loss, 4), "seconds": round(time.time() - t_train, 1)}
        with average.applied() if average else contextlib.nullcontext():
            scores = score(dev, predict(model, dev, text, use), use) if dev is not None and len(dev) else None
            key = (scores["emotion_weighted_f1"], scores["sentiment_weighted_f1"]) if scores else None
            better = opts.keep == "last" or key is None or key > best["key"]
            if better:        # copy the (averaged) weights only when they are kept
                best = {"key": key, "model": copy.deepcopy(model.state_dict()),
                        "tuned": {n: p.detach().clone() for n, p in trainable.items()}}
                result.best_epoch, result.scores = epoch, scores
        if scores is not None:
            entry.update({**headline(scores), "heads": scores["heads"]})
            if writer is not None:
                for k, v in headline(scores).items():
                    writer.add_scalar(f"dev/{k}", v, epoch)
            log(f"epoch {epoch}: loss {loss:.3f}, dev emotion wF1 {scores['emotion_weighted_f1']:.2f} "
                f"acc {scores['emotion_accuracy']:.2f} | sentiment wF1 {scores['sentiment_weighted_f1']:.2f} "
                f"acc {scores['sentiment_accuracy']:.2f} ({result.epoch_seconds[-1]:.1f} s)")
        else:
            log(f"epoch {epoch}: loss {loss:.3f} ({result.epoch_seconds[-1]:.1f} s)")
        result.history.append(entry)
        if opts.state_file:
            resume.save(opts.state_file, epoch, opts.args or {}, model, trainable, optimizer, schedule, average,
                        rng, result, best)
        if opts.stop_after and epoch >= opts.stop_after and epoch < opts.epochs:
            log(f"stopping after epoch {epoch} as asked; continue with --resume")
            break
        if opts.keep == "dev" and opts.patience and epoch - result.best_epoch >= opts.patience:
            log(f"stopping: no better dev emotion wF1 for {opts.patience} epochs")
            break
    model.load_state_dict(best["model"])
    with torch.no_grad():
        for n, p in trainable.items():
            p.copy_(best["tuned"][n])
    model.eval()
    return result
