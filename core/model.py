"""The fusion model: per-modality projections to 128-d, concatenation, fusion to 256, two heads.

Each modality also has its own small emotion and sentiment heads, so the app can show what each
modality says on its own. A modality mask zeroes a modality that is absent for an utterance (no
face in view, silence) or that the checkpoint never learned; the fusion layer then decides from
the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .encoders import FACE_DIM, MEL_STEPS, N_MELS, VIDEO_DIM
from .labels import EMOTIONS, MODALITIES, SENTIMENTS

HIDDEN = 128
FUSION = 256
DROPOUT = 0.3


@dataclass
class ModelConfig:
    """Shapes of the fusion model; stored in every checkpoint card."""

    modalities: tuple[str, ...] = ("text", "face", "audio")
    text_dim: int = 384
    face_dim: int = FACE_DIM
    video_dim: int = VIDEO_DIM
    n_mels: int = N_MELS
    mel_steps: int = MEL_STEPS
    hidden: int = HIDDEN
    fusion: int = FUSION
    dropout: float = DROPOUT
    n_emotions: int = len(EMOTIONS)
    n_sentiments: int = len(SENTIMENTS)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["modalities"] = tuple(known.get("modalities", cls.modalities))
        unknown = [m for m in known["modalities"] if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities in model config: {unknown}")
        return cls(**known)


class AudioConvEncoder(nn.Module):
    """Conv1D over a log-mel [B, 64, 300] -> [B, hidden]. Trainable (GroupNorm: batch-of-one safe)."""

    def __init__(self, n_mels: int = N_MELS, hidden: int = HIDDEN):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(n_mels, 64, kernel_size=3, padding=1), nn.GroupNorm(8, 64), nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(64, 128, kernel_size=3, padding=1), nn.GroupNorm(8, 128), nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(128, hidden, kernel_size=3, padding=1), nn.GroupNorm(8, hidden), nn.ReLU(),
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.net(mel)                      # [B, hidden, T/4]
        return 0.5 * (h.mean(-1) + h.amax(-1))  # average and peak over time


def _projection(in_dim: int, hidden: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))


@dataclass
class ModelOutput:
    emotion_logits: torch.Tensor                         # [B, 7]
    sentiment_logits: torch.Tensor                       # [B, 3]
    modality_logits: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


class EmotionModel(nn.Module):
    """Projections -> masked concatenation -> fusion -> emotion and sentiment heads."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        encoders: dict[str, nn.Module] = {}
        for m in config.modalities:
            if m == "text":
                encoders[m] = _projection(config.text_dim, config.hidden, config.dropout)
            elif m == "face":
                encoders[m] = _projection(config.face_dim, config.hidden, config.dropout)
            elif m == "video":
                encoders[m] = _projection(config.video_dim, config.hidden, config.dropout)
            elif m == "audio":
                encoders[m] = nn.Sequential(AudioConvEncoder(config.n_mels, config.hidden),
                                            nn.Dropout(config.dropout))
        self.encoders = nn.ModuleDict(encoders)
        self.emotion_by = nn.ModuleDict({m: nn.Linear(config.hidden, config.n_emotions)
                                         for m in config.modalities})
        self.sentiment_by = nn.ModuleDict({m: nn.Linear(config.hidden, config.n_sentiments)
                                           for m in config.modalities})
        width = config.hidden * len(config.modalities)
        self.fusion = nn.Sequential(nn.Linear(width, config.fusion), nn.ReLU(), nn.Dropout(config.dropout))
        self.emotion_head = nn.Linear(config.fusion, config.n_emotions)
        self.sentiment_head = nn.Linear(config.fusion, config.n_sentiments)

    def forward(self, inputs: dict[str, torch.Tensor], mask: dict[str, torch.Tensor] | None = None
                ) -> ModelOutput:
        """inputs: modality -> batch tensor; mask: modality -> [B] bool (False = absent).

        A modality missing from `inputs` counts as absent for the whole batch.
        """
        batch = next(iter(inputs.values())).shape[0]
        device = next(self.parameters()).device
        parts, per_modality = [], {}
        for m in self.config.modalities:
            if m not in inputs:
                parts.append(torch.zeros(batch, self.config.hidden, device=device))
                continue
            h = self.encoders[m](inputs[m])
            per_modality[m] = (self.emotion_by[m](h), self.sentiment_by[m](h))
            keep = torch.ones(batch, device=device) if mask is None or m not in mask \
                else mask[m].to(device=device, dtype=h.dtype)
            parts.append(h * keep.unsqueeze(-1))
        fused = self.fusion(torch.cat(parts, dim=-1))
        return ModelOutput(self.emotion_head(fused), self.sentiment_head(fused), per_modality)


def with_modalities(model: EmotionModel, modalities: tuple[str, ...]) -> EmotionModel:
    """A copy of `model` that also has `modalities` (in that order), computing the same outputs.

    Every tensor of the old model is kept; a new modality gets fresh projection and head weights
    and zero fusion weights, so until it is trained it changes nothing. Used when --init starts
    from a checkpoint that never had, say, the video branch.
    """
    old = model.config
    missing = [m for m in old.modalities if m not in modalities]
    if missing:
        raise ValueError(f"cannot drop modalities {missing} from a trained model")
    config = ModelConfig.from_dict({**old.to_dict(), "modalities": list(modalities)})
    wider = EmotionModel(config)
    own = model.state_dict()
    state = wider.state_dict()
    for name, tensor in own.items():
        if not name.startswith("fusion.") and name in state and state[name].shape == tensor.shape:
            state[name] = tensor.clone()
    h = config.hidden
    weight = torch.zeros_like(state["fusion.0.weight"])
    for i, m in enumerate(old.modalities):
        j = modalities.index(m)
        weight[:, j * h:(j + 1) * h] = own["fusion.0.weight"][:, i * h:(i + 1) * h]
    state["fusion.0.weight"], state["fusion.0.bias"] = weight, own["fusion.0.bias"].clone()
    wider.load_state_dict(state)
    return wider
