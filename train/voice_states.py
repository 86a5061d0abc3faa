"""Frame-level voice states of RAVDESS clips, cached, so that pooling and head choices cost seconds.

Each clip's Whisper states after block core.voice.LAYER over its speech span (core.voice.speech_span),
50 a second, float16, in the two contexts the app hears an utterance in:

- alone (`clip_states`): the clip's own 30-s window, as a one-utterance file and as
  train.features hears an exported clip (core.voice.encode_window);
- inside a video (`window_states`): laid with the same actor's other clips into windows of up to
  28 s, each window encoded once, as transcription encodes a video (train.ravdess.window_features).

Pooling them (core.voice.pool) gives train.ravdess's features up to float16 rounding (the same
CV: 74.6 %), so other poolings and heads can be tried without another encoder pass (README, "The
voice": the variants measured). Cached as .npz files (per clip heard alone; per context, seed and
clip list in windows) keyed by the Whisper digest, under the feature cache's voice folder.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from .ravdess import VoiceClip, states_in_windows

WINDOW_SECONDS = 28.0
GAP = 0.6


def _cache_path(kind: str, clips: list[VoiceClip], model, cache_dir, settings: str) -> Path:
    from core import voice
    from train.features import default_root
    root = Path(cache_dir) if cache_dir else default_root() / "voice"
    key = hashlib.sha256("\n".join([kind, f"layer{voice.LAYER}", voice.encoder_digest(model), settings]
                                   + [str(c.path.resolve()) for c in clips]).encode()).hexdigest()
    return root / f"states-{kind}-{key[:32]}.npz"


def _save(path: Path, states: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(s) for s in states], np.int64)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, states=np.concatenate(states).astype(np.float16), lengths=lengths)
    tmp.replace(path)


def _load(path: Path) -> list[np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        flat, lengths = z["states"], z["lengths"]
    return np.split(flat, np.cumsum(lengths)[:-1])


def clip_states(clips: list[VoiceClip], model, cache_dir: str | Path | None = None,
                quiet: bool = False) -> list[np.ndarray]:
    """Per clip, [T, d] float16 states of its speech span heard alone (one encoder pass per clip),
    cached per clip file."""
    from tqdm import tqdm

    from core import media, voice
    out = []
    for clip in tqdm(clips, desc="voice states, clips alone", unit="clip", disable=quiet, file=sys.stderr):
        path = _cache_path("alone", [clip], model, cache_dir, str(clip.path.stat().st_size))
        cached = _load(path)
        if cached is None:
            audio = media.load_audio(clip.path)
            start, end = voice.speech_span(audio)
            cached = [voice.encode_window(model, audio, start, end).span(start, end).numpy().astype(np.float16)]
            _save(path, cached)
        out.append(cached[0])
    return out


def window_states(clips: list[VoiceClip], model, seed: int = 0, seconds: float = WINDOW_SECONDS,
                  gap: float = GAP, cache_dir: str | Path | None = None, quiet: bool = False) -> list[np.ndarray]:
    """Per clip, [T, d] float16 states of its speech span inside a window of the same actor's clips
    (a seeded arrangement: another seed is another video of the same clips)."""
    path = _cache_path("windows", clips, model, cache_dir, f"{seconds}-{gap}-{seed}")
    cached = _load(path)
    if cached is not None:
        return cached
    out: list[np.ndarray | None] = [None] * len(clips)
    for i, states in states_in_windows(clips, model, seconds, gap, seed, quiet):
        out[i] = states.numpy().astype(np.float16)
    _save(path, out)
    return out
