"""Retrain on clips: `python -m train.train --train CSV|ZIP|DIR [--clips DIR] ... --out DIR`.

1. Find the CSVs and their clips (train.clips: the workbench's export zip or folder, the MELD
   release layout, or a folder of clips); rows without a usable clip are listed by name and train
   their text only. With no --dev, a seeded share of train (--holdout) is held out as dev.
2. Face and audio features from the app's own code, cached by clip content (train.features);
   with R3D-18 Kinetics weights (--video-weights, $WORKBENCH_VIDEO_WEIGHTS, or torchvision's
   download online) the video branch's frozen R3D-18 vectors too (train.video_features).
3. Text vectors from the app's TextEncoder with the app's dialogue context (frozen by default;
   --tune-layers N tunes the top N layers as the text-only path does). With --init the
   checkpoint's tuned text-encoder tensors are applied first and saved again with the result.
4. The loop in train.fit_clips; dev emotion weighted F1 (then sentiment's) picks the best epoch
   (a tie keeps the later one); --patience epochs without a better one stop the run. The best
   epoch is saved (core.checkpoint) and dev is scored again from the saved files. The card records
   trained modalities (asked for and with data in train), data, clips, cache stats and metrics.

Defaults differ from the text-only path where they are left unset (train.clip_args).
A modality is trained only if asked for (--modalities; default text, face, audio, plus video
when its weights are given or the --init checkpoint has it) and present in some train row.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core import checkpoint as ck
from core.encoders import VIDEO_WEIGHTS_ENV, EncoderUnavailable, TextEncoder, VideoEncoder, apply_text_state
from core.labels import EMOTIONS, SENTIMENTS
from core.model import EmotionModel, ModelConfig, with_modalities

from . import clips as clipdata
from . import fit_clips as fit
from . import metrics
from .clip_args import fill_defaults
from .features import FeatureCache, clip_features
from .train import frozen_states, tune_setup
from .video_features import video_features

SHOWN = 20                   # names printed per problem list (all are counted; the card keeps 50)


def _fail(message: str) -> SystemExit:
    return SystemExit(f"error: {message}")


def _report(title: str, names: list[str]) -> None:
    """Problems are printed even with --quiet: a skipped clip is never silent."""
    if names:
        more = f" ... and {len(names) - SHOWN} more (the card lists the first {clipdata.MAX_LISTED})" \
            if len(names) > SHOWN else ""
        print(f"warning: {title}: {len(names)}: {', '.join(names[:SHOWN])}{more}", file=sys.stderr, flush=True)


def _texts(split: clipdata.ClipSplit) -> tuple[list[str], list[str]]:
    """Utterances and their contexts ("" = none: tokenised exactly as no context at all)."""
    return [e.text for e in split.examples], [e.context for e in split.examples]


def _videos(split, video_feats: dict | None) -> list | None:
    """Each row's R3D-18 vector (None: absent), or None when the video branch is off."""
    if video_feats is None:
        return None
    return [video_feats.get(r.name) if r.clip is not None else None for r in split.rows]


def _inputs(split, feats, encoder, first: int, tuned: bool, quiet: bool, video_feats: dict | None) -> fit.Inputs:
    rows = [feats.get(r.name) if r.clip is not None else None for r in split.rows]
    emo = [e.emotion for e in split.examples]
    sen = [e.sentiment for e in split.examples]
    videos = _videos(split, video_feats)
    if tuned:
        return fit.build_inputs(rows, emo, sen, states=frozen_states(encoder, split.examples, first, quiet=quiet),
                                videos=videos)
    texts, contexts = _texts(split)
    return fit.build_inputs(rows, emo, sen, text=encoder.encode(texts, contexts), videos=videos)


def asked_modalities(args, init) -> list[str]:
    """--modalities, else text, face, audio and (with R3D-18 weights given or in --init) video."""
    if args.modalities:
        return [m.strip() for m in args.modalities.split(",") if m.strip()]
    video = bool(args.video_weights or os.environ.get(VIDEO_WEIGHTS_ENV)) or \
        bool(init and "video" in init.card.trained_modalities)
    return ["text", "face", "audio"] + (["video"] if video else [])


