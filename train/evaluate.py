"""Score a checkpoint on any MELD-format CSV, the way the app would predict.

    python -m train.evaluate --csv CSV [--checkpoint DIR] [--out DIR]

The CSV is read with core.meld (mojibake repaired, bad rows reported and left out). Each
utterance gets the context the app builds (the previous utterances of its dialogue, as many as
the checkpoint's card says), goes through the checkpoint's text encoder (with the tuned tensors
applied) and the fusion model with face and audio absent, as in core.pipeline.

Prints emotion and sentiment weighted F1, accuracy and per-class F1; writes metrics.json,
predictions.csv and confusion_emotion.png / confusion_sentiment.png under --out; the last line
on stdout is one JSON object with emotion_weighted_f1, emotion_accuracy, sentiment_weighted_f1,
sentiment_accuracy (percentages), rows, and more.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from core import checkpoint as ck
from core.csvsafe import write_csv
from core.writes import os_error_line
from core.encoders import TextEncoder, apply_text_state, load_text_encoder
from core.labels import EMOTIONS, SENTIMENTS

from . import metrics
from .data import TextSplit, load_text_split


def text_encoder_for(checkpoint: ck.Checkpoint) -> TextEncoder:
    """The checkpoint's text encoder, built as core.pipeline.load_models builds it."""
    name = checkpoint.card.text_encoder["name"]
    if checkpoint.text_state:
        return apply_text_state(TextEncoder(name), checkpoint.text_state)
    return load_text_encoder(name)


@torch.no_grad()
def predict_texts(checkpoint: ck.Checkpoint, encoder: TextEncoder, texts: list[str],
                  contexts: list[str] | None, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused emotion [N, 7] and sentiment [N, 3] probabilities from text alone.

    Utterances are encoded in order of length (less padding; each one is tokenised on its own,
    so the result does not depend on its neighbours) and returned in the given order.
    """
    n = len(texts)
    order = sorted(range(n), key=lambda i: len(texts[i]) + (len(contexts[i]) if contexts else 0))
    vectors = encoder.encode([texts[i] for i in order],
                             None if contexts is None else [contexts[i] for i in order], batch_size)
    inverse = torch.empty(n, dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(n)
    vectors = vectors[inverse]
    model = checkpoint.model.eval()
    device = next(model.parameters()).device
    out = model({"text": vectors.to(device)}, {"text": torch.ones(n, dtype=torch.bool)})
    return out.emotion_logits.softmax(-1).cpu(), out.sentiment_logits.softmax(-1).cpu()


def evaluate_split(split: TextSplit, checkpoint: ck.Checkpoint, encoder: TextEncoder | None = None) -> dict:
    """Reports for emotion and sentiment, plus the predicted indices, for a split's examples."""
    examples = split.examples
    contexts = [e.context for e in examples] if any(checkpoint.card.context) else None
    encoder = encoder or text_encoder_for(checkpoint)
    emo_p, sen_p = predict_texts(checkpoint, encoder, [e.text for e in examples], contexts)
    emo, sen = emo_p.argmax(-1).tolist(), sen_p.argmax(-1).tolist()
    return {"emotion": metrics.report([e.emotion for e in examples], emo, EMOTIONS),
            "sentiment": metrics.report([e.sentiment for e in examples], sen, SENTIMENTS),
            "emotion_pred": emo, "sentiment_pred": sen}


def summary(result: dict, rows: int) -> dict:
    return {"emotion_weighted_f1": result["emotion"]["weighted_f1"],
            "emotion_accuracy": result["emotion"]["accuracy"],
            "sentiment_weighted_f1": result["sentiment"]["weighted_f1"],
            "sentiment_accuracy": result["sentiment"]["accuracy"],
            "emotion_macro_f1": result["emotion"]["macro_f1"],
            "sentiment_macro_f1": result["sentiment"]["macro_f1"],
            "rows": rows}


def write_outputs(out: Path, split: TextSplit, result: dict, head: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = {**head, "emotion": result["emotion"], "sentiment": result["sentiment"]}
    (out / "metrics.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    for task, labels in (("emotion", EMOTIONS), ("sentiment", SENTIMENTS)):
        metrics.render_confusion_png(result[task]["confusion"], labels, out / f"confusion_{task}.png",
                                     title=f"{task}: weighted F1 {result[task]['weighted_f1']:.1f}, "
                                           f"{head['rows']} rows")
    write_csv(out / "predictions.csv",         # formula-safe, like every CSV the project writes
              ["Dialogue_ID", "Utterance_ID", "Utterance", "Emotion", "Predicted_Emotion",
               "Sentiment", "Predicted_Sentiment"],
              [[e.dialogue_id, e.utterance_id, e.text, EMOTIONS[e.emotion], EMOTIONS[pe],
                SENTIMENTS[e.sentiment], SENTIMENTS[ps]]
               for e, pe, ps in zip(split.examples, result["emotion_pred"], result["sentiment_pred"])])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", required=True, help="MELD-format CSV with Emotion and Sentiment labels")
    p.add_argument("--checkpoint", default=str(ck.DEFAULT_CHECKPOINT),
                   help="checkpoint folder (default: the shipped one)")
    p.add_argument("--out", default=None, help="folder for metrics.json, predictions.csv and the PNGs "
                                               "(default runs/eval-<csv name>)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    try:
        checkpoint = ck.load_checkpoint(args.checkpoint)
    except ck.CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    turns, ahead = checkpoint.card.context
    try:
        split = load_text_split(args.csv, turns, ahead=ahead)
    except (OSError, ValueError) as err:      # core.meld.MeldFormatError is a ValueError or not: both end here
        print(f"error: cannot read {args.csv}: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
              file=sys.stderr)
        return 2
    except Exception as err:                  # MeldFormatError and friends: one line, no traceback
        print(f"error: cannot read {args.csv}: {type(err).__name__}: {str(err).splitlines()[0][:200]}",
              file=sys.stderr)
        return 2
    for line in split.skipped[:20]:
        print(f"skipped {line}", file=sys.stderr)
    if len(split.skipped) > 20:
        print(f"... and {len(split.skipped) - 20} more rows skipped", file=sys.stderr)
    if not split.examples:
        print(f"error: {args.csv} has no row with a valid emotion and sentiment label", file=sys.stderr)
        return 2

    result = evaluate_split(split, checkpoint)
    head = {**summary(result, len(split.examples)), "csv": str(args.csv),
            "checkpoint": str(args.checkpoint), "model": checkpoint.card.name,
            "context_turns": turns, "context_ahead": ahead, "skipped_rows": len(split.skipped),
            "repaired_rows": split.repaired}
    out = Path(args.out) if args.out else Path("runs") / f"eval-{Path(args.csv).stem}"
    try:
        write_outputs(out, split, result, head)
    except OSError as err:                    # disk full, permission: one line, no absolute path
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 2
    print(f"checkpoint {args.checkpoint} ({checkpoint.card.name}; context: {turns} previous"
          f"{f' and {ahead} following' if ahead else ''} utterances)")
    print(f"{args.csv}: {len(split.examples)} rows scored, {len(split.skipped)} skipped, "
          f"{split.repaired} with repaired text")
    print(metrics.format_report("emotion", result["emotion"]))
    print(metrics.format_report("sentiment", result["sentiment"]))
    print(f"wrote {out / 'metrics.json'}, {out / 'predictions.csv'}, "
          f"{out / 'confusion_emotion.png'}, {out / 'confusion_sentiment.png'}")
    print(json.dumps(head), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
