"""Put a newly trained text model into a checkpoint that carries a voice, keeping the voice as it is.

    python -m train.swap_text --text runs/new-text-model --into assets/model --out assets/model

The words and the voice learn apart (train.train on MELD, train.voice on RAVDESS) and meet only
in core.model.late_fuse, so a new text model can replace the old one without touching the voice:
everything outside the voice branch (text projection, fusion layer, fused heads) and the tuned
text-encoder tensors come from --text, the voice branch, its late weight, its licence and its
card sections from --into. The dev figures are scored again from the written files
(train.evaluate), as train.train does; the voice's fusion checks are not re-run here (train.voice).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys

from core import checkpoint as ck
from core.model import EmotionModel

from . import loop
from .evaluate import save_and_score

TEXT_CARD_DATA = ("train", "dev", "note", "training", "init", "soup")      # card.data sections that describe the words


def swap(text: ck.Checkpoint, into: ck.Checkpoint) -> tuple[EmotionModel, ck.ModelCard]:
    """The model and card of `into` with the text side of `text` (whose encoder may be wider: the
    text projection comes from `text` with its input width)."""
    config = dataclasses.replace(into.model.config, text_dim=text.model.config.text_dim)
    model = EmotionModel(config)
    state = into.model.state_dict()
    theirs = text.model.state_dict()
    state.update({k: v for k, v in theirs.items() if k in state and not k.startswith(ck.VOICE_PREFIXES)})
    mismatched = [k for k, v in model.state_dict().items() if k in state and state[k].shape != v.shape]
    if mismatched:
        raise ck.CheckpointError(f"the two checkpoints' tensors do not fit together: {', '.join(mismatched[:3])}")
    model.load_state_dict(state)
    card = copy.deepcopy(into.card)
    card.name, card.text_encoder, card.created = text.card.name, dict(text.card.text_encoder), ""
    card.data.update({k: copy.deepcopy(text.card.data[k]) for k in TEXT_CARD_DATA if k in text.card.data})
    card.metrics = copy.deepcopy(text.card.metrics)
    card.trained_modalities = sorted(set(card.trained_modalities) | set(text.card.trained_modalities),
                                     key=loop.TRAINABLE.index)
    card.data["text_swapped_in"] = {"from": text.card.name, "note": "text side from a train.train run, "
                                    "voice branch and fusion checks kept from the checkpoint it went into"}
    return model.eval(), card


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m train.swap_text", description=__doc__.split("\n\n")[0])
    p.add_argument("--text", required=True, help="checkpoint whose text side is taken")
    p.add_argument("--into", default=str(ck.DEFAULT_CHECKPOINT), help="checkpoint whose voice is kept")
    p.add_argument("--out", required=True, help="checkpoint folder to write (may be --into)")
    p.add_argument("--dev", default=None, help="MELD-format CSV to score the written files on")
    args = p.parse_args(argv)
    try:
        text, into = ck.load_checkpoint(args.text), ck.load_checkpoint(args.into)
        model, card = swap(text, into)
        summary = {"out": args.out, "text_from": text.card.name,
                   **save_and_score(args.out, model, card, text.text_state, args.dev)}
    except ck.CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
