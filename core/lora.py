"""LoRA: low-rank updates of a frozen encoder's linear layers, trained small, merged at load.

Training wraps chosen nn.Linear layers in LoRALinear: y = W x + scale * B (A dropout(x)), with W
frozen and only A [r, in] and B [out, r] learning (Hu et al., 2021). A checkpoint stores, per
wrapped layer, "<layer>.lora_A" and "<layer>.lora_B" with the scale already folded into B, so
loading is one addition per layer, W += B @ A (merge_into), and inference costs exactly what the
plain encoder costs. No peft at run time: these few lines are the whole of it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# the linear layers of an encoder layer that LoRA adapts: attention (q, k, v, out) and the feed-forward
TARGETS = ("attention.self.query", "attention.self.key", "attention.self.value",      # BERT (MiniLM)
           "attention.output.dense", "intermediate.dense", "output.dense")
MPNET_TARGETS = ("attention.attn.q", "attention.attn.k", "attention.attn.v",           # MPNet
                 "attention.attn.o", "intermediate.dense", "output.dense")
ALL_TARGETS = (TARGETS, MPNET_TARGETS)
A_SUFFIX, B_SUFFIX = ".lora_A", ".lora_B"


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update (B starts at zero: no change at first)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    @property
    def weight(self) -> torch.Tensor:          # what code reading `.weight` of the layer expects
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scale


def targets_for(layer: nn.Module) -> tuple[str, ...]:
    """The names of the linear layers LoRA adapts in this kind of encoder layer (BERT or MPNet)."""
    names = {n for n, m in layer.named_modules() if isinstance(m, (nn.Linear, LoRALinear))}
    for targets in ALL_TARGETS:
        if set(targets) <= names:
            return targets
    raise ValueError(f"LoRA does not know the linear layers of {type(layer).__name__}")


def add_lora(layers: nn.ModuleList, indices: list[int], rank: int, alpha: float, dropout: float = 0.0,
             prefix: str = "bert.encoder.layer") -> dict[str, nn.Parameter]:
    """Wrap the targets_for() linear layers of layers[i] for i in `indices`; returns the new
    trainable tensors by the names a checkpoint stores them under ("<prefix>.<i>.<target>.lora_A"
    / ".lora_B")."""
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, not {rank}")
    out = {}
    for i in indices:
        for target in targets_for(layers[i]):
            parent_name, _, child = target.rpartition(".")
            parent = layers[i].get_submodule(parent_name)
            base = getattr(parent, child)
            if isinstance(base, LoRALinear):
                raise ValueError(f"layer {i} {target} already has LoRA")
            wrapped = LoRALinear(base, rank, alpha, dropout)
            setattr(parent, child, wrapped)
            out[f"{prefix}.{i}.{target}{A_SUFFIX}"] = wrapped.lora_A
            out[f"{prefix}.{i}.{target}{B_SUFFIX}"] = wrapped.lora_B
    return out


def is_lora(name: str) -> bool:
    return name.endswith((A_SUFFIX, B_SUFFIX))


def export(trainable: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """The trainable tensors as a checkpoint stores them: LoRA B multiplied by its scale."""
    return {n: (p.detach() * scale if n.endswith(B_SUFFIX) else p.detach()) for n, p in trainable.items()}


def combine(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stored tensors of a checkpoint (`old`) followed by a run trained on top of it (`new`).

    Plain tensors: the new ones replace the old. LoRA on a layer both adapted: the two updates
    are stacked into one of rank r_old + r_new ([A_old; A_new], [B_old, B_new]), whose product
    is exactly the sum of both updates.
    """
    out = dict(old)
    for name, t in new.items():
        if name in old and name.endswith(A_SUFFIX):
            out[name] = torch.cat([old[name], t], 0)
        elif name in old and name.endswith(B_SUFFIX):
            out[name] = torch.cat([old[name], t], 1)
        else:
            out[name] = t
    return out


def rank_of(state: dict[str, torch.Tensor]) -> int:
    """The largest LoRA rank in a stored state (0: no LoRA)."""
    return max((int(t.shape[0]) for n, t in state.items() if n.endswith(A_SUFFIX)), default=0)


@torch.no_grad()
def merge_into(module: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Add every stored LoRA update to its layer's weight in `module` (W += B @ A, in float32).
    Returns the names of the weights changed; raises ValueError on a pair that does not fit."""
    own = dict(module.named_parameters())
    changed = []
    for name in sorted(n for n in state if n.endswith(A_SUFFIX)):
        layer = name[: -len(A_SUFFIX)]
        a, b = state[name].float(), state.get(layer + B_SUFFIX)
        weight = own.get(layer + ".weight")
        if b is None or weight is None or tuple(weight.shape) != (b.shape[0], a.shape[1]) or b.shape[1] != a.shape[0]:
            raise ValueError(f"LoRA tensors for {layer} do not fit this encoder")
        weight.add_((b.float() @ a).to(weight.dtype))
        changed.append(layer + ".weight")
    if any(n.endswith(B_SUFFIX) and n[: -len(B_SUFFIX)] + A_SUFFIX not in state for n in state):
        raise ValueError("a LoRA B tensor has no A")
    return changed
