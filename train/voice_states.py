"""Frame-level voice states of RAVDESS clips, cached, so that pooling and head choices cost seconds.

Each clip's Whisper states after block core.voice.LAYER over its speech span (core.voice.speech_span),
50 a second, float16, in the two contexts the app hears an utterance in:

- alone (`clip_states`): the clip's own 30-s window, as a one-utterance file and as
  train.features hears an exported clip (core.voice.encode_window);
- inside a video (`window_states`): laid with the same actor's other clips into windows of up to
  28 s, each window encoded once, as transcription encodes a video (train.ravdess.window_features).

Pooling them (core.voice.pool) gives train.ravdess's features up to float16 rounding (the same
CV: 74.6 %), so other poolings and heads can be tried without another encoder pass (docs/voice.md:
the variants measured). Cached as .npz files (per clip heard alone; per context, seed and
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
SPEEDS = (0.9, 1.1)             # training-only augmentation: each clip played at one of these speeds ...
NOISE_SNR_DB = 20.0             # ... or under white noise at this signal-to-noise ratio ...
PITCH_STEPS = (-2, 2)           # ... or its pitch moved by this many semitones, tempo kept ...
GAIN_DB = (-20.0, 10.0)         # ... or its level moved by a uniform draw in this range of dB (peaks kept below 1)


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


def perturb(audio: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A training-only copy of a clip's audio and what was done: `speed` plays it at one of SPEEDS
    (resampled, so pitch moves with tempo: another voice of the same utterance), `noise` adds white
    noise at NOISE_SNR_DB dB below the clip's power, `pitch` moves its pitch by one of PITCH_STEPS
semitones and keeps its tempo (torchaudio's phase vocoder), `gain` moves its level by a draw
from GAIN_DB (a microphone set louder or quieter; capped so that no sample clips)."""
    from fractions import Fraction

    from scipy.signal import resample_poly
    audio = np.asarray(audio, np.float32)
    if kind == "speed":
        factor = float(rng.choice(SPEEDS))
        ratio = Fraction(factor).limit_denominator(20)
        return resample_poly(audio, ratio.denominator, ratio.numerator).astype(np.float32), f"speed{factor:g}"
    if kind == "noise":
        power = float(np.mean(audio.astype(np.float64) ** 2)) or 1e-8
        noise = rng.standard_normal(len(audio)) * np.sqrt(power / 10 ** (NOISE_SNR_DB / 10))
        return (audio + noise).astype(np.float32), f"noise{NOISE_SNR_DB:g}dB-{int(rng.integers(1 << 30))}"
    if kind == "pitch":
        steps = int(rng.choice(PITCH_STEPS))
        return pitch_shift(audio, steps), f"pitch{steps:+d}"
    if kind == "gain":
        peak = float(np.abs(audio).max()) or 1.0
        db = min(float(rng.uniform(*GAIN_DB)), 20.0 * np.log10(0.99 / peak))
        return (audio * np.float32(10.0 ** (db / 20.0))).astype(np.float32), f"gain{db:+.2f}dB"
    raise ValueError(f"unknown augmentation {kind!r} (speed, noise, pitch, gain)")


def pitch_shift(audio: np.ndarray, semitones: int) -> np.ndarray:
    """`audio` (16 kHz) with its pitch moved by `semitones` and its length kept: stretched in time
    by the phase vocoder, then resampled back (torchaudio's own pitch_shift resamples by an exact
    ratio, 19 s for a 4-s clip here; a rational approximation within 0.1 % takes milliseconds)."""
    from fractions import Fraction

    import torch
    import torchaudio.functional as AF
    from scipy.signal import resample_poly
    rate = 2.0 ** (semitones / 12.0)
    n_fft, hop = 512, 128
    window = torch.hann_window(n_fft)
    spec = torch.stft(torch.from_numpy(np.asarray(audio, np.float32)), n_fft, hop, window=window, return_complex=True)
    advance = torch.linspace(0, np.pi * hop, spec.shape[-2])[..., None]
    stretched = AF.phase_vocoder(spec, 1.0 / rate, advance)           # rate times longer, same pitch
    longer = torch.istft(stretched, n_fft, hop, window=window).numpy()
    ratio = Fraction(rate).limit_denominator(200)                    # back to the length: pitch x rate
    out = resample_poly(longer, ratio.denominator, ratio.numerator).astype(np.float32)
    return np.pad(out, (0, max(0, len(audio) - len(out))))[: len(audio)]


def augmented_clip_states(clips: list[VoiceClip], model, kind: str, seed: int = 0,
                          cache_dir: str | Path | None = None, quiet: bool = False) -> list[np.ndarray]:
    """Per clip, [T, d] float16 states of a perturbed copy (perturb: `kind`, seeded per clip list)
    heard alone, as clip_states hears the clip itself; cached per clip and perturbation."""
    from tqdm import tqdm

    from core import media, voice
    rng = np.random.default_rng(seed)
    out = []
    for clip in tqdm(clips, desc=f"voice states, clips alone, {kind}", unit="clip", disable=quiet, file=sys.stderr):
        audio, done = perturb(media.load_audio(clip.path), kind, rng)
        path = _cache_path("alone", [clip], model, cache_dir, f"{clip.path.stat().st_size}-{done}-{seed}")
        cached = _load(path)
        if cached is None:
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
