"""The command-line options of the clip path (kept light: train.train imports this for its parser)."""

from __future__ import annotations

# options of the clip path only; the text-only path never sees them
CLIP_OPTIONS = ("clips", "dev_clips", "feature_cache", "modalities", "video_weights", "patience", "holdout", "jobs")
# text-path options whose defaults the clip path replaces when they are not given
UNSET_IN_CLIP_MODE = {k: None for k in ("epochs", "lr", "tune_layers", "context_turns", "context_ahead", "ema",
                                         "weight_decay", "batch_size")}
SCRATCH = {"epochs": 30, "lr": 1e-3, "patience": 5, "tune_layers": 0, "context_turns": 3, "context_ahead": 0,
           "ema": 0.0, "weight_decay": 0.01, "batch_size": 32}
# None: the --init checkpoint's own context
FROM_INIT = {"epochs": 10, "lr": 3e-4, "patience": 3, "tune_layers": 0, "context_turns": None, "context_ahead": None}
# small data (train.retrain.SMALL_DATA) and no --dev: nothing to choose an epoch on, so a fixed
# schedule: small batches, strong weight decay, weights averaged over the last steps
SMALL = {"epochs": 60, "batch_size": 8, "weight_decay": 0.1, "ema": 0.95}
SMALL_FROM_INIT = {"epochs": 30, "batch_size": 8, "weight_decay": 0.1, "ema": 0.95}


def add_clip_options(p) -> None:
    """The options of the clip path, as a group of train.train's parser."""
    clip = p.add_argument_group(
        "training on clips (text, face and audio; train/retrain.py)",
        "Unset options get the clip path's own defaults: 30 epochs, patience 5, lr 1e-3, frozen text "
        "(--tune-layers 0), 3 previous utterances as context; with --init: 10 epochs, patience 3, lr 3e-4, "
        "the checkpoint's context. Under 300 train rows and no --dev: no dev set, a fixed schedule "
        "(60 epochs, 30 with --init; batch 8, weight decay 0.1, --ema 0.95), the last epoch kept.")
    clip.add_argument("--clips", default=None,
                      help="folder of dia<D>_utt<U>.mp4 clips, or the MELD release folder; switches to the clip path")
    clip.add_argument("--dev-clips", default=None, help="clips of --dev (default: from --clips or beside --dev)")
    clip.add_argument("--feature-cache", default=None,
                      help="feature cache folder (default $WORKBENCH_CACHE/features, else ~/.cache/emotion-workbench/features)")
    clip.add_argument("--modalities", default=None,
                      help="modalities to train, comma-separated (default: text,face,audio, plus video with "
                           "--video-weights or $WORKBENCH_VIDEO_WEIGHTS or an --init checkpoint that has it)")
    clip.add_argument("--video-weights", default=None,
                      help="R3D-18 Kinetics-400 weights (.safetensors) for the video branch; without them "
                           "(and offline) video is not trained")
    clip.add_argument("--patience", type=int, default=None,
                      help="stop after this many epochs without a better dev emotion wF1")
    clip.add_argument("--holdout", type=float, default=None,
                      help="share of train held out as dev when --dev is absent (default 0.1 from 300 train rows "
                           "up; below that nothing unless this is given)")
    clip.add_argument("--jobs", type=int, default=2, help="threads extracting clip features")


def fill_defaults(args) -> None:
    """Defaults of the clip path for options left unset (lower LR, fewer epochs with --init);
    args.unset remembers which, for small_defaults."""
    table = {**SCRATCH, **FROM_INIT} if args.init else SCRATCH
    args.unset = [key for key in table if getattr(args, key, None) is None]
    for key, value in table.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def small_defaults(args) -> None:
    """The fixed small-data schedule (SMALL) for the options the command line left unset."""
    for key, value in (SMALL_FROM_INIT if args.init else SMALL).items():
        if key in getattr(args, "unset", ()):
            setattr(args, key, value)
