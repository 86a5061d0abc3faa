"""The fusion model: per-modality projections to 128-d, concatenation, fusion to 256, two heads.

Each modality also has its own small emotion and sentiment heads, so the app can show what each
modality says on its own. A modality mask zeroes a modality that is absent for an utterance (no
face in view, silence) or that the checkpoint never learned; the fusion layer then decides from
the rest.

A modality may instead be fused late (`ModelConfig.late`): its own head's opinion joins the learned
fusion's through `late_fuse`, with a learned weight. The shipped model fuses the voice this way,
since its voice head learned from acted speech and its text from MELD, and no data holds both.

A modality's sentiment opinion may be read off its own emotion opinion instead of its sentiment
head (`ModelConfig.sentiment_from_emotion`: the emotions' polarities summed, labels.EMOTION_POLARITY).
The shipped voice is read so: it learned from RAVDESS, where a clip's sentiment is nothing but its
emotion's polarity, and a separate head there said "joy" and "negative" of the same voice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .encoders import AUDIO_DIM, FACE_DIM, VIDEO_DIM
from .familiarity import Familiarity
from .labels import EMOTION_POLARITY, EMOTIONS, MODALITIES, SENTIMENTS

HIDDEN = 128
FUSION = 256
DROPOUT = 0.3
# [7, 3]: row e has a 1 in the column of emotion e's polarity (sentiment_of_emotion)
POLARITY = torch.tensor([[float(SENTIMENTS.index(EMOTION_POLARITY[e]) == k) for k in range(len(SENTIMENTS))]
                         for e in EMOTIONS])


@dataclass
class ModelConfig:
    """Shapes of the fusion model; stored in every checkpoint card."""

    modalities: tuple[str, ...] = ("text", "face", "audio")
    text_dim: int = 384
    face_dim: int = FACE_DIM
    video_dim: int = VIDEO_DIM
    audio_dim: int = AUDIO_DIM
    hidden: int = HIDDEN
    fusion: int = FUSION
    dropout: float = DROPOUT
    n_emotions: int = len(EMOTIONS)
    n_sentiments: int = len(SENTIMENTS)
    late: tuple[str, ...] = ()         # modalities fused late (late_fuse), not through the fusion layer
    voice_familiarity: int = 0         # principal directions of the voice's training features kept to
                                       # judge how familiar a voice is (core.familiarity); 0: off
    sentiment_from_emotion: tuple[str, ...] = ()   # modalities whose sentiment opinion is their emotion
                                                   # opinion's polarity (sentiment_of_emotion), not their head's

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modalities"], d["late"] = list(self.modalities), list(self.late)
        d["sentiment_from_emotion"] = list(self.sentiment_from_emotion)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["modalities"] = tuple(known.get("modalities", cls.modalities))
        known["late"] = tuple(known.get("late", ()))
        known["sentiment_from_emotion"] = tuple(known.get("sentiment_from_emotion", ()))
        unknown = [m for m in known["modalities"] if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities in model config: {unknown}")
        if any(m not in known["modalities"] for m in known["late"]):
            raise ValueError(f"late-fused modalities {list(known['late'])} are not all in {list(known['modalities'])}")
        if any(m not in known["modalities"] for m in known["sentiment_from_emotion"]):
            raise ValueError(f"sentiment_from_emotion {list(known['sentiment_from_emotion'])} are not all in "
                             f"{list(known['modalities'])}")
        return cls(**known)


class Standardize(nn.Module):
    """(x - mean) / std per feature, with the statistics of the data the branch learned from
    (buffers, saved with the weights; identity until train.loop.fit_standardizers sets them)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @property
    def fitted(self) -> bool:
        return bool(self.mean.abs().sum() > 0 or (self.std != 1).any())


def _voice_projection(in_dim: int, hidden: int, dropout: float) -> nn.Module:
    """Voice features (core.voice, mean+std of Whisper states) need per-feature scaling: their
    dimensions differ in scale by orders of magnitude, and a per-row LayerNorm left a head on
    held-out speakers 3 points behind a standardised one."""
    return nn.Sequential(Standardize(in_dim), nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(),
                         nn.Dropout(dropout))


def _projection(in_dim: int, hidden: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))


