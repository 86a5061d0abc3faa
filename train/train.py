"""Train the emotion/sentiment model on a MELD-format CSV, text only (no clips needed).

    python -m train.train --train ../shared/data/meld/train_sent_emo.csv \\
                          --dev ../shared/data/meld/dev_sent_emo.csv --out assets/model

What it does, top to bottom:
1. Read both CSVs (core.meld) into examples: each utterance with the previous `--context-turns`
   utterances of its dialogue as a second segment (core.text.build_context, the app's own
   function; no speaker names, since Whisper gives none).
   With clips (--clips DIR, or --train naming the workbench's export zip or folder): the same
   rows with their face, voice and video features (train.retrain).
2. Tokenise once with the app's TextEncoder. The encoder's bottom layers stay frozen, so their
   output is computed once per example and kept in memory (train.text_layers); each step only
   runs the top `--tune-layers` layers, the same mean pooling as the app, and the fusion model.
   With --lora-rank r, every layer below those learns a low-rank update (core.lora) instead, so
   all six layers run each step; the checkpoint stores only the updates (about 1.3 MB at r 16),
   merged into the packaged encoder's weights when the app loads it.
3. The one loop (train.loop.fit): AdamW with a higher learning rate for the fusion model than
   for the encoder layers, warm-up then linear decay, class-weighted cross-entropy on emotion and
   sentiment (fused heads and each trained modality's own heads), optional weight average
   (--ema); dev scored after every epoch, the best epoch by dev emotion weighted F1 kept (with
   --patience on clips). Clip runs on small data with no --dev hold nothing out and keep the last
   epoch of a fixed schedule instead (train.clip_args.SMALL).
4. Save a checkpoint (core.checkpoint) holding the fusion model and only the tuned encoder
   layers, then score dev again through the saved files exactly as the app loads them
   (train.evaluate); the card (train.card) records those metrics.

With --recipe NAME (train.recipe) one command runs a recipe's stages, each from the checkpoint
the one before kept: `--recipe minilm-top2-lora16` is the shipped text model's two stages.

Seeded and single-process: the same command on the same machine gives the same checkpoint.
TensorBoard logs go to --tb (default runs/<out folder name>), and so does the loop's state after
every epoch (resume.pt, train.resume): a stopped run continues with the same command and
--resume, and ends with the weights it would have had without stopping.

"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core import checkpoint as ck
from core import lora
from core.text import DEFAULT_TEXT_MODEL, TextEncoder, apply_text_state
from core.model import EmotionModel, ModelConfig, with_modalities, with_own_sentiment

from . import card as cards
from . import clips as clipdata
from . import loop
from . import resume as resuming
from . import recipe, retrain
from . import ridge
from .clip_args import CLIP_OPTIONS, UNSET_IN_CLIP_MODE, add_clip_options, fill_defaults, small_defaults
from .data import load_text_split
from .evaluate import evaluate_clip_split, evaluate_split
from .recipe import RECIPES
from .text_layers import stored_frozen_states, tune_setup


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train", required=True,
                   help="MELD-format CSV to fit on (with clips: also the workbench's export zip or folder)")
    p.add_argument("--dev", default=None, help="MELD-format CSV to choose the epoch on (required without clips)")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--init", default=None, help="start from this checkpoint folder")
    p.add_argument("--text-model", default=DEFAULT_TEXT_MODEL, help="text encoder (packaged alias or HF name)")
    p.add_argument("--context-turns", type=int, default=3, help="previous utterances read as context (0: none)")
    p.add_argument("--context-ahead", type=int, default=0,
                   help="following utterances read as context too (the app has the whole video)")
    p.add_argument("--ema", type=float, default=0.0,
                   help="score and keep an exponential moving average of the weights with this decay (0: off)")
    p.add_argument("--tune-layers", type=int, default=2, help="top encoder layers to fine-tune")
    p.add_argument("--tune-attention", type=int, default=0,
                   help="layers below those whose self-attention block is fine-tuned too")
    p.add_argument("--lora-rank", type=int, default=0,
                   help="LoRA rank on every encoder layer below the tuned ones (q, k, v, out, feed-forward; "
                        "0: off); merged into the weights at load")
    p.add_argument("--lora-layers", type=int, default=None,
                   help="LoRA only on this many layers right below the tuned ones (default: all of them); "
                        "the layers under those stay frozen and are computed once")
    p.add_argument("--lora-alpha", type=float, default=None, help="LoRA scale numerator (default: 2 x rank)")
    p.add_argument("--lora-dropout", type=float, default=0.1, help="dropout on the LoRA branch's input")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the fusion model")
    p.add_argument("--encoder-lr", type=float, default=1e-4, help="learning rate of the tuned encoder layers")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=float, default=0.06, help="share of the steps spent warming up")
    p.add_argument("--class-weight-power", type=float, default=0.5,
                   help="class weight = (1/frequency)^power (0: none, 1: inverse frequency)")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--aux-weight", type=float, default=0.5, help="loss weight of the text branch's own heads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="where text-only training runs (default: cuda when there is a GPU; clip runs use the CPU)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N train examples")
    p.add_argument("--dev-limit", type=int, default=None, help="use only the first N dev examples")
    p.add_argument("--tb", default=None, help="TensorBoard folder (default runs/<out folder name>)")
    p.add_argument("--name", default=None, help="checkpoint name in its card")
    p.add_argument("--no-final-eval", action="store_true", help="skip the dev check of the saved files")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped run from the state it saved after its last epoch "
                        "(<tb folder>/resume.pt; same arguments)")
    p.add_argument("--keep-states", action="store_true",
                   help="keep the frozen layers' output in the run folder (--tb), so that --resume reads it "
                        "instead of computing it again")
    p.add_argument("--states-dir", default=None,
                   help="where --keep-states keeps them (default: the --tb folder; a recipe gives its stages one)")
    p.add_argument("--save-every", type=int, default=0,
                   help="also save the training state every N steps inside an epoch (0: after each epoch only)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this epoch as a stopped run would (its state kept for --resume)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--recipe", default=None, choices=sorted(RECIPES),
                   help="train in the named recipe's stages, each from the one before (train.recipe); "
                        "its stages set the encoder options themselves")
    add_clip_options(p)
    return p


def clip_mode(args: argparse.Namespace) -> bool:
    """Clips were asked for: --clips/--dev-clips, or --train names an export zip or folder."""
    train = Path(args.train)
    return bool(args.clips or args.dev_clips) or train.is_dir() or train.suffix.lower() == ".zip"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Text path: the options as before (clip-only ones removed). Clip path: its own defaults
    for the options left unset (train.retrain.fill_defaults)."""
    p = build_parser()
    args = p.parse_args(argv)
    if clip_mode(args):
        p.set_defaults(**UNSET_IN_CLIP_MODE)
        return p.parse_args(argv)
    if not args.dev:
        p.error("--dev is required when training on text only (or give --clips DIR to train on clips)")
    for name in CLIP_OPTIONS:
        delattr(args, name)
    return args