def video_encoder_for(args, init) -> VideoEncoder:
    """R3D-18 with real weights: --video-weights, else $WORKBENCH_VIDEO_WEIGHTS, else the --init
    card's, else torchvision's download. With --init, they must be the weights it learned on."""
    card = init.card.video_encoder if init else {}
    try:
        return VideoEncoder(args.video_weights or os.environ.get(VIDEO_WEIGHTS_ENV) or card.get("weights"),
                            card.get("sha256"))
    except EncoderUnavailable as err:
        raise _fail(f"--modalities video: {err} (to train without it: --modalities text,face,audio)") from None


def _score(data: fit.Inputs, pred: dict, use: set[str]) -> dict:
    y_e, y_s = data.emotion.tolist(), data.sentiment.tolist()
    emotion, sentiment = metrics.report(y_e, pred["emotion"], EMOTIONS), metrics.report(y_s, pred["sentiment"], SENTIMENTS)
    return {"emotion_weighted_f1": emotion["weighted_f1"], "emotion_accuracy": emotion["accuracy"],
            "sentiment_weighted_f1": sentiment["weighted_f1"], "sentiment_accuracy": sentiment["accuracy"],
            "rows": len(data), "heads": fit.head_accuracy(data, pred, use),
            "emotion": emotion, "sentiment": sentiment}


def _headline(scores: dict) -> dict:
    return {k: scores[k] for k in ("emotion_weighted_f1", "emotion_accuracy", "sentiment_weighted_f1",
                                   "sentiment_accuracy")}


def _dev_source(args, workdir: Path) -> clipdata.Source:
    """--dev's clips: --dev-clips, else its own export, else a MELD release beside it, else --clips
    (a release folder gives its dev split; a plain folder is searched as it is)."""
    dev = Path(args.dev)
    if args.dev_clips or dev.is_dir() or dev.suffix.lower() == ".zip" or not args.clips:
        return clipdata.resolve(dev, args.dev_clips, workdir)
    if dev.is_file() and clipdata.release_dir(dev.parent, dev) is not None:
        return clipdata.resolve(dev, None, workdir)
    return clipdata.resolve(dev, args.clips, workdir)


def load_splits(args, workdir: Path, context: tuple[int, int], log):
    """Train and dev ClipSplits, as the command line names them (dev held out of train if absent)."""
    train_src = clipdata.resolve(args.train, args.clips, workdir / "train")
    train = clipdata.load_clip_split(train_src, context[0], args.limit, context[1])
    if args.dev:
        dev = clipdata.load_clip_split(_dev_source(args, workdir / "dev"), context[0], args.dev_limit, context[1])
        held = False
    else:
        train, dev = clipdata.holdout(train, args.holdout, args.seed)
        held = True
        log(f"no --dev: held out {len(dev.rows)} of {len(train.rows) + len(dev.rows)} train rows as dev "
            f"(seeded share {args.holdout:g}, seed {args.seed})")
    if not train.rows or not dev.rows:
        raise _fail(f"no labelled rows in {train.csv.name if not train.rows else dev.csv.name}")
    return train, dev, held


