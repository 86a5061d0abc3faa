"""The clip training loop: text, face, audio (and R3D-18 video) features in, the fusion model trained.

The pretrained encoders stay frozen (the MiniLM text encoder, the FER2013 face net, R3D-18 when
its Kinetics weights exist); the text, face, audio and video projections, the audio Conv1D, the
fusion layer and all heads learn. Optionally
the top `--tune-layers` text-encoder layers learn too, on cached outputs of the frozen layers
below (as the text-only path does). Masks follow core.pipeline: a modality is fed only where it
is present (a face was found, the audio is not silent) and only if it is being trained.

Loss: class-weighted cross-entropy on the fused emotion and sentiment heads, plus `aux_weight`
times the same on each trained modality's own heads over the rows where that modality is present.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.encoders import FACE_DIM, MEL_STEPS, N_MELS, VIDEO_DIM, TextEncoder
from core.labels import EMOTIONS, SENTIMENTS
from core.model import EmotionModel

from .features import ClipFeatures
from .train import class_weights, collate, text_vectors

TRAINABLE = ("text", "face", "audio", "video")


@dataclass
class Inputs:
    """Row-aligned model inputs and labels of one split (CPU tensors)."""

    text: torch.Tensor | None        # [N, text_dim]: frozen text vectors (None when layers are tuned)
    states: list[dict] | None        # per row: frozen-bottom states for the tuned layers
    face: torch.Tensor               # [N, FACE_DIM]
    face_ok: torch.Tensor            # [N] bool: a face was found
    audio: torch.Tensor              # [N, N_MELS, MEL_STEPS]
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
        return torch.ones(len(self), dtype=torch.bool) if m == "text" else torch.zeros(len(self), dtype=torch.bool)


def build_inputs(features: list[ClipFeatures | None], emotion: list[int], sentiment: list[int],
                 text: torch.Tensor | None = None, states: list[dict] | None = None,
                 videos: list[np.ndarray | None] | None = None) -> Inputs:
    """Stack per-row clip features (None: no usable clip, face and audio absent) into tensors;
    `videos`, when given, holds each row's R3D-18 vector (None: absent)."""
    n = len(features)
    face = np.zeros((n, FACE_DIM), np.float32)
    audio = np.zeros((n, N_MELS, MEL_STEPS), np.float32)
    face_ok, audio_ok = np.zeros(n, bool), np.zeros(n, bool)
    for i, f in enumerate(features):
        if f is None:
            continue
        face_ok[i], audio_ok[i] = f.face_present, f.audio_present
        if f.face_present:
            face[i] = f.face
        if f.audio_present:
            audio[i] = f.mel
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
    """Inputs and mask for rows `idx`, for every modality the model has (as core.pipeline feeds it)."""
    inputs, mask = {}, {}
    for m in model.config.modalities:
        if m == "text":
            inputs[m] = text.vectors(data, idx)
        elif m == "face":
            inputs[m] = data.face[idx]
        elif m == "audio":
            inputs[m] = data.audio[idx]
        elif m == "video" and data.video is not None:
            inputs[m] = data.video[idx]
        else:
            continue                          # no features for it here: absent
        mask[m] = data.present(m)[idx] & (m in use)
    return inputs, mask


class Loss:
    """Class-weighted CE on the fused heads + aux_weight x CE on each used modality's own heads."""

    def __init__(self, y_emotion: list[int], y_sentiment: list[int], power: float, smoothing: float,
                 aux_weight: float):
        self.emo = nn.CrossEntropyLoss(weight=class_weights(y_emotion, len(EMOTIONS), power),
                                       label_smoothing=smoothing)
        self.sen = nn.CrossEntropyLoss(weight=class_weights(y_sentiment, len(SENTIMENTS), power),
                                       label_smoothing=smoothing)
        self.aux_weight = aux_weight

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
    """Argmax predictions: fused emotion and sentiment, and each modality head's emotion, in row order."""
    model.eval(), text.train(False)
    emo, sen, heads = [], [], {}
    for start in range(0, len(data), batch_size):
        idx = list(range(start, min(len(data), start + batch_size)))
        inputs, mask = batch_of(model, data, idx, text, use)
        out = model(inputs, mask)
        emo += out.emotion_logits.argmax(-1).tolist()
        sen += out.sentiment_logits.argmax(-1).tolist()
        for m, (e, _) in out.modality_logits.items():
            heads.setdefault(m, []).extend(e.argmax(-1).tolist())
    return {"emotion": emo, "sentiment": sen, "heads": heads}


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


def steps_for(n_rows: int, batch_size: int, epochs: int) -> int:
    return max(1, math.ceil(n_rows / batch_size)) * epochs


def timed_epoch(*args, **kwargs) -> tuple[float, float]:
    """train_epoch and its wall seconds."""
    t0 = time.perf_counter()
    loss = train_epoch(*args, **kwargs)
    return loss, time.perf_counter() - t0
