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

from .ravdess import VoiceClip

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
    import torch
    from tqdm import tqdm
    from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim

    from core import media, voice
    path = _cache_path("windows", clips, model, cache_dir, f"{seconds}-{gap}-{seed}")
    cached = _load(path)
    if cached is not None:
        return cached
    rng = np.random.default_rng(seed)
    by_actor: dict[int, list[int]] = {}
    for i, c in enumerate(clips):
        by_actor.setdefault(c.actor, []).append(i)
    windows: list[list[tuple[int, np.ndarray]]] = []
    for _, idx in sorted(by_actor.items()):
        current, length = [], 0.0
        for i in rng.permutation(idx).tolist():
            audio = media.load_audio(clips[i].path)
            a, b = voice.speech_span(audio)
            piece = audio[int(a * voice.SAMPLE_RATE):int(b * voice.SAMPLE_RATE)]
            if current and length + gap + len(piece) / voice.SAMPLE_RATE > seconds:
                windows.append(current)
                current, length = [], 0.0
            current.append((i, piece))
            length += gap + len(piece) / voice.SAMPLE_RATE
        if current:
            windows.append(current)
    out: list[np.ndarray | None] = [None] * len(clips)
    silence = np.zeros(int(gap * voice.SAMPLE_RATE), np.float32)
    for window in tqdm(windows, desc=f"voice states in {seconds:g}-s windows", unit="window", disable=quiet,
                       file=sys.stderr):
        parts, spans, t = [], [], 0.0
        for i, piece in window:
            parts += [silence, piece]
            t += gap
            spans.append((i, t, t + len(piece) / voice.SAMPLE_RATE))
            t += len(piece) / voice.SAMPLE_RATE
        audio = np.concatenate(parts + [silence])
        mel = log_mel_spectrogram(torch.from_numpy(audio), model.dims.n_mels, padding=N_SAMPLES)
        with torch.no_grad():
            states = voice.run_encoder(model.encoder, pad_or_trim(mel, N_FRAMES).unsqueeze(0), final=False)[1][0]
        ws = voice.WindowStates(0.0, len(audio) / voice.SAMPLE_RATE, states)
        for i, a, b in spans:
            out[i] = ws.span(a, b).numpy().astype(np.float16)
    _save(path, out)
    return out