# ---------------------------------------------------------------- main, top to bottom

def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    clips = hasattr(args, "clips")
    if args.recipe:
        if clips:
            raise SystemExit("error: --recipe trains the words on MELD-format CSVs (no clips)")
        return recipe.run(build_parser(), args, main)
    if clips:
        fill_defaults(args)
    torch.set_num_threads(args.threads)
    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    workdir = Path(tempfile.mkdtemp(prefix="train-"))
    try:
        return run(args, clips, workdir, log)
    except (clipdata.ClipDataError, ck.CheckpointError, resuming.ResumeError) as err:
        raise retrain.fail(str(err)) from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args, clips: bool, workdir: Path, log) -> dict:
    from torch.utils.tensorboard import SummaryWriter
    t_start = time.time()
    out_dir = Path(args.out)
    init = ck.load_checkpoint(args.init) if args.init else None

    # -- 1. data: the rows, their dialogue context and (with clips) their face, voice and video features
    if clips:
        asked = retrain.asked_modalities(args, init)
        bad = [m for m in asked if m not in loop.TRAINABLE]
        if bad or not asked:
            raise retrain.fail(f"--modalities: {', '.join(bad) or 'none given'}: choose from "
                               f"{', '.join(loop.TRAINABLE)} (video needs R3D-18 Kinetics weights: "
                               "--video-weights FILE.safetensors)")
        video_encoder = retrain.video_encoder_for(args, init) if "video" in asked else None
        own = init.card.context if init else (0, 0)
        context = (own[0] if args.context_turns is None else args.context_turns,
                   own[1] if args.context_ahead is None else args.context_ahead)
        if init and context != own:
            log(f"note: context {context} (previous, following) differs from the --init checkpoint's {own}")
        data = retrain.load(args, workdir, context, video_encoder, log)
        train, dev = data.train, data.dev
    else:
        asked, video_encoder, data = ["text"], None, None
        context = (args.context_turns, args.context_ahead)
        train = load_text_split(args.train, args.context_turns, args.limit, args.context_ahead)
        dev = load_text_split(args.dev, args.context_turns, args.dev_limit, args.context_ahead)
        if not train.examples or not dev.examples:
            raise SystemExit(f"no labelled rows in {args.train if not train.examples else args.dev}")
        log(f"train: {len(train.examples)} examples ({len(train.skipped)} rows skipped), "
            f"dev: {len(dev.examples)} examples; context: {args.context_turns} previous utterances")
    keep = "dev" if dev is not None else "last"

    # -- 2. the app's text encoder (with --init's tuned tensors), its top layers tuned or all frozen
    text_card = dict(init.card.text_encoder) if init else {}
    encoder = TextEncoder(text_card.get("name", args.text_model), precision="fp32")   # training: exact
    if init:
        apply_text_state(encoder, init.text_state)
    first, tuned, trainable, tuned_layers, attention_layers = tune_setup(encoder, args.tune_layers,
                                                                         args.tune_attention)
    lora_layers, lora_scale = [], 1.0
    if getattr(args, "lora_rank", 0):
        alpha = args.lora_alpha if args.lora_alpha is not None else 2.0 * args.lora_rank
        count = first if args.lora_layers is None else max(0, min(args.lora_layers, first))
        lora_layers, lora_scale = list(range(first - count, first)), alpha / args.lora_rank
        trainable = {**lora.add_lora(encoder.bert.encoder.layer, lora_layers, args.lora_rank, alpha,
                                     args.lora_dropout), **trainable}
        first = first - count
        tuned = encoder.bert.encoder.layer[first:]
    device = _device(args, clips)
    encoder.to(device)                    # its parameters stay the same objects (trainable's)
    log(f"fine-tuning {sum(p.numel() for p in trainable.values()) / 1e6:.2f} M encoder parameters "
        f"(layers {tuned_layers}; attention only in {attention_layers}; LoRA in {lora_layers})"
        if trainable else "text encoder frozen")

    # -- 3. inputs: the frozen bottom once (or frozen vectors), face/voice/video from the feature cache
    t0 = time.time()
    bottom = first if trainable else None
    if clips:
        train_in = retrain.inputs_for(train, data.feats["train"], data.videos["train"], encoder, bottom, args.quiet)
        train_in, source = retrain.with_voices_alone(train_in, train, data.feats["train"])
        if len(source) > len(train.rows):
            log(f"{len(source) - len(train.rows)} train rows also with their voice heard alone (each voice heard "
                "among its dialogue's clips, as the app hears a video, and alone, as a one-utterance file)")
        dev_in = retrain.inputs_for(dev, data.feats["dev"], data.videos["dev"], encoder, bottom, args.quiet) \
            if dev is not None else None
    else:
        keep_dir = (Path(args.states_dir) if args.states_dir else Path(args.tb) if args.tb
                    else Path("runs") / (out_dir.resolve().name or "model")) if args.keep_states else None

        def text_inputs(split):
            ex = split.examples
            return loop.build_inputs(None, [e.emotion for e in ex], [e.sentiment for e in ex],
                                     states=stored_frozen_states(encoder, ex, first, keep_dir, args.quiet, log)) if trainable \
                else loop.build_inputs(None, [e.emotion for e in ex], [e.sentiment for e in ex],
                                       text=encoder.encode([e.text for e in ex], [e.context for e in ex]))
        train_in, dev_in = text_inputs(train).to(device), text_inputs(dev).to(device)
        source = list(range(len(train_in)))
    t_cache = time.time() - t0
    text_side = loop.TextSide(encoder, tuned if trainable else None)
    log(f"text encoded in {t_cache:.1f} s")

    # -- 4. the model, and which modalities learn: asked for, in the model, with data in train
    modalities = ModelConfig.modalities + (("video",) if video_encoder is not None else ())
    if init is None:
        model = EmotionModel(ModelConfig(text_dim=encoder.dim, modalities=modalities))
    elif video_encoder is not None and "video" not in init.model.config.modalities:
        model = with_modalities(init.model, init.model.config.modalities + ("video",))
        log("--init checkpoint has no video branch: added one (it starts out changing nothing)")
    else:
        model = init.model
    model.to(device)
    n_rows = len(train.examples)        # train_in may hold a second copy of voiced rows (with_voices_alone)
    counts = {m: int(train_in.present(m)[:n_rows].sum()) for m in loop.TRAINABLE}
    use = {m for m in asked if m in model.config.modalities and counts[m] > 0}
    if not use:
        raise retrain.fail(f"nothing to train: none of {asked} has data in train (rows with a face "
                           f"{counts['face']}, with voiced audio {counts['audio']})")
    rows = [i for i in range(len(train_in)) if any(bool(train_in.present(m)[i]) for m in use)]
    if len(rows) < len(train_in):
        log(f"{len(train_in) - len(rows)} train rows have none of {sorted(use)} present: left out of training")
    if "video" in asked and "video" not in use:
        log("warning: no train clip has a picture R3D-18 could read: the video branch is not trained")
    fit_in = train_in.subset(rows) if len(rows) < len(train_in) else train_in
    fit_rows = len({source[i] for i in rows})
    trained = [m for m in loop.TRAINABLE if m in use]
    if switched := with_own_sentiment(model, use):
        log(f"{switched}: sentiment from its own head again (not its emotion's polarity), trained on the clips' labels")
    if keep == "last":
        small_defaults(args)                      # a fixed schedule with stronger regularisation
    log(f"training {trained} on {fit_rows} rows (face in {counts['face']}, voiced audio in {counts['audio']}, "
        f"video in {counts['video']}); {'best dev epoch of <= ' if keep == 'dev' else 'fixed schedule: '}"
        f"{args.epochs} epochs, lr {args.lr:g}, weight decay {args.weight_decay:g}, ema {args.ema:g}")

    # -- 5. the loop (a new voice branch first takes its feature scaling from the train rows)
    if loop.fit_standardizers(model, fit_in):
        log("voice features standardised with the train rows' statistics")
    fixed = None
    if keep == "last" and init is None and "audio" in use:     # tens of rows: no gradient steps for the voice
        model, fixed = ridge.late_voice(model, fit_in.audio, fit_in.audio_ok, fit_in.emotion, fit_in.sentiment,
                                        [train.examples[source[i]].dialogue_id for i in rows],
                                        [source[i] for i in rows])
        log(f"voice head fitted in closed form, fused late and kept fixed (train.ridge.late_voice): {fixed}")
    y_e = [int(y) for y in fit_in.emotion]
    y_s = [int(y) for y in fit_in.sentiment]
    loss_fn = loop.Loss(y_e, y_s, args.class_weight_power, args.label_smoothing, args.aux_weight).to(device)
    total = loop.steps_for(len(fit_in), args.batch_size, args.epochs)
    optimizer, schedule = loop.make_optimizer(model, trainable, args.lr, args.encoder_lr, args.weight_decay,
                                              total, args.warmup)
    tb_dir = Path(args.tb) if args.tb else Path("runs") / (out_dir.resolve().name or "model")
    writer = SummaryWriter(str(tb_dir))
    writer.add_text("args", json.dumps(vars(args), indent=2, default=str))
    state_file = tb_dir / resuming.STATE_FILE
    run_args = {k: v for k, v in vars(args).items() if k not in resuming.FREE_ARGS}
    if args.resume:
        resuming.check_args(resuming.saved_args(state_file), json.loads(json.dumps(run_args, default=str)))
    opts = loop.FitOptions(args.epochs, args.batch_size, keep, getattr(args, "patience", None), args.ema,
                           args.seed, args.quiet, str(state_file), args.resume, args.stop_after, run_args,
                           save_every=args.save_every)
    t_train = time.time()
    result = loop.fit(model, trainable, fit_in, dev_in, text_side, use, loss_fn, optimizer, schedule, opts,
                      log, writer)
    train_seconds = time.time() - t_train

    # -- 6. save the kept weights (with --init: its tuned text tensors plus this run's), then the card
    text_state = lora.combine(init.text_state if init else {}, {k: v.cpu() for k, v in lora.export(trainable, lora_scale).items()})
    card = cards.build_card(
        args, name=cards.default_name(args, trained, clips, encoder.name),
        text=cards.text_section(text_card, args.text_model, encoder, context, text_state, tuned_layers,
                                attention_layers),
        trained=sorted(set(trained) | (set(init.card.trained_modalities) & set(model.config.modalities)
                                       if init else set()), key=loop.TRAINABLE.index),
        model=model, data=_data_section(train, dev, data, counts, fit_rows, clips, len(fit_in) - fit_rows),
        history=result.history, best_epoch=result.best_epoch, keep=keep, init=init,
        notes=_notes(trained, clips, init, keep),
        extra_training={"train_seconds": round(train_seconds), "cache_seconds": round(t_cache),
                        "steps": result.steps,
                        "epoch_seconds_mean": round(float(np.mean(result.epoch_seconds)), 3),
                        **({"voice_head": {"how": "ridge in closed form (train.ridge.late_voice), fused late, "
                                                  "not trained by the loop", **fixed}} if fixed else {})})
    if lora_layers:
        card.text_encoder["lora"] = {
            "rank": lora.rank_of(text_state), "alpha": args.lora_alpha or 2.0 * args.lora_rank,
            "layers": lora_layers, "targets": list(lora.targets_for(encoder.bert.encoder.layer[0])),
            "how": "low-rank updates (core.lora) stored with their scale folded in; merged into the "
                   "packaged encoder's weights at load (W += B @ A), so inference costs the plain encoder's"}
    if "video" in model.config.modalities:
        card.video_encoder = video_encoder.describe() if video_encoder is not None else dict(init.card.video_encoder)
    ck.save_checkpoint(out_dir, model, card, text_state)

    # -- 7. the truth: dev scored from the saved files, through the app's code path (train.evaluate)
    if dev is None:
        final = None
    elif args.no_final_eval:
        final = {**result.scores, "note": "scored during training (before the save/load round trip)"}
    elif clips:
        final = evaluate_clip_split(ck.load_checkpoint(out_dir), dev, data.feats["dev"], data.videos["dev"])
    else:
        final = evaluate_split(dev, ck.load_checkpoint(out_dir))
    if final is not None:
        card.metrics["dev"] = {**loop.headline(final), "rows": len(dev.examples),
                               **{k: final[k] for k in ("emotion", "sentiment", "heads") if k in final}}
    card.data["training"]["total_seconds"] = round(time.time() - t_start)
    ck.save_checkpoint(out_dir, model, card, text_state)
    writer.close()
    head = loop.headline(final) if final is not None else {}
    log(f"kept epoch {result.best_epoch} ({'best on dev' if keep == 'dev' else 'fixed schedule'}); saved {out_dir}"
        + ("; dev (saved files): " + ", ".join(f"{k} {v:.2f}" for k, v in head.items()) if head else "")
        + f"; training {train_seconds:.0f} s, total {time.time() - t_start:.0f} s")
    summary = {**head, "best_epoch": result.best_epoch, "epochs_run": len(result.history), "kept": keep,
               "trained_modalities": trained, "train_rows": fit_rows,
               "dev_rows": len(dev.examples) if dev is not None else 0,
               "train_seconds": round(train_seconds), "total_seconds": round(time.time() - t_start),
               "seconds_per_epoch": round(float(np.mean(result.epoch_seconds)), 3), "out": str(out_dir)}
    if clips:
        st = data.stats
        extracted, secs = sum(s.extracted for s in st), sum(s.seconds for s in st)
        summary.update({"dev_held_out": data.held,
                        "clips_missing": len(train.missing) + (len(dev.missing) if dev is not None else 0),
                        "clips_corrupt": sum(s.failed for s in st), "extracted": extracted,
                        "from_cache": sum(s.from_cache for s in st),
                        "clips_per_second": round(extracted / secs, 2) if extracted and secs else 0.0})
    print(json.dumps(summary))
    return summary


