"""Clip data for the training loop: `python -m train.train --train CSV|ZIP|DIR [--clips DIR] ...`.

1. Find the CSVs and their clips (train.clips: the workbench's export zip or folder, the MELD
   release layout, or a folder of clips); rows without a usable clip are listed by name and train
   their text only. With no --dev: a seeded share of train (--holdout) is held out as dev, unless
   train is small (fewer than SMALL_DATA rows) and --holdout is not given: then nothing is held out, no epoch is chosen on a
   handful of rows, and train.train runs a fixed schedule (train.clip_args.SMALL) instead.
2. Face and voice features from the app's own code, cached by clip content (train.features);
   with R3D-18 Kinetics weights (--video-weights, $WORKBENCH_VIDEO_WEIGHTS, or torchvision's
   download online) the video branch's frozen R3D-18 vectors too (train.video_features).
3. Inputs for train.loop: text vectors from the app's TextEncoder with the app's dialogue context
   (frozen, or frozen-bottom states when top layers are tuned), face, voice and video per row.

A modality is trained only if asked for (--modalities; default text, face, audio, plus video
when its weights are given or the --init checkpoint has it) and present in some train row.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.encoders import VIDEO_WEIGHTS_ENV, EncoderUnavailable, VideoEncoder
from core.text import TextEncoder

from . import clips as clipdata
from . import loop
from .features import FeatureCache, cached_features, extract_clip, with_dialogue_voices
from .text_layers import frozen_states
from .video_features import video_features

SHOWN = 20                   # names printed per problem list (all are counted; the card keeps 50)
SMALL_DATA = 300             # fewer train rows than this and no --dev/--holdout: fixed schedule, no held-out dev
HOLDOUT = 0.1                # share of train held out as dev when --dev is absent (SMALL_DATA rows and more)


def fail(message: str) -> SystemExit:
    return SystemExit(f"error: {message}")


def report(title: str, names: list[str]) -> None:
    """Problems are printed even with --quiet: a skipped clip is never silent."""
    if names:
        more = f" ... and {len(names) - SHOWN} more (the card lists the first {clipdata.MAX_LISTED})" \
            if len(names) > SHOWN else ""
        print(f"warning: {title}: {len(names)}: {', '.join(names[:SHOWN])}{more}", file=sys.stderr, flush=True)


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
        raise fail(f"--modalities video: {err} (to train without it: --modalities text,face,audio)") from None


def _dev_source(args, workdir: Path) -> clipdata.Source:
    """--dev's clips: --dev-clips, else its own export, else a MELD release beside it, else --clips
    (a release folder gives its dev split; a plain folder is searched as it is)."""
    dev = Path(args.dev)
    if args.dev_clips or dev.is_dir() or dev.suffix.lower() == ".zip" or not args.clips:
        return clipdata.resolve(dev, args.dev_clips, workdir)
    if dev.is_file() and clipdata.release_dir(dev.parent, dev) is not None:
        return clipdata.resolve(dev, None, workdir)
    return clipdata.resolve(dev, args.clips, workdir)


@dataclass
class ClipData:
    """The splits of a clip run and their cached features."""

    train: clipdata.ClipSplit
    dev: clipdata.ClipSplit | None     # None: small data, fixed schedule
    held: bool                         # dev was held out of train
    feats: dict = field(default_factory=dict)         # "train"/"dev" -> {clip name: ClipFeatures}
    videos: dict = field(default_factory=dict)        # "train"/"dev" -> {clip name: vector} or None
    stats: list = field(default_factory=list)         # ExtractStats of train, dev
    cache_info: dict = field(default_factory=dict)

    def splits(self):
        return [("train", self.train)] + ([("dev", self.dev)] if self.dev is not None else [])


def load(args, workdir: Path, context: tuple[int, int], video_encoder, log) -> ClipData:
    """Train and dev splits as the command line names them, with their face, voice (and video) features."""
    train = clipdata.load_clip_split(clipdata.resolve(args.train, args.clips, workdir / "train"),
                                     context[0], args.limit, context[1])
    held = False
    if args.dev:
        dev = clipdata.load_clip_split(_dev_source(args, workdir / "dev"), context[0], args.dev_limit, context[1])
    elif len(train.rows) < SMALL_DATA and args.holdout is None:
        dev = None
        log(f"no --dev and {len(train.rows)} train rows (< {SMALL_DATA}): no dev set is held out; "
            "a fixed schedule trains on every row")
    else:
        share = HOLDOUT if args.holdout is None else args.holdout
        train, dev = clipdata.holdout(train, share, args.seed)
        held = True
        log(f"no --dev: held out {len(dev.rows)} of {len(train.rows) + len(dev.rows)} train rows as dev "
            f"(seeded share {share:g}, seed {args.seed})")
    if not train.rows or (dev is not None and not dev.rows):
        raise fail(f"no labelled rows in {train.csv.name if not train.rows else dev.csv.name}")
    data = ClipData(train, dev, held)
    log(f"train: {len(train.rows)} rows ({train.layout}, clips in {train.clip_dir}), dev: "
        f"{len(dev.rows) if dev else 0} rows; context: {context[0]} previous, {context[1]} following utterances")
    for tag, split in data.splits():
        report(f"{tag}: missing clips (these rows use their text only)", split.missing)

    cache = FeatureCache(args.feature_cache)
    for tag, split in data.splits():
        data.feats[tag], st = cached_features({r.name: r.clip for r in split.rows if r.clip is not None}, cache,
                                              extract_clip, args.jobs, "extracting clip features", args.quiet)
        data.stats.append(st)
        report(f"{tag}: corrupt or unreadable clips (their rows: text only)",
               [f"{n} ({why})" for n, why in st.failures.items()])
        data.videos[tag] = None
        if video_encoder is not None:
            data.videos[tag], vst = video_features({r.name: r.clip for r in split.rows if r.clip is not None},
                                                   video_encoder, args.feature_cache, args.quiet)
            log(f"{tag}: R3D-18 video features: {vst.from_cache} from the cache, {vst.extracted} extracted "
                f"({vst.clips_per_second:.2f} clips/s)")
            report(f"{tag}: clips R3D-18 could not read (their rows: no video)",
                   [f"{n} ({why})" for n, why in vst.failures.items()])
    # each voice also heard among its dialogue's clips, per CSV: a dev share held out of the train
    # CSV is heard with the train rows of its dialogues (train and dev CSVs reuse dialogue ids)
    for tags in ([["train", "dev"]] if held else [[tag] for tag, _ in data.splits()]):
        clips = {r.name: r.clip for tag in tags for r in getattr(data, tag).rows if r.clip is not None}
        heard = with_dialogue_voices(clips, {n: f for tag in tags for n, f in data.feats[tag].items()}, cache,
                                     args.quiet)
        for tag in tags:
            data.feats[tag] = {name: heard[name] for name in data.feats[tag]}
    extracted, secs = sum(s.extracted for s in data.stats), sum(s.seconds for s in data.stats)
    data.cache_info = {**data.stats[0].describe(cache),
                       "dev": data.stats[1].describe(cache) if len(data.stats) > 1 else None}
    log(f"features: {sum(s.from_cache for s in data.stats)} clips from the cache, {extracted} extracted "
        f"({extracted / secs if extracted and secs else 0:.2f} clips/s), {sum(s.failed for s in data.stats)} "
        f"failed; cache {cache.root}")
    return data


def inputs_for(split: clipdata.ClipSplit, feats: dict, videos: dict | None, encoder: TextEncoder,
               first: int | None = None, quiet: bool = True, in_dialogue: bool = True) -> loop.Inputs:
    """A split's Inputs: frozen text vectors (first None), or the frozen bottom's states below
    layer `first` for tuned top layers; face, voice and video from the cached features, each voice
    heard among its dialogue's clips where it has one (`in_dialogue`, as the app hears a video's
    utterances), else alone (train.features.ClipFeatures.heard)."""
    rows = [feats[r.name].heard(in_dialogue) if r.clip is not None and r.name in feats else None
            for r in split.rows]
    video = None if videos is None else [videos.get(r.name) if r.clip is not None else None for r in split.rows]
    emo = [e.emotion for e in split.examples]
    sen = [e.sentiment for e in split.examples]
    if first is not None:
        return loop.build_inputs(rows, emo, sen, states=frozen_states(encoder, split.examples, first, quiet=quiet),
                                 videos=video)
    return loop.build_inputs(rows, emo, sen, text=encoder.encode([e.text for e in split.examples],
                                                                 [e.context for e in split.examples]),
                             videos=video)


def with_voices_alone(inputs: loop.Inputs, split: clipdata.ClipSplit, feats: dict) -> tuple[loop.Inputs, list[int]]:
    """Training rows in both contexts the app hears a voice in: `inputs` (inputs_for, each voice
    heard among its dialogue's clips), then a copy of each row whose voice was, with the voice
    heard alone (a clip uploaded as a file of its own). Returns (rows, the split row each one is).
    The shipped voice head is trained on both contexts for the same reason (README)."""
    twins = [i for i, r in enumerate(split.rows)
             if r.clip is not None and r.name in feats and feats[r.name].audio_present
             and feats[r.name].voice_in_dialogue is not None]
    source = list(range(len(inputs)))
    if not twins:
        return inputs, source
    alone = inputs.subset(twins)
    alone.audio = torch.from_numpy(np.stack([feats[split.rows[i].name].voice for i in twins])).to(alone.audio)
    both = [inputs, alone]
    cat = (lambda name: None if getattr(inputs, name) is None
           else torch.cat([getattr(x, name) for x in both]))
    joined = loop.Inputs(cat("text"), None if inputs.states is None else inputs.states + alone.states,
                         cat("face"), cat("face_ok"), cat("audio"), cat("audio_ok"), cat("emotion"),
                         cat("sentiment"), cat("video"), cat("video_ok"))
    return joined, source + twins
