"""Score a checkpoint on any MELD-format CSV, the way the app would predict.

    python -m train.evaluate --csv CSV [--checkpoint DIR] [--out DIR]
    python -m train.evaluate --clips DIR [--csv CSV] [--checkpoint DIR] [--out DIR]

The CSV is read with core.meld (mojibake repaired, bad rows reported and left out). Each
utterance gets the context the app builds (the previous and following utterances of its
dialogue, as many as the checkpoint's card says) and goes through the checkpoint's text encoder
(with the tuned tensors applied) and the fusion model, fed by core.model.model_batch as
core.pipeline feeds it:

- text only (--csv without clips): face, voice and video are absent, so what is scored is the
  model's reading of the words;
- with clips (--clips DIR: the app's export zip or folder, the MELD release, or a folder of
  dia{D}_utt{U}.mp4 clips; or --csv naming an export zip or folder): every modality the
  checkpoint uses in the app (its card's trained_modalities): the words, the face found in the
  clip's frames, the voice (Whisper's encoder states over the clip's speech, core.voice, heard
  among the other clips of its dialogue as the app hears a video's utterances; the score with
  each clip heard alone is printed and kept as "voice_heard_alone" too), the
  R3D-18 video vector when the checkpoint has that branch. A row without a usable clip is scored
  on its text. What is scored is the fused label the app would show, plus (in metrics.json,
  "heads") each modality's own head.

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
from core.text import TextEncoder, apply_text_state, load_text_encoder
from core.labels import EMOTIONS, SENTIMENTS

from . import loop, metrics
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


def score_checkpoint(checkpoint: ck.Checkpoint, data: loop.Inputs) -> dict:
    """Score Inputs through a loaded checkpoint as the app predicts: its trained modalities (all,
    for an untrained one), through core.model.model_batch. Reports, predictions and each head."""
    use = set(checkpoint.card.trained_modalities) or set(checkpoint.model.config.modalities)
    pred = loop.predict(checkpoint.model, data, loop.TextSide(), use)
    return {**loop.score(data, pred, use), "emotion_pred": pred["emotion"], "sentiment_pred": pred["sentiment"],
            "predicted_emotion": [EMOTIONS[i] for i in pred["emotion"]],
            "head_emotion": {m: [EMOTIONS[i] if i >= 0 else "" for i in pred["heads"][m]]
                             for m in sorted(use) if m in pred["heads"]}}


def dev_metrics(folder: str | Path, csv: str | Path) -> dict:
    """The card's metrics.dev for a written checkpoint: its files scored on a MELD-format CSV
    (text only, with the context its card asks for): headline figures, rows, per-class reports."""
    checkpoint = ck.load_checkpoint(folder)
    turns, ahead = checkpoint.card.context
    split = load_text_split(str(csv), turns, None, ahead)
    scores = evaluate_split(split, checkpoint)
    return {**loop.headline(scores), "rows": len(split.examples),
            **{k: scores[k] for k in ("emotion", "sentiment", "heads") if k in scores}}


def save_and_score(folder: str | Path, model, card: ck.ModelCard, text_state: dict, csv: str | Path | None) -> dict:
    """Write a checkpoint; with `csv`, score the written files on it (dev_metrics), keep that as the
    card's metrics.dev, write the card again and return the headline figures (else {})."""
    ck.save_checkpoint(folder, model, card, text_state)
    if not csv:
        return {}
    card.metrics["dev"] = dev_metrics(folder, csv)
    ck.save_checkpoint(folder, model, card, text_state)
    return {k: card.metrics["dev"][k] for k in loop.HEADLINE}


def evaluate_split(split: TextSplit, checkpoint: ck.Checkpoint, encoder: TextEncoder | None = None) -> dict:
    """Reports for emotion and sentiment, plus the predicted indices, for a split's examples (text only)."""
    examples = split.examples
    contexts = [e.context for e in examples] if any(checkpoint.card.context) else None
    encoder = encoder or text_encoder_for(checkpoint)
    n = len(examples)
    order = sorted(range(n), key=lambda i: len(examples[i].text) + (len(contexts[i]) if contexts else 0))
    vectors = encoder.encode([examples[i].text for i in order], None if contexts is None else [contexts[i] for i in order])
    text = torch.empty_like(vectors)
    text[torch.tensor(order, dtype=torch.long)] = vectors
    data = loop.build_inputs(None, [e.emotion for e in examples], [e.sentiment for e in examples], text=text.cpu())
    return score_checkpoint(checkpoint, data)


def evaluate_clip_split(checkpoint: ck.Checkpoint, split, feats: dict, videos: dict | None = None,
                        in_dialogue: bool = True) -> dict:
    """Score a train.clips.ClipSplit (read with the checkpoint's context) with its cached clip
    features (train.features; R3D-18 vectors in `videos` when the checkpoint has video), each voice
    heard among its dialogue's clips, as the app heard those utterances in their video
    (`in_dialogue=False`: each clip heard alone, as a file of its own)."""
    from .retrain import inputs_for
    return score_checkpoint(checkpoint, inputs_for(split, feats, videos, text_encoder_for(checkpoint),
                                                   in_dialogue=in_dialogue))