def main(args) -> dict:
    """Run the clip path end to end; returns the summary printed as the last stdout line."""
    fill_defaults(args)
    t_start = time.time()
    torch.set_num_threads(args.threads)
    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    workdir = Path(tempfile.mkdtemp(prefix="retrain-"))
    try:
        return _run(args, workdir, log, t_start)
    except (clipdata.ClipDataError, ck.CheckpointError) as err:
        raise _fail(str(err)) from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(args, workdir: Path, log, t_start: float) -> dict:
    from torch.utils.tensorboard import SummaryWriter

    init = ck.load_checkpoint(args.init) if args.init else None
    asked = asked_modalities(args, init)
    bad = [m for m in asked if m not in fit.TRAINABLE]
    if bad or not asked:
        raise _fail(f"--modalities: {', '.join(bad) or 'none given'}: choose from {', '.join(fit.TRAINABLE)} "
                    "(video needs R3D-18 Kinetics weights: --video-weights FILE.safetensors)")
    video_encoder = video_encoder_for(args, init) if "video" in asked else None
    if getattr(args, "ema", 0):
        log("note: --ema is not used when training on clips")
    text_card = dict(init.card.text_encoder) if init else {}
    own = init.card.context if init else (0, 0)
    context = (own[0] if args.context_turns is None else args.context_turns,
               own[1] if args.context_ahead is None else args.context_ahead)
    if init and context != own:
        log(f"note: context {context} (previous, following) differs from the --init checkpoint's {own}")
    train, dev, held = load_splits(args, workdir, context, log)
    log(f"train: {len(train.rows)} rows ({train.layout}, clips in {train.clip_dir}), dev: {len(dev.rows)} rows; "
        f"context: {context[0]} previous, {context[1]} following utterances")
    _report("train: missing clips (these rows train their text only)", train.missing)
    _report("dev: missing clips (these rows are scored on their text only)", dev.missing)

    # -- face and audio features, cached by clip content
    cache = FeatureCache(args.feature_cache)
    feats, stats = {}, []
    for tag, split in (("train", train), ("dev", dev)):
        feats[tag], st = clip_features({r.name: r.clip for r in split.rows if r.clip is not None}, cache,
                                       args.jobs, args.quiet)
        stats.append(st)
        _report(f"{tag}: corrupt or unreadable clips (their rows: text only)",
                [f"{n} ({why})" for n, why in st.failures.items()])
    video_feats = {"train": None, "dev": None}
    if video_encoder is not None:
        for tag, split in (("train", train), ("dev", dev)):
            video_feats[tag], st = video_features({r.name: r.clip for r in split.rows if r.clip is not None},
                                                  video_encoder, args.feature_cache, args.quiet)
            log(f"{tag}: R3D-18 video features: {st.from_cache} from the cache, {st.extracted} extracted "
                f"({st.clips_per_second:.2f} clips/s)")
            _report(f"{tag}: clips R3D-18 could not read (their rows: no video)",
                    [f"{n} ({why})" for n, why in st.failures.items()])
    extracted, secs = sum(s.extracted for s in stats), sum(s.seconds for s in stats)
    cache_info = {**stats[0].describe(cache), "dev": stats[1].describe(cache)}
    log(f"features: {sum(s.from_cache for s in stats)} clips from the cache, {extracted} extracted "
        f"({extracted / secs if extracted and secs else 0:.2f} clips/s), {sum(s.failed for s in stats)} failed; "
        f"cache {cache.root}")

    # -- text: the app's encoder (with --init's tuned tensors), frozen or with its top layers tuned
    name = text_card.get("name", args.text_model)
    encoder = TextEncoder(name)
    if init:
        apply_text_state(encoder, init.text_state)
    first, tuned, trainable, tuned_layers, attn_layers = tune_setup(encoder, args.tune_layers, args.tune_attention)
    t0 = time.time()
    train_in = _inputs(train, feats["train"], encoder, first, bool(trainable), args.quiet, video_feats["train"])
    dev_in = _inputs(dev, feats["dev"], encoder, first, bool(trainable), args.quiet, video_feats["dev"])
    text_side = fit.TextSide(encoder, tuned if trainable else None)
    log(f"text encoded in {time.time() - t0:.1f} s ({'top layers ' + str(tuned_layers) + ' tuned' if trainable else 'frozen'})")

    # -- which modalities learn: asked for, in the model, and with data in train
    modalities = ModelConfig.modalities + (("video",) if video_encoder is not None else ())
    if init is None:
        model = EmotionModel(ModelConfig(text_dim=encoder.dim, modalities=modalities))
    elif video_encoder is not None and "video" not in init.model.config.modalities:
        model = with_modalities(init.model, init.model.config.modalities + ("video",))
        log("--init checkpoint has no video branch: added one (it starts out changing nothing)")
    else:
        model = init.model
    use = {m for m in asked if m in model.config.modalities}
    counts = {m: int(train_in.present(m).sum()) for m in fit.TRAINABLE}
    use = {m for m in use if counts[m] > 0}
    if not use:
        raise _fail(f"nothing to train: none of {asked} has data in train (rows with a face {counts['face']}, "
                    f"with voiced audio {counts['audio']})")
    keep = [i for i in range(len(train_in)) if any(bool(train_in.present(m)[i]) for m in use)]
    if len(keep) < len(train_in):
        log(f"{len(train_in) - len(keep)} train rows have none of {sorted(use)} present: left out of training")
    if "video" in asked and "video" not in use:
        log("warning: no train clip has a picture R3D-18 could read: the video branch is not trained")
    fit_in = train_in.subset(keep)
    trained = [m for m in fit.TRAINABLE if m in use]
    log(f"training {trained} on {len(fit_in)} rows (face in {counts['face']}, voiced audio in {counts['audio']}, "
        f"video in {counts['video']}); "
        f"epochs <= {args.epochs}, patience {args.patience}, lr {args.lr:g}")

    # -- the loop: best epoch by dev emotion weighted F1, early stopping
    y_e, y_s = [e.emotion for e in train.examples], [e.sentiment for e in train.examples]
    loss_fn = fit.Loss(y_e, y_s, args.class_weight_power, args.label_smoothing, args.aux_weight)
    total = fit.steps_for(len(fit_in), args.batch_size, args.epochs)
    optimizer, schedule = fit.make_optimizer(model, trainable, args.lr, args.encoder_lr, args.weight_decay,
                                             total, args.warmup)
    tb_dir = Path(args.tb) if args.tb else Path("runs") / (Path(args.out).resolve().name or "model")
    writer = SummaryWriter(str(tb_dir))
    writer.add_text("args", json.dumps(vars(args), indent=2, default=str))
    rng = np.random.default_rng(args.seed)
    best, history, epoch_seconds, step = {"epoch": 0, "key": (-1.0, -1.0)}, [], [], [0]

    def on_step(loss: float, fused: float) -> None:
        step[0] += 1
        writer.add_scalar("train/loss", loss, step[0])
        writer.add_scalar("train/loss_fused", fused, step[0])

    for epoch in range(1, args.epochs + 1):
        batches = fit.shuffled_batches(len(fit_in), args.batch_size, rng)
        loss, seconds = fit.timed_epoch(model, fit_in, text_side, use, loss_fn, optimizer, schedule, batches,
                                        desc=f"epoch {epoch}/{args.epochs}", quiet=args.quiet, on_step=on_step)
        epoch_seconds.append(seconds)
        scores = _score(dev_in, fit.predict(model, dev_in, text_side, use), use)
        history.append({"epoch": epoch, **_headline(scores), "heads": scores["heads"], "loss": round(loss, 4),
                        "seconds": round(seconds, 2)})
        for key, value in _headline(scores).items():
            writer.add_scalar(f"dev/{key}", value, epoch)
        for m, h in scores["heads"].items():
            if h["emotion_accuracy"] is not None:
                writer.add_scalar(f"dev_head/{m}_emotion_accuracy", h["emotion_accuracy"], epoch)
        log(f"epoch {epoch}: loss {loss:.3f}, dev emotion wF1 {scores['emotion_weighted_f1']:.2f} "
            f"acc {scores['emotion_accuracy']:.2f} | sentiment wF1 {scores['sentiment_weighted_f1']:.2f} "
            f"({seconds:.2f} s on cached features)")
        key = (scores["emotion_weighted_f1"], scores["sentiment_weighted_f1"])
        if key >= best["key"]:               # a tie keeps the later, more trained epoch (small dev sets)
            best = {"epoch": epoch, "key": key, "scores": scores, "model": copy.deepcopy(model.state_dict()),
                    "tuned": {n: p.detach().clone() for n, p in trainable.items()}}
        elif epoch - best["epoch"] >= args.patience:
            log(f"stopping: no better dev emotion wF1 for {args.patience} epochs")
            break

    # -- save the best epoch, then score dev from the saved files
    model.load_state_dict(best["model"])
    with torch.no_grad():
        for n, p in trainable.items():
            p.copy_(best["tuned"][n])
    text_state = {**(init.text_state if init else {}), **{n: p.detach() for n, p in trainable.items()}}
    out_dir = Path(args.out)
    card = _card(args, init, text_card, encoder, context, trained, tuned_layers, attn_layers, text_state,
                 train, dev, held, counts, len(fit_in), cache_info, stats, history, best["epoch"])
    if "video" in model.config.modalities:
        card.video_encoder = video_encoder.describe() if video_encoder is not None else dict(init.card.video_encoder)
    card.data["training"].update({"epoch_seconds_mean": round(float(np.mean(epoch_seconds)), 3),
                                  "steps": step[0], "train_seconds": round(sum(epoch_seconds), 1)})
    ck.save_checkpoint(out_dir, model, card, text_state)
    if args.no_final_eval:
        final = {**best["scores"], "note": "scored during training (before the save/load round trip)"}
    else:
        final = evaluate_split(ck.load_checkpoint(out_dir), dev, feats["dev"], video_feats["dev"])
    card.metrics["dev"] = {k: v for k, v in final.items()}
    card.data["training"]["total_seconds"] = round(time.time() - t_start)
    ck.save_checkpoint(out_dir, model, card, text_state)
    for key, value in _headline(final).items():
        writer.add_scalar(f"dev_saved/{key}", value, best["epoch"])
    writer.close()
    per_epoch = float(np.mean(epoch_seconds))
    log(f"best epoch {best['epoch']}; saved {out_dir}; dev (saved files): emotion wF1 "
        f"{final['emotion_weighted_f1']:.2f} acc {final['emotion_accuracy']:.2f}, sentiment wF1 "
        f"{final['sentiment_weighted_f1']:.2f}; {per_epoch:.2f} s per epoch on cached features; "
        f"feature extraction {extracted / secs if extracted and secs else 0:.2f} clips/s")
    summary = {**_headline(final), "best_epoch": best["epoch"], "epochs_run": len(history),
               "trained_modalities": trained, "train_rows": len(fit_in), "dev_rows": len(dev.rows),
               "dev_held_out": held, "clips_missing": len(train.missing) + len(dev.missing),
               "clips_corrupt": sum(s.failed for s in stats), "extracted": extracted,
               "from_cache": sum(s.from_cache for s in stats),
               "clips_per_second": round(extracted / secs, 2) if extracted and secs else 0.0,
               "seconds_per_epoch": round(per_epoch, 3), "total_seconds": round(time.time() - t_start),
               "out": str(out_dir)}
    print(json.dumps(summary))
    return summary