@dataclass
class ModelOutput:
    emotion_logits: torch.Tensor                         # [B, 7]
    sentiment_logits: torch.Tensor                       # [B, 3]
    modality_logits: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    late_share: dict[str, torch.Tensor] = field(default_factory=dict)   # [B] 0..1: how much of its late
                                                                        # weight each row's opinion got


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
                encoders[m] = _voice_projection(config.audio_dim, config.hidden, config.dropout)
        self.encoders = nn.ModuleDict(encoders)
        self.emotion_by = nn.ModuleDict({m: nn.Linear(config.hidden, config.n_emotions)
                                         for m in config.modalities})
        self.sentiment_by = nn.ModuleDict({m: nn.Linear(config.hidden, config.n_sentiments)
                                           for m in config.modalities})
        width = config.hidden * len(config.modalities)
        self.fusion = nn.Sequential(nn.Linear(width, config.fusion), nn.ReLU(), nn.Dropout(config.dropout))
        self.emotion_head = nn.Linear(config.fusion, config.n_emotions)
        self.sentiment_head = nn.Linear(config.fusion, config.n_sentiments)
        # log of each late modality's weight in late_fuse (0: weight 1)
        self.late_log_weight = nn.ParameterDict({m: nn.Parameter(torch.zeros(())) for m in config.late})
        if config.voice_familiarity and "audio" in config.modalities:
            self.familiarity = Familiarity(config.audio_dim, config.voice_familiarity)

    def late_weights(self) -> dict[str, float]:
        """The weight of each late-fused modality (the card shows them)."""
        return {m: round(float(p.detach().exp()), 4) for m, p in self.late_log_weight.items()}

    def forward(self, inputs: dict[str, torch.Tensor], mask: dict[str, torch.Tensor] | None = None
                ) -> ModelOutput:
        """inputs: modality -> batch tensor; mask: modality -> [B] bool (False = absent).

        A modality missing from `inputs` counts as absent for the whole batch.
        """
        batch = next(iter(inputs.values())).shape[0]
        device = next(self.parameters()).device
        parts, per_modality, share = [], {}, {}
        for m in self.config.modalities:
            if m not in inputs:
                parts.append(torch.zeros(batch, self.config.hidden, device=device))
                continue
            h = self.encoders[m](inputs[m])
            e = self.emotion_by[m](h)
            per_modality[m] = (e, sentiment_of_emotion(e) if m in self.config.sentiment_from_emotion
                               else self.sentiment_by[m](h))
            keep = torch.ones(batch, device=device) if mask is None or m not in mask \
                else mask[m].to(device=device, dtype=h.dtype)
            if m in self.config.late:
                share[m] = keep
                if m == "audio" and hasattr(self, "familiarity"):   # an unfamiliar voice counts less
                    with torch.no_grad():
                        share[m] = keep * self.familiarity(self.encoders[m][0](inputs[m]))[1].to(keep.dtype)
            parts.append(h * keep.unsqueeze(-1) * (0.0 if m in self.config.late else 1.0))
        fused = self.fusion(torch.cat(parts, dim=-1))
        emotion, sentiment = self.emotion_head(fused), self.sentiment_head(fused)
        opinions = [(per_modality[m], share[m], self.late_log_weight[m].exp()) for m in self.config.late
                    if m in per_modality]
        if opinions:
            emotion = late_fuse(emotion, [(e, k, w) for (e, _), k, w in opinions], EMOTIONS.index("neutral"))
            sentiment = late_fuse(sentiment, [(s, k, w) for (_, s), k, w in opinions], SENTIMENTS.index("neutral"))
        return ModelOutput(emotion, sentiment, per_modality, share)


def sentiment_of_emotion(logits: torch.Tensor) -> torch.Tensor:
    """[B, 3] log-probabilities of each sentiment: the summed probabilities of the emotions of that
    polarity (labels.EMOTION_POLARITY; surprise counts as neutral, as MELD has it both ways)."""
    probs = logits.float().softmax(-1) @ POLARITY.to(logits.device)
    return probs.clamp_min(1e-12).log()


def late_fuse(logits: torch.Tensor, opinions: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
              neutral: int) -> torch.Tensor:
    """Join late modalities' opinions to the fused one, treating "neutral" as no evidence.

    logits [B, C]: the learned fusion's; opinions: (logits [B, C], present [B] 0/1, weight w) per
    late modality. With p0 the fused distribution and p_m each present opinion:
        p(neutral) = p0(neutral) * prod_m p_m(neutral) ** w_m
        p(c)       = (1 - p(neutral)) * (p0(c) + sum_m w_m p_m(c)) / ((1 - p0(neutral)) + sum_m w_m (1 - p_m(neutral)))
    so an utterance is neutral only if every modality finds it so, and the emotion is the
    weighted pool of what each modality finds beyond neutral: an angry voice under flat words
    reads angry, angry words in a flat voice too. With no late opinion present it returns the
    fused distribution unchanged. Returns log-probabilities (usable as logits).
    """
    p0 = logits.float().softmax(-1)
    log_n = p0[:, neutral].clamp_min(1e-12).log()
    num = p0.clone()
    den = 1.0 - p0[:, neutral]
    for other, present, w in opinions:
        p = other.float().softmax(-1)
        wk = w * present.to(p.dtype)
        log_n = log_n + wk * p[:, neutral].clamp_min(1e-12).log()
        num = num + wk.unsqueeze(-1) * p
        den = den + wk * (1.0 - p[:, neutral])
    p_n = log_n.exp()
    probs = (1.0 - p_n).unsqueeze(-1) * num / den.clamp_min(1e-12).unsqueeze(-1)
    probs = torch.cat([probs[:, :neutral], p_n.unsqueeze(-1), probs[:, neutral + 1:]], dim=-1)
    return probs.clamp_min(1e-12).log()


def model_batch(config: ModelConfig, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                use) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model's inputs and modality mask for one batch, for core.pipeline and train alike.

    features: modality -> [B, ...] tensor; present: modality -> [B] bool (it has data in that
    row); use(m): whether the model may hear modality m (trained in the checkpoint, or being
    trained). A modality of the config with no features, or present in no row, is left out
    (the model treats it as absent and does not run its branch).
    """
    inputs, mask = {}, {}
    for m in config.modalities:
        if m not in features or m not in present:
            continue
        on = present[m].bool() & bool(use(m))
        if m != "text" and not bool(present[m].any()):
            continue
        inputs[m], mask[m] = features[m], on
    return inputs, mask


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


def with_own_sentiment(model: EmotionModel, modalities: set[str]) -> list[str]:
    """Let `modalities` answer sentiment with their own heads again (in place): a retraining on
    labelled sentiment teaches those heads what their emotion's polarity cannot say (an annotator's
    surprise may be positive). Returns the modalities that were read off their emotion before."""
    switched = [m for m in model.config.sentiment_from_emotion if m in modalities]
    if switched:
        model.config = ModelConfig.from_dict({**model.config.to_dict(), "sentiment_from_emotion": [
            m for m in model.config.sentiment_from_emotion if m not in modalities]})
    return switched