def _device(args, clips: bool) -> torch.device:
    """Where the words train: --device, else the GPU when there is one; clip runs stay on the CPU."""
    if clips:
        return torch.device("cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: no GPU is visible here")
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _data_section(train, dev, data, counts: dict, fit_rows: int, clips: bool, voices_alone: int = 0) -> dict:
    if not clips:
        return {"train": train.describe(), "dev": dev.describe(),
                "note": "MELD (Poria et al., ACL 2019) text and labels only; no MELD video was available, "
                        "so face and audio are untrained here"}
    failures = {tag: [f"{n}: {why}" for n, why in st.failures.items()][:clipdata.MAX_LISTED]
                for (tag, _), st in zip(data.splits(), data.stats)}
    out = {"train": {**train.describe(), "clips_corrupt": data.stats[0].failed, "corrupt": failures["train"],
                     "rows_trained": fit_rows, "rows_with_face": counts["face"],
                     "rows_with_voiced_audio": counts["audio"], "rows_with_video": counts["video"],
                     "voice_contexts": "each voice heard among its dialogue's clips (as the app hears a "
                                       "video's utterances) and, once more as a row of its own, alone",
                     "rows_with_voice_heard_alone_too": voices_alone},
           "feature_cache": data.cache_info,
           "note": "rows whose clip is missing or unreadable trained their text only"}
    out["dev"] = ({**dev.describe(), "clips_corrupt": data.stats[1].failed, "corrupt": failures["dev"],
                   "held_out_from_train": data.held} if dev is not None else
                  {"rows": 0, "note": f"fewer than {retrain.SMALL_DATA} train rows and no --dev: no dev set; "
                                      "the last epoch of a fixed schedule is kept"})
    return out


def _notes(trained: list[str], clips: bool, init, keep: str) -> str:
    if not clips:
        return ("Text-only model: fine-tuned on MELD utterances with their dialogue context. "
                "Face and audio branches are present but untrained; the app shows the pretrained "
                "face-expression net's own opinion beside this model's.")
    return (f"Trained on utterance clips: {', '.join(trained)}. Pretrained encoders frozen; face features "
            "from the FER2013 net, voice features from Whisper base's encoder states (core.voice)"
            + (", video from frozen R3D-18 (Kinetics-400)." if "video" in trained else ".")
            + (f" Fine-tuned from {init.card.name}." if init else "")
            + (" Small data: no dev set, fixed schedule, last epoch kept." if keep == "last" else ""))


if __name__ == "__main__":
    main()
