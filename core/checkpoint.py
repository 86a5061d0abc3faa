"""Checkpoints: safetensors weights plus a JSON card. Nothing is ever unpickled.

A checkpoint is a folder:
    card.json               labels, encoder names and dims, trained modalities, data, metrics
    model.safetensors       the fusion model (projections, audio Conv1D, fusion, heads)
    text_encoder.safetensors   optional: the text-encoder tensors that training changed
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .labels import EMOTIONS, SENTIMENTS
from .model import EmotionModel, ModelConfig
from .types import UserError

CARD_FILE = "card.json"
MODEL_FILE = "model.safetensors"
TEXT_FILE = "text_encoder.safetensors"
# the voice branch, when its card names a licence of its own (data["voice"]["licence"]: weights
# trained on RAVDESS are CC BY-NC-SA 4.0): its own file, with the notice beside it
VOICE_FILE = "voice.safetensors"
VOICE_LICENSE_FILE = "LICENSE-voice.txt"
VOICE_PREFIXES = ("encoders.audio.", "emotion_by.audio.", "sentiment_by.audio.", "late_log_weight.audio",
                  "familiarity.")
FORMAT_VERSION = 1
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "model"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")
MAX_CARD_BYTES = 4 * 2**20


class CheckpointError(UserError, RuntimeError):
    """A checkpoint folder cannot be used; the message says why in one line."""


@dataclass
class ModelCard:
    """What a checkpoint is: shapes, encoders, what it learned from and how well it did."""

    name: str = "untrained"
    emotions: list[str] = field(default_factory=lambda: list(EMOTIONS))
    sentiments: list[str] = field(default_factory=lambda: list(SENTIMENTS))
    model: dict[str, Any] = field(default_factory=lambda: ModelConfig().to_dict())
    text_encoder: dict[str, Any] = field(default_factory=lambda: {
        "name": "minilm", "dim": 384, "context_turns": 0, "tuned": False})
    video_encoder: dict[str, Any] = field(default_factory=dict)   # R3D-18 weights the video branch learned on
    trained_modalities: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    notes: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def trained(self) -> bool:
        return bool(self.trained_modalities)

    @property
    def context(self) -> tuple[int, int]:
        """(previous, following) utterances the text encoder reads as context (core.text.build_context)."""
        return (max(0, int(self.text_encoder.get("context_turns", 0) or 0)),
                max(0, int(self.text_encoder.get("context_ahead", 0) or 0)))

    def summary(self) -> dict[str, Any]:
        """The short form shown in the app and stored in every Analysis."""
        return {"name": self.name, "trained": self.trained,
                "trained_modalities": list(self.trained_modalities),
                "text_encoder": self.text_encoder.get("name", ""),
                "context_turns": self.context[0], "context_ahead": self.context[1],
                "data": self.data, "metrics": self.metrics}


@dataclass
class Checkpoint:
    model: EmotionModel
    card: ModelCard
    text_state: dict[str, torch.Tensor] = field(default_factory=dict)


def untrained(config: ModelConfig | None = None, seed: int = 0) -> Checkpoint:
    """A freshly initialised model whose card says plainly that it learned nothing."""
    torch.manual_seed(seed)
    config = config or ModelConfig()
    card = ModelCard(model=config.to_dict(), notes="Untrained: fused predictions are not meaningful.")
    return Checkpoint(EmotionModel(config).eval(), card)


def save_checkpoint(folder: str | Path, model: EmotionModel, card: ModelCard,
                    text_state: dict[str, torch.Tensor] | None = None, text_dtype=torch.float16) -> Path:
    """Write the folder atomically file by file (temp file + rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    card.model = model.config.to_dict()
    card.created = card.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    voice = card.data.get("voice") if isinstance(card.data.get("voice"), dict) else None
    if voice and voice.get("licence") and "audio" in model.config.modalities:
        own = {k: v for k, v in state.items() if k.startswith(VOICE_PREFIXES)}
        state = {k: v for k, v in state.items() if k not in own}
        _atomic(folder / VOICE_FILE, lambda p: save_file(own, str(p)))
        _atomic(folder / VOICE_LICENSE_FILE, lambda p: p.write_text(voice.get("notice") or voice["licence"]))
    elif (folder / VOICE_FILE).exists():
        (folder / VOICE_FILE).unlink()
    _atomic(folder / MODEL_FILE, lambda p: save_file(state, str(p)))
    if text_state:
        small = {k: v.detach().cpu().to(text_dtype).contiguous() for k, v in text_state.items()}
        _atomic(folder / TEXT_FILE, lambda p: save_file(small, str(p)))
        card.text_encoder["tuned"] = True
    elif (folder / TEXT_FILE).exists():
        (folder / TEXT_FILE).unlink()
    _atomic(folder / CARD_FILE, lambda p: p.write_text(json.dumps(asdict(card), indent=2)))
    return folder


def read_card(folder: str | Path) -> ModelCard:
    """Read and check a card.json without touching the weights."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a checkpoint: {CARD_FILE} is missing")
    if path.stat().st_size > MAX_CARD_BYTES:
        raise CheckpointError(f"{path} is not a valid card: larger than {MAX_CARD_BYTES // 2**20} MB")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object, found {type(raw).__name__}")
        known = {k: v for k, v in raw.items() if k in ModelCard.__dataclass_fields__}
        card = ModelCard(**known)
        for name in ("emotions", "sentiments", "trained_modalities"):
            if not isinstance(getattr(card, name), list):
                raise ValueError(f"{name} is not a list")
        for name in ("model", "text_encoder", "video_encoder", "data", "metrics"):
            if not isinstance(getattr(card, name), dict):
                raise ValueError(f"{name} is not an object")
    except (ValueError, TypeError, RecursionError) as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a valid card: {first}") from None
    if tuple(card.emotions) != EMOTIONS or tuple(card.sentiments) != SENTIMENTS:
        raise CheckpointError(f"{path}: the checkpoint's labels {card.emotions}/{card.sentiments} "
                              "differ from this app's")
    return card


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint folder (safetensors only) into an eval-mode model."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    card = check_card(folder)                 # shapes and size, before any tensor exists
    weights = folder / MODEL_FILE
    if not weights.is_file():
        pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = f" (found {', '.join(pickles)}: pickled weights are refused)" if pickles else ""
        raise CheckpointError(f"{folder}: {MODEL_FILE} is missing{hint}")
    try:
        config = ModelConfig.from_dict(card.model)
        model = EmotionModel(config)
        state = load_file(str(weights))
        if (folder / VOICE_FILE).is_file():           # the voice branch, kept apart for its licence
            state.update(load_file(str(folder / VOICE_FILE)))
        model.load_state_dict(state, strict=True)
        text_state = {}
        if (folder / TEXT_FILE).is_file():
            text_state = {k: v.float() for k, v in load_file(str(folder / TEXT_FILE)).items()}
    except (SafetensorError, RuntimeError, ValueError, TypeError, OSError, KeyError, AttributeError) as err:
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        first = (lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0])[:200] if lines \
            else type(err).__name__
        raise CheckpointError(f"{folder}: weights do not match the card ({first})") from None
    return Checkpoint(model.to(device).eval(), card, text_state)


def load_or_untrained(folder: str | Path | None = None) -> Checkpoint:
    """The given checkpoint, else the shipped one, else an untrained model (said in its card)."""
    if folder is not None:
        return load_checkpoint(folder)
    if (DEFAULT_CHECKPOINT / CARD_FILE).is_file():
        return load_checkpoint(DEFAULT_CHECKPOINT)
    return untrained()


MAX_DIM = 16384     # no shipped or trainable layer is anywhere near this wide
MAX_PARAMETERS = 20_000_000    # ~80 MB of float32; the shipped fusion model is far smaller
MAX_FAMILIARITY = 256          # principal directions of the voice's familiarity (core.familiarity)


def parameter_count(config: ModelConfig) -> int:
    """How many parameters the model of `config` has, counted on PyTorch's meta device: the
    layers are built from shapes alone, so no memory is allocated for any weight."""
    with torch.device("meta"):
        model = EmotionModel(config)
    return sum(p.numel() for p in model.parameters())


def _sane(config: ModelConfig) -> ModelConfig:
    """Refuse a card whose shapes would allocate absurd memory before any tensor is made."""
    for name, value in config.to_dict().items():
        default = ModelConfig.__dataclass_fields__[name].default
        if isinstance(default, tuple):             # modalities, late: names, checked by from_dict
            continue
        if name == "dropout":
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"model.dropout {value!r} is not in [0, 1)")
        elif name == "voice_familiarity":           # 0: off; a [K, audio_dim] buffer, so K stays small
            top = min(config.audio_dim, MAX_FAMILIARITY)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise ValueError(f"model.voice_familiarity {value!r} is not a whole number in 0..{top}")
        elif isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIM:
            raise ValueError(f"model.{name} {value!r} is not a whole number in 1..{MAX_DIM}")
    count = parameter_count(config)
    if count > MAX_PARAMETERS:
        raise ValueError(f"the card's shapes make {count:,} parameters; the limit is {MAX_PARAMETERS:,}")
    return config


def check_card(folder: str | Path) -> ModelCard:
    """Read a card and check its model shapes (CheckpointError), without reading any weights."""
    card = read_card(folder)
    try:
        _sane(ModelConfig.from_dict(card.model))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{Path(folder).name}: the card's model is refused ({err})") from None
    return card


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
