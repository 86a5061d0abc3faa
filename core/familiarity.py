"""How familiar a voice sounds to the voice head, and how much fusion may rely on it.

The shipped voice head learned from studio recordings of acted speech (RAVDESS, 14 actors). On
speech unlike any of it (a speech synthesiser, music, a noisy film soundtrack) it still answers,
often with confidence, and a late fusion that trusted it would let a robot's voice turn every
utterance "angry". So the voice branch keeps a picture of what it learned from: the principal
directions in which its (standardised) training features vary. A new voice feature that lies far
outside them is unfamiliar:

    z        = the voice feature, standardised as the head standardises it
    distance = share of |z|^2 outside the top-K principal directions of the training features,
               per feature dimension: (|z|^2 - |V z|^2) / d

and its weight in late fusion (core.model.late_fuse) falls from 1 to 0 as the distance goes from
`full` (the 99th percentile of held-out actors' distances in training: a voice as familiar as
99 % of unheard actors counts fully) to `none` (NONE_RATIO times that: held-out speech degraded
that far is right little more often than chance; README, "An unfamiliar voice counts less").
The voice's own opinion is still shown, with a note; only its say in the fused label shrinks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

COMPONENTS = 64         # principal directions kept (the training features hold 1,456 rows of 1,024-d)
FULL_QUANTILE = 99.0    # held-out actors' distance percentile up to which a voice counts fully
NONE_RATIO = 3.0       # ... and NONE_RATIO times that distance not at all (README: degraded speech nears chance there)


class Familiarity(nn.Module):
    """Buffers: basis [K, d] (orthonormal rows), full and none (distance thresholds).

    forward(z) takes standardised features [B, d] and returns (distance [B], weight [B] in 0..1).
    Until fitted (thresholds infinite) every voice counts fully."""

    def __init__(self, dim: int, components: int = COMPONENTS):
        super().__init__()
        self.register_buffer("basis", torch.zeros(components, dim))
        self.register_buffer("full", torch.tensor(float("inf")))
        self.register_buffer("none", torch.tensor(float("inf")))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = z.float()
        dist = distance(z, self.basis)
        if not bool(torch.isfinite(self.full)):
            return dist, torch.ones_like(dist)
        return dist, reliance(dist, float(self.full), float(self.none))

    def set(self, basis: np.ndarray, full: float, none: float) -> None:
        """Store a fitted basis and thresholds (train.voice)."""
        if not (0.0 < full < none):
            raise ValueError(f"familiarity thresholds must satisfy 0 < full < none, got {full}, {none}")
        with torch.no_grad():
            self.basis.copy_(torch.as_tensor(basis, dtype=torch.float32))
            self.full.fill_(float(full))
            self.none.fill_(float(none))


def distance(z: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Share of |z|^2 outside the span of `basis`'s rows, per feature dimension ([B])."""
    inside = (z @ basis.T).pow(2).sum(-1)
    return ((z.pow(2).sum(-1) - inside).clamp_min(0.0)) / z.shape[-1]


def reliance(dist: torch.Tensor, full: float, none: float) -> torch.Tensor:
    """1 up to `full`, 0 from `none`, linear between."""
    return ((none - dist) / (none - full)).clamp(0.0, 1.0)


def fit_basis(z: np.ndarray, components: int = COMPONENTS) -> np.ndarray:
    """Top principal directions [K, d] of standardised features z [N, d] (rows orthonormal)."""
    z = np.asarray(z, np.float64)
    _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    return vt[:components].astype(np.float32)


def held_out_distances(x: np.ndarray, groups: np.ndarray, components: int = COMPONENTS) -> np.ndarray:
    """Each row's distance as an unheard speaker's: the features x [N, d] (raw) standardised and
    the basis fitted without the row's group (a speaker) ([N])."""
    x = np.asarray(x, np.float64)
    out = np.zeros(len(x), np.float32)
    for g in np.unique(groups):
        held = groups == g
        mean, std = x[~held].mean(0), np.maximum(x[~held].std(0), 1e-4)   # as train.ridge.fit
        basis = torch.from_numpy(fit_basis((x[~held] - mean) / std, components))
        z = torch.from_numpy(((x[held] - mean) / std).astype(np.float32))
        out[held] = distance(z, basis).numpy()
    return out
