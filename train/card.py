"""The one card builder: what a trained checkpoint says about itself (core.checkpoint.ModelCard)."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from core import checkpoint as ck
from core import voice

SKIP_ARGS = ("out", "tb", "quiet", "no_final_eval")
TEXT_POOLING = "mean over the utterance's own tokens (segment 0)"


def text_section(base: dict, name: str, encoder, context: tuple[int, int], text_state: dict,
                 tuned_layers: list[int], attention_layers: list[int]) -> dict:
    """The card's text_encoder: the --init checkpoint's (base) updated with this run's context and
    tuned layers, or a new one."""
    text = dict(base) if base else {"name": name, "dim": encoder.dim, "max_tokens": encoder.max_tokens,
                                    "pooling": TEXT_POOLING}
    turns, ahead = context
    text["context_turns"], text["context_ahead"] = turns, ahead
    text["context"] = ((f"the {ahead} following utterance(s), ' || ', then " if ahead else "")
                       + "previous utterances of the same dialogue, most recent first, joined by ' | ', "
                         "as the second segment; no speaker names")
    text["tuned"] = bool(text_state)
    text["tuned_layers"] = sorted(set(text.get("tuned_layers", [])) | set(tuned_layers))
    text["tuned_attention_layers"] = sorted(set(text.get("tuned_attention_layers", [])) | set(attention_layers))
    return text


def fusion_section(model, trained: list[str], init=None) -> dict:
    """How the modalities are fused, and each late modality's weight."""
    late = list(model.config.late)
    learned = [m for m in trained if m not in late]
    out = {"learned": learned, "late": {m: w for m, w in model.late_weights().items()},
           "method": ("concatenated 128-d projections of " + ", ".join(learned) + " -> fusion layer 256 -> heads"
                      + ("; then core.model.late_fuse joins the own heads of " + ", ".join(late)
                         + " (neutral = no evidence: neutral only if every modality finds it so; the emotion is "
                           "the weighted pool of what each finds beyond neutral)" if late else ""))}
    gate = getattr(model, "familiarity", None)
    if gate is not None and "audio" in late and bool(torch.isfinite(gate.full)):
        out["unfamiliar_voice"] = (f"the voice's late weight is scaled down as its feature lies outside the training "
                                   f"voices' top {gate.basis.shape[0]} principal directions (core.familiarity): full "
                                   f"up to distance {float(gate.full):.3f}, none from {float(gate.none):.3f}")
    if init is not None and init.card.data.get("fusion_how"):
        out["how_built"] = init.card.data["fusion_how"]
    return out


def build_card(args, *, name: str, text: dict, trained: list[str], model, data: dict, history: list[dict],
               best_epoch: int, keep: str, notes: str, init=None, extra_training: dict | None = None) -> ck.ModelCard:
    """A ModelCard for a run of train.train (text-only or clips)."""
    settings = {k: v for k, v in vars(args).items() if k not in SKIP_ARGS}
    training = {"args": settings, "torch": torch.__version__, "threads": args.threads,
                "machine": platform.machine(),
                "weights_kept": ("best dev epoch by emotion weighted F1" if keep == "dev" else
                                 "last epoch of a fixed schedule (no dev set to choose on)"),
                **(extra_training or {})}
    data = {**data, "training": training}
    if init is not None:
        data["init"] = {"checkpoint": str(args.init), "name": init.card.name,
                        "trained_modalities": list(init.card.trained_modalities)}
        for key in ("voice", "licence"):              # what the init's voice learned from, and its terms
            if key in init.card.data:
                data[key] = init.card.data[key]
    if "audio" in trained:                            # a voice branch means nothing under other features
        data["audio_feature"] = voice.FEATURE
    card = ck.ModelCard(name=name, text_encoder=text, trained_modalities=trained, data=data,
                        metrics={"dev_during_training": history, "best_epoch": best_epoch}, notes=notes)
    card.data["fusion"] = fusion_section(model, trained, init)
    return card


def default_name(args, trained: list[str], clips: bool, text_model: str | None = None) -> str:
    """--name, else a name from what was trained: `text_model` is the encoder really used (an --init
    checkpoint's, which --text-model does not override), else --text-model."""
    if args.name:
        return args.name
    if clips:
        return f"clips-{'-'.join(trained)}-{Path(args.out).resolve().name}"
    return (f"meld-text-{text_model or args.text_model}-ctx{args.context_turns}"
            + (f"+{args.context_ahead}" if args.context_ahead else ""))