def evaluate_clips(checkpoint_dir: str | Path, data: str | Path, clips: str | Path | None = None,
                   feature_cache: str | Path | None = None) -> dict:
    """Score a checkpoint on a labelled CSV with clips (any layout train.clips reads)."""
    import os
    import shutil
    import tempfile

    from core.encoders import VIDEO_WEIGHTS_ENV, VideoEncoder

    from . import clips as clipdata
    from .features import FeatureCache, clip_features
    from .video_features import video_features
    checkpoint = ck.load_checkpoint(checkpoint_dir)
    turns, ahead = checkpoint.card.context
    workdir = Path(tempfile.mkdtemp(prefix="evaluate-"))
    try:
        split = clipdata.load_clip_split(clipdata.resolve(data, clips, workdir), turns, None, ahead)
        found = {r.name: r.clip for r in split.rows if r.clip is not None}
        feats, stats = clip_features(found, FeatureCache(feature_cache), quiet=True)
        videos = None
        if "video" in checkpoint.card.trained_modalities:   # as the app: $WORKBENCH_VIDEO_WEIGHTS, else the card's
            video = checkpoint.card.video_encoder
            encoder = VideoEncoder(os.environ.get(VIDEO_WEIGHTS_ENV) or video.get("weights"), video.get("sha256"))
            videos, _ = video_features(found, encoder, feature_cache, quiet=True)
        result = evaluate_clip_split(checkpoint, split, feats, videos)
        if any(f.voice_in_dialogue is not None for f in feats.values()):
            alone = evaluate_clip_split(checkpoint, split, feats, videos, in_dialogue=False)
            result["voice_heard_alone"] = {**loop.headline(alone), "heads": alone["heads"]}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {**result, "split": split, "clips_failed": stats.failures, "missing": split.missing}


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
    p.add_argument("--csv", default=None, help="MELD-format CSV with Emotion and Sentiment labels "
                                               "(or the app's export zip or folder: scored with its clips)")
    p.add_argument("--clips", default=None, help="score with clips, with every modality the checkpoint uses: "
                                                 "the export zip or folder, the MELD release, or a clip folder")
    p.add_argument("--feature-cache", default=None, help="clip feature cache (default as train.train)")
    p.add_argument("--checkpoint", default=str(ck.DEFAULT_CHECKPOINT),
                   help="checkpoint folder (default: the shipped one)")
    p.add_argument("--out", default=None, help="folder for metrics.json, predictions.csv and the PNGs "
                                               "(default runs/eval-<csv name>)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.csv and not args.clips:
        p.error("give --csv CSV, or --clips DIR (the export zip or folder)")
    if args.clips or Path(args.csv).is_dir() or Path(args.csv).suffix.lower() == ".zip":
        return _main_clips(args)

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


def _main_clips(args) -> int:
    """--clips: score with every modality the checkpoint uses in the app."""
    from .clips import ClipDataError
    data = args.csv or args.clips
    try:
        result = evaluate_clips(args.checkpoint, data, args.clips if args.csv else None, args.feature_cache)
    except (ck.CheckpointError, ClipDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    split = result["split"]
    checkpoint = ck.read_card(args.checkpoint)
    head = {**summary(result, len(split.examples)), "csv": str(split.csv.name), "clips": str(data),
            "checkpoint": str(args.checkpoint), "model": checkpoint.name,
            "modalities_scored": sorted(result["heads"]) or ["text"],
            "heads": result["heads"],
            **({"voice_heard_alone": result["voice_heard_alone"]} if "voice_heard_alone" in result else {}),
            "clips_missing": len(result["missing"]),
            "clips_failed": len(result["clips_failed"])}
    out = Path(args.out) if args.out else Path("runs") / f"eval-{Path(str(data)).stem}"
    try:
        write_outputs(out, split, result, head)
    except OSError as err:
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 2
    print(f"checkpoint {args.checkpoint} ({checkpoint.name}); scored as the app predicts, with "
          f"{', '.join(checkpoint.trained_modalities) or 'all modalities'}: {len(split.examples)} rows, "
          f"{len(result['missing'])} without a clip, {len(result['clips_failed'])} unreadable clips")
    print(metrics.format_report("emotion", result["emotion"]))
    print(metrics.format_report("sentiment", result["sentiment"]))
    for m, h in result["heads"].items():
        print(f"{m} head alone: emotion accuracy {h['emotion_accuracy']} % on {h['rows']} rows")
    if "voice_heard_alone" in result:
        alone = result["voice_heard_alone"]
        print(f"each voice heard among its dialogue's clips, as the app hears a video (above); heard alone, "
              f"as one-utterance files: emotion accuracy {alone['emotion_accuracy']:.2f} %, weighted F1 "
              f"{alone['emotion_weighted_f1']:.2f}; voice head {alone['heads'].get('audio', {}).get('emotion_accuracy', '-')} %")
    print(json.dumps(head), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
