"""RAVDESS emotional speech (../shared/data/ravdess): clips, labels, actors, voice features.

The manifest maps RAVDESS's 8 emotions onto MELD's 7; `calm` has no MELD label. Here calm is
folded into neutral (CALM_AS): both are low-arousal, unmarked speech, and the app has no calm
label to show (train.voice measures the choice against dropping calm, by actor-held-out CV).
Features are core.voice's (Whisper encoder states of the clip's speech in a 30-s window, pooled), cached as one
.npz per (feature kind, Whisper digest) beside the other feature caches.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.labels import EMOTIONS, EMOTION_POLARITY, SENTIMENTS

DEFAULT_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ravdess"
CALM_AS = "neutral"
LICENSE = "CC BY-NC-SA 4.0"
CITATION = ("Livingstone SR, Russo FA (2018). The Ryerson Audio-Visual Database of Emotional Speech and "
            "Song (RAVDESS). PLoS ONE 13(5): e0196391. https://doi.org/10.1371/journal.pone.0196391")


@dataclass
class VoiceClip:
    path: Path
    actor: int
    emotion: int                 # index in EMOTIONS (calm folded into neutral)
    calm: bool                   # RAVDESS label was calm
    intensity: str
    statement: str

    @property
    def sentiment(self) -> int:
        return SENTIMENTS.index(EMOTION_POLARITY[EMOTIONS[self.emotion]])


def find_root(root: str | Path | None = None) -> Path | None:
    """The RAVDESS folder (default ../shared/data/ravdess beside the clone); None if absent."""
    path = Path(root) if root else DEFAULT_ROOT
    return path if (path / "manifest.csv").is_file() else None


def load_clips(root: str | Path | None = None, actors: set[int] | None = None) -> list[VoiceClip]:
    """Every clip of the manifest (only `actors` when given), in manifest order."""
    base = find_root(root)
    if base is None:
        raise FileNotFoundError(f"no RAVDESS manifest under {root or DEFAULT_ROOT}")
    out = []
    with open(base / "manifest.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            actor = int(row["actor"])
            if actors is not None and actor not in actors:
                continue
            calm = row["emotion"] == "calm"
            label = CALM_AS if calm else row["meld_emotion"]
            out.append(VoiceClip(base / row["path"], actor, EMOTIONS.index(label), calm, row["intensity"],
                                 row["statement"]))
    return out


def clip_features(clips: list[VoiceClip], model, cache_dir: str | Path | None = None,
                  quiet: bool = False) -> np.ndarray:
    """[N, 2d] voice features (core.voice.clip_voice_feature), cached per clip file."""
    from tqdm import tqdm

    from core import media, voice
    from train.features import default_root
    root = Path(cache_dir) if cache_dir else default_root() / "voice"
    root.mkdir(parents=True, exist_ok=True)
    tag = f"{voice.FEATURE}-{voice.encoder_digest(model)}"
    out = []
    for clip in tqdm(clips, desc="voice features", unit="clip", disable=quiet, file=sys.stderr):
        key = hashlib.sha256(f"{tag}\n{clip.path.resolve()}\n{clip.path.stat().st_size}".encode()).hexdigest()
        path = root / f"{key}.npy"
        if path.is_file():
            out.append(np.load(path, allow_pickle=False))
            continue
        feat = voice.clip_voice_feature(model, media.load_audio(clip.path))
        np.save(path, feat)
        out.append(feat)
    return np.stack(out)


def window_features(clips: list[VoiceClip], model, seconds: float = 28.0, gap: float = 0.6,
                    seed: int = 0, quiet: bool = False, cache_dir: str | Path | None = None) -> np.ndarray:
    """[N, 2d] voice features as the app hears utterances: each clip's speech span laid, with `gap`
    s of silence between, into windows of up to `seconds` s of one actor's clips (in a seeded
    order), each window encoded once as transcription does (30-s context, core.voice.run_encoder),
    each clip's states cut out of it (core.voice.WindowStates.span) and pooled. Cached as one .npy
    per (clip list, settings, Whisper digest)."""
    from core import voice
    from train.features import default_root
    root = Path(cache_dir) if cache_dir else default_root() / "voice"
    key = hashlib.sha256("\n".join([voice.FEATURE, voice.encoder_digest(model), f"{seconds}-{gap}-{seed}"]
                                   + [str(c.path.resolve()) for c in clips]).encode()).hexdigest()
    cached = root / f"windows-{key}.npy"
    if cached.is_file():
        return np.load(cached, allow_pickle=False)
    out = np.zeros((len(clips), voice_dim_of(model)), np.float32)
    for i, states in states_in_windows(clips, model, seconds, gap, seed, quiet):
        out[i] = voice.pool(states)
    root.mkdir(parents=True, exist_ok=True)
    np.save(cached, out)
    return out


def states_in_windows(clips: list[VoiceClip], model, seconds: float = 28.0, gap: float = 0.6, seed: int = 0,
                      quiet: bool = False):
    """Yield (clip index, [T, d] states of its speech span) with each clip heard inside a window of
    the same actor's clips: their speech spans in a seeded order, heard together as the app hears
    the utterances of one video (core.voice.heard_together: `gap` s of silence between, windows of
    up to `seconds` s, each encoded once)."""
    from tqdm import tqdm

    from core import media, voice
    rng = np.random.default_rng(seed)
    by_actor: dict[int, list[int]] = {}
    for i, c in enumerate(clips):
        by_actor.setdefault(c.actor, []).append(i)
    for _, idx in tqdm(sorted(by_actor.items()), desc=f"voice states in {seconds:g}-s windows", unit="actor",
                       disable=quiet, file=sys.stderr):
        order = rng.permutation(idx).tolist()
        pieces = []
        for i in order:
            audio = media.load_audio(clips[i].path)
            a, b = voice.speech_span(audio)
            pieces.append(audio[int(a * voice.SAMPLE_RATE):int(b * voice.SAMPLE_RATE)])
        yield from zip(order, voice.heard_together(model, pieces, seconds, gap))


def voice_dim_of(model) -> int:
    return 2 * int(model.dims.n_audio_state)