def _card(args, init, text_card, encoder, context, trained, tuned_layers, attn_layers, text_state,
          train, dev, held, counts, fit_rows, cache_info, stats, history, best_epoch) -> ck.ModelCard:
    text = dict(text_card) if text_card else {
        "name": args.text_model, "dim": encoder.dim, "max_tokens": encoder.max_tokens,
        "pooling": "mean over the utterance's own tokens (segment 0)",
        "context": "previous utterances of the same dialogue, most recent first, joined by ' | ', "
                   "as the second segment; no speaker names"}
    text["context_turns"], text["context_ahead"] = context
    text["tuned"] = bool(text_state)
    if tuned_layers or attn_layers:
        text["tuned_layers"] = sorted(set(text.get("tuned_layers", [])) | set(tuned_layers))
        text["tuned_attention_layers"] = sorted(set(text.get("tuned_attention_layers", [])) | set(attn_layers))
    failures = {tag: [f"{n}: {why}" for n, why in st.failures.items()][:clipdata.MAX_LISTED]
                for tag, st in (("train", stats[0]), ("dev", stats[1]))}
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "tb", "quiet", "no_final_eval")}
    return ck.ModelCard(
        name=args.name or f"clips-{'-'.join(trained)}-{Path(args.out).resolve().name}",
        text_encoder=text,
        trained_modalities=trained,
        data={"train": {**train.describe(), "clips_corrupt": stats[0].failed, "corrupt": failures["train"],
                        "rows_trained": fit_rows, "rows_with_face": counts["face"],
                        "rows_with_voiced_audio": counts["audio"], "rows_with_video": counts["video"]},
              "dev": {**dev.describe(), "clips_corrupt": stats[1].failed, "corrupt": failures["dev"],
                      "held_out_from_train": held},
              "feature_cache": cache_info,
              "init": {"checkpoint": str(args.init), "name": init.card.name,
                       "trained_modalities": list(init.card.trained_modalities)} if init else None,
              "note": "rows whose clip is missing or unreadable trained their text only",
              "training": {"args": settings, "torch": torch.__version__, "threads": args.threads,
                           "machine": platform.machine()}},
        metrics={"dev_during_training": history, "best_epoch": best_epoch},
        notes=(f"Trained on utterance clips: {', '.join(trained)}. Pretrained encoders frozen"
               f"{' except text layers ' + str(text.get('tuned_layers')) if text_state else ''}; "
               "face features from the FER2013 net, audio from the trained Conv1D over log-mels"
               + (", video from frozen R3D-18 (Kinetics-400)." if "video" in trained else ".")
               + (f" Fine-tuned from {init.card.name}." if init else "")))


