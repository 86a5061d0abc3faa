"""A recording of known clips with pauses, clean, under pink noise or over music, and how much of it
the transcript heard: used by tests/test_recall.py and by `python -m bench`.

The clips are real speech where it is available (RAVDESS actors 09-24 in ../shared/data/ravdess:
"Kids are talking by the door" / "Dogs are sitting by the door") and espeak-ng speech otherwise,
each brought to its own loudness (recordings differ: a quiet one must be heard beside a loud one).
Noise is ffmpeg's `anoisesrc=color=pink:amplitude=0.08`; music is a synthetic bed of chords.
"""

from __future__ import annotations

import csv
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests import mediagen

SAMPLE_RATE = 16000
RAVDESS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess"
NOISE_AMPLITUDE = 0.08           # pink noise as in issue 15: about -36 dBFS RMS
MUSIC_RMS_DB = -32.0             # the music bed, under the speech
# (RAVDESS emotion, intensity, actor, statement, loudness in dBFS RMS): real clips of several
# voices and levels, the quiet ones 9 dB below the loud ones
RAVDESS_PICKS = [("neutral", "normal", "11", "1", -23.0), ("sad", "normal", "14", "2", -29.0),
                 ("angry", "strong", "19", "1", -20.0), ("happy", "strong", "22", "2", -23.0),
                 ("fearful", "normal", "17", "2", -28.0)]
SPOKEN = [("The meeting has been moved to Thursday afternoon.", -21.0),
          ("Could you help me carry these boxes upstairs? I will be back in a minute.", -24.0),
          ("We finally finished the project on time.", -27.0)]
STATEMENTS = {"1": "Kids are talking by the door.", "2": "Dogs are sitting by the door."}
PAUSES = (1.6, 2.4, 1.2, 2.0, 1.5, 2.8, 1.8, 2.2)     # seconds of silence after each clip
LEAD = 1.0


CORE_DB = -20.0                  # a clip's core: from its first to its last 10 ms this close to its peak


@dataclass
class Clip:
    """One source clip inside a recording: where it lies, where its loud core lies (its words,
    without the breaths and rustle around them), and what it says."""

    start: float
    end: float
    text: str
    source: str
    core_start: float = 0.0
    core_end: float = 0.0


@dataclass
class Recording:
    audio: np.ndarray            # float32, 16 kHz, mono
    clips: list[Clip]

    @property
    def reference(self) -> str:
        return " ".join(c.text for c in self.clips)


def have_ravdess() -> bool:
    return (RAVDESS / "manifest.csv").is_file()


