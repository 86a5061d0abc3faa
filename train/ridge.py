"""A closed-form ridge voice head, written exactly into the model's voice branch.

The voice branch (core.model) is Standardize -> Dropout -> Linear(d, hidden) -> ReLU -> Dropout,
then an emotion and a sentiment head. A linear classifier z = W a + b on the standardised features
a fits in it exactly: hidden unit j = ReLU(z_j), unit K + j = ReLU(-z_j), and the heads take
ReLU(z_j) - ReLU(-z_j) = z_j (dropout is off at inference).

Ridge: least squares on one-hot emotion and sentiment targets with an L2 penalty, solved in the
dual (n x n), so it costs nothing for tens or thousands of rows. Used for the shipped voice head
(train.voice) and, on small data trained from scratch, by the correction loop (train.train): there
42 rows are too few for gradient steps to find a voice (README, "Retraining on corrected clips").
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.labels import EMOTIONS, SENTIMENTS

SMALL_DATA_FEATURES = ("mean+std", "mean")     # the loop's small-data voice head: candidate features ...
SMALL_DATA_PENALTIES = (100.0, 10.0, 1000.0)   # ... and L2 penalties, chosen by held-out-group CV


def fit(x: np.ndarray, y: np.ndarray, s: np.ndarray, lam: float) -> tuple[np.ndarray, ...]:
    """(mean, std, w [d, K], offset [K]): ridge on standardised x against one-hot emotion (first
    len(EMOTIONS) columns) and sentiment targets."""
    a = np.asarray(x, np.float64)
    mean, std = a.mean(0), np.maximum(a.std(0), 1e-4)
    a = (a - mean) / std
    target = np.concatenate([np.eye(len(EMOTIONS))[y], np.eye(len(SENTIMENTS))[s]], axis=1)
    offset = target.mean(0)
    alpha = np.linalg.solve(a @ a.T + lam * np.eye(len(a)), target - offset)
    return mean, std, a.T @ alpha, offset


@torch.no_grad()
def write_branch(branch: nn.ModuleDict, mean: np.ndarray, std: np.ndarray, w: np.ndarray,
                 offset: np.ndarray) -> None:
    """Write the linear scores z = ((x - mean) / std) @ w + offset into a voice branch
    ({"encoder", "emotion", "sentiment"}) exactly."""
    k = w.shape[1]
    scaler, linear = branch["encoder"][0], branch["encoder"][2]
    if 2 * k > linear.out_features:
        raise ValueError(f"a linear voice head needs a hidden width of at least {2 * k}")
    scaler.mean.copy_(torch.from_numpy(np.asarray(mean)).float())
    scaler.std.copy_(torch.from_numpy(np.asarray(std)).float())
    linear.weight.zero_()
    linear.bias.zero_()
    linear.weight[:k] = torch.from_numpy(np.asarray(w).T).float()
    linear.weight[k:2 * k] = -torch.from_numpy(np.asarray(w).T).float()
    for head, cols in (("emotion", range(len(EMOTIONS))), ("sentiment", range(len(EMOTIONS), k))):
        layer = branch[head]
        layer.weight.zero_()
        for row, j in enumerate(cols):
            layer.weight[row, j], layer.weight[row, k + j] = 1.0, -1.0
        layer.bias.copy_(torch.from_numpy(np.asarray(offset)[list(cols)]).float())


def voice_branch(model) -> nn.ModuleDict:
    """The model's voice branch: its projection and its own emotion and sentiment heads."""
    return nn.ModuleDict({"encoder": model.encoders["audio"], "emotion": model.emotion_by["audio"],
                          "sentiment": model.sentiment_by["audio"]})


def oof_scores(x: np.ndarray, y: np.ndarray, s: np.ndarray, groups: np.ndarray, lam: float) -> np.ndarray:
    """Out-of-group ridge scores [n, K]: each group's rows scored by the ridge fitted on the others."""
    out = np.zeros((len(y), len(EMOTIONS) + len(SENTIMENTS)))
    for g in np.unique(groups):
        held = groups == g
        mean, std, w, offset = fit(x[~held], y[~held], s[~held], lam)
        out[held] = ((x[held] - mean) / std) @ w + offset
    return out


def temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The scalar T minimising the negative log-likelihood of softmax(scores / T) (grid search)."""
    grid = np.exp(np.linspace(np.log(0.01), np.log(8.0), 120))
    nll = []
    for t in grid:
        z = scores / t
        z = z - z.max(1, keepdims=True)
        nll.append(float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y])))
    return float(grid[int(np.argmin(nll))])


def late_voice(model, audio: torch.Tensor, present: torch.Tensor, emotion: torch.Tensor,
               sentiment: torch.Tensor, groups: list | None = None, clips: list | None = None):
    """For small data trained from scratch: a copy of `model` whose voice is a ridge head on the
    voiced rows, fused late at weight 1 (core.model.late_fuse) and kept fixed; gradient steps then
    train the rest. The head's features (SMALL_DATA_FEATURES) and penalty (SMALL_DATA_PENALTIES)
    are chosen by leave-one-group-out accuracy (groups: the rows' dialogues; with fewer than 3,
    each clip is its own group, `clips` naming the clip of each row, since a clip's voice may come
    in two rows, heard alone and in its dialogue; a tie keeps the earlier candidate), and its
    temperature is fitted on the chosen candidate's out-of-group scores. Returns (model, what was chosen), or (model,
    None) with fewer than 3 voiced rows."""
    from core.model import EmotionModel, ModelConfig
    device = next(model.parameters()).device
    audio, present, emotion, sentiment = (t.detach().cpu() for t in (audio, present, emotion, sentiment))
    rows = present.bool().numpy()
    if int(rows.sum()) < 3:
        return model, None
    x, y, s = audio.numpy()[rows].astype(np.float64), emotion.numpy()[rows], sentiment.numpy()[rows]
    g = np.array([str(v) for v in groups], dtype=object)[rows] if groups is not None else np.arange(len(y))
    if len(set(g.tolist())) < 3:
        g = np.array([str(v) for v in clips], dtype=object)[rows] if clips is not None else np.arange(len(y))
    g = np.unique(np.asarray(g, dtype=str), return_inverse=True)[1]
    half = x.shape[1] // 2
    best = None
    for features in SMALL_DATA_FEATURES:
        cols = slice(None) if features == "mean+std" else slice(0, half)
        for lam in SMALL_DATA_PENALTIES:
            scores = oof_scores(x[:, cols], y, s, g, lam)
            acc = float((scores[:, :len(EMOTIONS)].argmax(1) == y).mean())
            if best is None or acc > best[0]:
                best = (acc, features, lam, cols, scores)
    acc, features, lam, cols, scores = best
    t = temperature(scores[:, :len(EMOTIONS)], y)
    mean, std = x.mean(0), np.maximum(x.std(0), 1e-4)
    _, _, w_part, offset = fit(x[:, cols], y, s, lam)
    w = np.zeros((x.shape[1], w_part.shape[1]))
    w[cols] = w_part                                  # mean only: the std half gets zero weight
    late = EmotionModel(ModelConfig.from_dict({**model.config.to_dict(), "late": ["audio"]}))
    late.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()}, strict=False)
    write_branch(voice_branch(late), mean, std, w / t, offset / t)
    for p in [*voice_branch(late).parameters(), late.late_log_weight["audio"]]:
        p.requires_grad_(False)
    return late.to(device), {"rows": int(rows.sum()), "groups": int(g.max() + 1), "features": features, "penalty": lam,
                  "held_out_group_accuracy": round(100 * acc, 1), "temperature": round(t, 4), "late_weight": 1.0}
