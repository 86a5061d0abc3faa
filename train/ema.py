"""Exponential moving average of trainable weights: scored and saved in place of the raw ones.

Averaging the last few hundred steps smooths the noise of small-batch fine-tuning; it costs one
copy of the trained tensors (the fusion model and the tuned encoder layers, a few MB).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


class WeightAverage:
    """shadow = decay * shadow + (1 - decay) * weight after every step; `applied()` swaps it in."""

    def __init__(self, params: dict[str, torch.Tensor], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be between 0 and 1, not {decay}")
        self.params = params
        self.decay = decay
        self.updates = 0
        self.shadow = {n: p.detach().clone() for n, p in params.items()}

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current weights in (with warm-up: early on the average follows the weights closely)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach(), 1.0 - decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the parameters hold the averaged weights; the raw ones come back after."""
        backup = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(backup[name])