def load_audio(path: Path) -> np.ndarray:
    """Any audio file as float32 16 kHz mono (the bundled ffmpeg)."""
    raw = subprocess.run([mediagen.FFMPEG, "-nostdin", "-v", "error", "-i", str(path), "-ac", "1",
                          "-ar", str(SAMPLE_RATE), "-f", "s16le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0


def at_level(audio: np.ndarray, rms_db: float) -> np.ndarray:
    """`audio` scaled to an RMS of `rms_db` dBFS, measured over its voiced part (above -50 dBFS)."""
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    energy = (frames.astype(np.float64) ** 2).mean(axis=1)
    voiced = energy[energy > energy.max() * 1e-3]
    rms = float(np.sqrt(voiced.mean())) if voiced.size else 1e-9
    return (audio * (10 ** (rms_db / 20) / max(rms, 1e-9))).astype(np.float32)


def _loud(audio: np.ndarray, floor_db: float) -> np.ndarray:
    """Indices of the 10-ms hops within `floor_db` of the loudest one."""
    hop = 160
    n = len(audio) // hop
    level = np.sqrt((audio[: n * hop].astype(np.float64).reshape(n, hop) ** 2).mean(axis=1))
    return np.flatnonzero(20 * np.log10(level + 1e-9) > 20 * np.log10(level.max() + 1e-9) + floor_db)


def _trim(audio: np.ndarray, floor_db: float = -35.0, margin: int = 5) -> np.ndarray:
    """Cut the quiet lead and tail of a clip (RAVDESS clips carry about a second of each, with
    breaths): what is left runs from 50 ms before its first loud 10 ms to 50 ms after its last."""
    hop, loud = 160, _loud(audio, floor_db)
    if loud.size == 0:
        return audio
    return audio[max(0, loud[0] - margin) * hop: (loud[-1] + margin) * hop]


def ravdess_clip(emotion: str, intensity: str, actor: str, statement: str) -> tuple[Path, str]:
    """The first RAVDESS clip that matches, and its sentence."""
    with open(RAVDESS / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            name = Path(row["path"]).name.split("-")
            if (row["emotion"], row["intensity"], row["actor"], name[4].lstrip("0")) == \
                    (emotion, intensity, actor, statement):
                return RAVDESS / row["path"], STATEMENTS[statement]
    raise FileNotFoundError(f"no RAVDESS clip {emotion}/{intensity}/actor {actor}/statement {statement}")


def source_clips(folder: Path, real: bool | None = None) -> list[tuple[np.ndarray, str, str]]:
    """(audio at its loudness, text, source) for each clip: espeak-ng sentences, and RAVDESS clips
    when `real` (default: when the data is there)."""
    real = have_ravdess() if real is None else real
    folder.mkdir(parents=True, exist_ok=True)
    spoken = [(at_level(_trim(load_audio(mediagen.speak(text, folder / f"espeak{i}.wav"))), level),
               text, "espeak-ng") for i, (text, level) in enumerate(SPOKEN)]
    if not real:
        return spoken
    acted = []
    for pick in RAVDESS_PICKS:
        path, text = ravdess_clip(*pick[:4])
        acted.append((at_level(_trim(load_audio(path)), pick[4]), text, path.name))
    # interleave: real, real, espeak, real, real, espeak, real, espeak
    order = [acted[0], acted[1], spoken[0], acted[2], acted[3], spoken[1], acted[4], spoken[2]]
    return order


def acted_clips(count: int = 14, seed: int = 1) -> list[tuple[np.ndarray, str, str]]:
    """`count` RAVDESS clips drawn at random (seeded), each at a loudness between -32 and -20 dBFS:
    the same two sentences again and again, which Whisper tends to skip or run together."""
    with open(RAVDESS / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(len(rows), count, replace=False):
        audio = at_level(_trim(load_audio(RAVDESS / rows[i]["path"])), float(rng.uniform(-32.0, -20.0)))
        out.append((audio, rows[i]["statement"] + ".", Path(rows[i]["path"]).name))
    return out


def one_sentence(count: int = 14, seed: int = 0) -> list[tuple[np.ndarray, str, str]]:
    """`count` RAVDESS clips of "Kids are talking by the door", each by another actor (09-24, drawn
    at random, seeded), in any emotion, untrimmed (about 3.7 s each with their quiet lead and tail),
    at a loudness between -30 and -20 dBFS: one sentence said again and again, which looks like a
    hallucination loop to a window-wide repetition check."""
    with open(RAVDESS / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if Path(r["path"]).name.split("-")[4] == "01"]
    rng = np.random.default_rng(seed)
    actors = sorted({r["actor"] for r in rows})
    out = []
    for actor in sorted(rng.choice(actors, count, replace=False)):
        mine = [r for r in rows if r["actor"] == actor]
        row = mine[int(rng.integers(len(mine)))]
        audio = at_level(load_audio(RAVDESS / row["path"]), float(rng.uniform(-30.0, -20.0)))
        out.append((audio, STATEMENTS["1"], Path(row["path"]).name))
    return out


def recording(sources: list[tuple[np.ndarray, str, str]], lead: float = LEAD,
              pause: float | None = None) -> Recording:
    """The clips one after another with the pauses in PAUSES (or `pause` seconds) between them."""
    parts = [np.zeros(int(lead * SAMPLE_RATE), np.float32)]
    clips, t = [], lead
    for i, (audio, text, source) in enumerate(sources):
        d, loud = len(audio) / SAMPLE_RATE, _loud(audio, CORE_DB)
        clips.append(Clip(round(t, 3), round(t + d, 3), text, source,
                          round(t + loud[0] * 0.01, 3), round(t + (loud[-1] + 1) * 0.01, 3)))
        gap = PAUSES[i % len(PAUSES)] if pause is None else pause
        parts += [audio, np.zeros(int(gap * SAMPLE_RATE), np.float32)]
        t += d + gap
    return Recording(np.concatenate(parts), clips)


def pink_noise(samples: int, amplitude: float = NOISE_AMPLITUDE, seed: int = 1) -> np.ndarray:
    """ffmpeg's `anoisesrc=color=pink`, `samples` long."""
    raw = subprocess.run([mediagen.FFMPEG, "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                          f"anoisesrc=color=pink:amplitude={amplitude}:sample_rate={SAMPLE_RATE}:seed={seed}",
                          "-frames:a", str(samples), "-t", f"{samples / SAMPLE_RATE + 1:.3f}",
                          "-ac", "1", "-f", "s16le", "-"], capture_output=True, check=True).stdout
    noise = np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0
    return np.pad(noise, (0, max(0, samples - noise.size)))[:samples]


def tone_bed(samples: int, rms_db: float = MUSIC_RMS_DB, bpm: float = 96.0) -> np.ndarray:
    """Synthetic music: a four-chord loop of soft harmonic tones with a plucked envelope on each beat
    and a bass note, at `rms_db` dBFS RMS."""
    t = np.arange(samples) / SAMPLE_RATE
    beat = 60.0 / bpm
    chords = [(261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6), (196.0, 246.9, 293.7)]
    bar = (t // (4 * beat)).astype(int) % len(chords)
    envelope = np.exp(-3.0 * (t % beat) / beat)
    out = np.zeros(samples)
    for k, chord in enumerate(chords):
        on = bar == k
        for f in chord:
            for h, amp in ((1, 1.0), (2, 0.4), (3, 0.2)):
                out[on] += amp * np.sin(2 * np.pi * f * h * t[on])
        out[on] += 1.5 * np.sin(2 * np.pi * chord[0] / 2 * t[on])
    out *= 0.3 + envelope
    out *= 10 ** (rms_db / 20) / np.sqrt((out ** 2).mean())
    return out.astype(np.float32)


def with_noise(rec: Recording, kind: str) -> Recording:
    """The same recording, "clean", under pink "noise", or over "music"."""
    if kind == "clean":
        return rec
    bed = pink_noise(rec.audio.size) if kind == "noise" else tone_bed(rec.audio.size)
    return Recording(np.clip(rec.audio + bed, -1.0, 1.0).astype(np.float32), rec.clips)


# --------------------------------------------------------------------------- scoring

def _matched(reference: list[str], hypothesis: list[str]) -> int:
    """How many reference words the hypothesis holds in order (longest common subsequence)."""
    row = [0] * (len(hypothesis) + 1)
    for r in reference:
        prev = 0
        for j, h in enumerate(hypothesis, 1):
            prev, row[j] = row[j], (prev + 1 if r == h else max(row[j], row[j - 1]))
    return row[-1]


def heard(clip: Clip, utterances: list) -> bool:
    """A clip is heard when the utterances over it cover at least half of its loud core and hold at
    least half of its words."""
    from core.transcribe import normalize_words
    over = [u for u in utterances if u.end > clip.start and u.start < clip.end]
    covered = sum(max(0.0, min(u.end, clip.core_end) - max(u.start, clip.core_start)) for u in over)
    words = normalize_words(clip.text)
    found = _matched(words, normalize_words(" ".join(u.text for u in over)))
    return covered >= 0.5 * (clip.core_end - clip.core_start) and found >= 0.5 * len(words)


@dataclass
class Score:
    heard: int
    clips: int
    wer: float
    longest: float
    missed: list[str]


def score(rec: Recording, utterances: list) -> Score:
    """Clips heard, word error rate over all the known words, longest utterance (seconds)."""
    from core.transcribe import word_error_rate
    missed = [f"{c.source} at {c.start:.1f}-{c.end:.1f} s" for c in rec.clips if not heard(c, utterances)]
    wer = word_error_rate(rec.reference, " ".join(u.text for u in utterances))
    longest = max((u.end - u.start for u in utterances), default=0.0)
    return Score(len(rec.clips) - len(missed), len(rec.clips), wer, longest, missed)
