"""Voice activity: where the speech is, by Silero VAD (MIT; the model ships inside `silero-vad`).

The sequence ONNX model runs one call per 16 s of audio (about 0.1 s for a minute on one CPU core)
and gives the same per-frame probabilities as Silero's streaming model, frame by frame. It hears
speech under pink noise and over music and stays silent on noise and music alone, where an energy
threshold set from the file's own level drops a quiet recording beside a loud one.
"""

from __future__ import annotations

import threading

import numpy as np

SAMPLE_RATE = 16000
FRAME = 512                  # samples per Silero frame at 16 kHz (32 ms)
THRESHOLD = 0.35             # speech probability that starts speech (Silero: 0.5; music peaks near 0.28)
MIN_SPEECH_MS = 120          # shorter bursts are clicks ("No." lasts about 300 ms)
MIN_SILENCE_MS = 100         # shorter dips inside speech are not pauses
SPEECH_PAD_MS = 30           # Silero pads each region by this much
LEVEL_TARGET = 0.25          # quiet audio is raised until its loud moments (99.9th percentile |sample|) reach this ...
MAX_GAIN = 100.0             # ... by at most +40 dB, before Silero listens (at_speaking_level)


class VadError(RuntimeError):
    """The voice-activity model cannot be loaded; the message is one line."""


_MODEL = None
_LOCK = threading.Lock()


def _load():
    """The sequence model, loaded once. Importing silero_vad sets torch to one thread: undone."""
    global _MODEL
    with _LOCK:
        if _MODEL is None:
            import torch
            threads = torch.get_num_threads()
            try:
                from silero_vad import load_silero_vad
                _MODEL = load_silero_vad(sequence=True)
            except ImportError as err:
                raise VadError(f"silero-vad (and onnxruntime) are needed for voice activity: {err}") from None
            finally:
                torch.set_num_threads(threads)
    return _MODEL


def speech_probs(audio: np.ndarray) -> np.ndarray:
    """Silero's speech probability for each 32-ms frame of 16-kHz mono `audio`."""
    audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        return np.zeros(0, np.float32)
    return _load().audio_forward(audio, sampling_rate=SAMPLE_RATE)


def regions_from_probs(probs: np.ndarray, samples: int) -> list[tuple[float, float]]:
    """(start, end) seconds of speech from per-frame probabilities, by Silero's own rules."""
    from silero_vad.utils_vad import get_speech_timestamps_from_probs
    found = get_speech_timestamps_from_probs(
        list(map(float, probs)), sampling_rate=SAMPLE_RATE, threshold=THRESHOLD,
        min_speech_duration_ms=MIN_SPEECH_MS, min_silence_duration_ms=MIN_SILENCE_MS,
        speech_pad_ms=SPEECH_PAD_MS, audio_length_samples=samples)
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in found]


def join_regions(regions: list[tuple[float, float]], max_gap: float) -> list[tuple[float, float]]:
    """Speech regions (in time order) joined across pauses shorter than `max_gap` seconds."""
    out: list[list[float]] = []
    for a, b in regions:
        if out and a - out[-1][1] < max_gap:
            out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def at_speaking_level(audio: np.ndarray) -> np.ndarray:
    """`audio` raised (never lowered) so that its loud moments reach LEVEL_TARGET, by at most
    MAX_GAIN. Silero hears level: on a sentence recorded at -36 dBFS (loud moments) it missed the
    first 0.2 s, at -41 dBFS 0.5 s, at -51 dBFS all of it; raised first, none of it."""
    audio = np.asarray(audio, dtype=np.float32)
    loud = float(np.percentile(np.abs(audio), 99.9)) if audio.size else 0.0
    gain = min(LEVEL_TARGET / loud, MAX_GAIN) if loud > 0 else 1.0
    return audio if gain <= 1.0 else np.clip(audio * np.float32(gain), -1.0, 1.0)


def speech_regions(audio: np.ndarray, sr: int = SAMPLE_RATE) -> list[tuple[float, float]]:
    """(start, end) seconds of each stretch of speech in 16-kHz mono `audio`, in order."""
    if sr != SAMPLE_RATE:
        raise ValueError(f"voice activity needs {SAMPLE_RATE} Hz audio, not {sr} Hz")
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size < FRAME:
        return []
    return regions_from_probs(speech_probs(audio), audio.size)