def evaluate_split(checkpoint: ck.Checkpoint, split: clipdata.ClipSplit, feats: dict,
                   video_feats: dict | None = None) -> dict:
    """Score a split (read with the checkpoint's context) through a loaded checkpoint as the app
    would: its text encoder, its trained modalities (video only where `video_feats` has them)."""
    from .evaluate import text_encoder_for
    texts, contexts = _texts(split)
    data = fit.build_inputs([feats.get(r.name) if r.clip is not None else None for r in split.rows],
                            [e.emotion for e in split.examples], [e.sentiment for e in split.examples],
                            text=text_encoder_for(checkpoint).encode(texts, contexts),
                            videos=_videos(split, video_feats))
    use = set(checkpoint.card.trained_modalities)
    pred = fit.predict(checkpoint.model, data, fit.TextSide(), use)
    return {**_score(data, pred, use), "predicted_emotion": [EMOTIONS[i] for i in pred["emotion"]],
            "head_emotion": {m: [EMOTIONS[i] for i in pred["heads"][m]] for m in sorted(use) if m in pred["heads"]}}


def evaluate_clips(checkpoint_dir: str | Path, data: str | Path, clips: str | Path | None = None,
                   feature_cache: str | Path | None = None) -> dict:
    """Score a checkpoint on a labelled CSV with clips (any layout train.clips reads)."""
    checkpoint = ck.load_checkpoint(checkpoint_dir)
    turns, ahead = checkpoint.card.context
    workdir = Path(tempfile.mkdtemp(prefix="retrain-eval-"))
    try:
        split = clipdata.load_clip_split(clipdata.resolve(data, clips, workdir), turns, None, ahead)
        clips = {r.name: r.clip for r in split.rows if r.clip is not None}
        feats, stats = clip_features(clips, FeatureCache(feature_cache), quiet=True)
        videos = None
        if "video" in checkpoint.card.trained_modalities:     # as the app: the card's weights, or $WORKBENCH_VIDEO_WEIGHTS
            video = checkpoint.card.video_encoder
            encoder = VideoEncoder(os.environ.get(VIDEO_WEIGHTS_ENV) or video.get("weights"), video.get("sha256"))
            videos, _ = video_features(clips, encoder, feature_cache, quiet=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {**evaluate_split(checkpoint, split, feats, videos), "clips_failed": stats.failures,
            "missing": split.missing}
