"""Face and audio features of utterance clips, computed by the app's own code and cached on disk.

A clip is one utterance, so it is read as core.pipeline reads an utterance: audio decoded once
to 16 kHz mono (core.media.load_audio), its speech span (core.voice.speech_span: voice activity,
padded as the app pads an utterance) heard by Whisper's encoder in a 30-s window as transcription
would hear the clip, and pooled (core.voice.clip_voice_feature), and whether it is silent
(audio_is_silent); the frames the app's face grid
would pool for it (core.face_grid.pooled_times: up to FACE_FRAMES, one per GRID_STEP seconds),
read at the pipeline's FRAME_SIDE (core.media.read_frames) and passed through
encoders.encode_faces. So training sees the features the app computes. The app hears the
utterances of one video together, in shared windows, so a clip whose dialogue (dia{D}) holds other
voiced clips is also heard among them (with_dialogue_voices: ClipFeatures.voice_in_dialogue).

The cache is keyed by the sha256 of the clip's bytes and FEATURE_VERSION (which names every
setting that changes the features, and the face weights' digest): a renamed clip is a hit, a
re-cut one is not. Entries are .npz files (numpy arrays only, read with allow_pickle=False) under
--feature-cache, else $WORKBENCH_CACHE/features, else ~/.cache/emotion-workbench/features.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from core import encoders, face_grid, media, voice
from core.cache import file_digest
from core.face import DEFAULT_WEIGHTS
from core.meld import parse_clip_name
from core.pipeline import FRAME_SIDE
from core.whisper_convert import CACHE_ENV, DEFAULT_CACHE

FEATURE_SCHEMA = 3           # 2: face frames as the app's face grid pools them; 3: Whisper voice features


@lru_cache(maxsize=1)
def feature_version() -> str:
    """Every setting the features depend on, so a change never serves stale features."""
    face = hashlib.sha256(DEFAULT_WEIGHTS.read_bytes()).hexdigest()[:12] if DEFAULT_WEIGHTS.is_file() else "none"
    return (f"clipfeat{FEATURE_SCHEMA}-sr{encoders.SAMPLE_RATE}-{voice.FEATURE}-{voice.encoder_digest(_whisper())}"
            f"-rms{encoders.SILENCE_RMS:g}"
            f"-face{encoders.FACE_FRAMES}g{face_grid.GRID_STEP:g}@{FRAME_SIDE}-fer{face}")


def _whisper():
    """The app's Whisper (the packaged base), whose encoder hears the voice."""
    from core.transcribe import load_whisper
    return load_whisper("base", device="cpu")


def default_root() -> Path:
    """$WORKBENCH_CACHE/features, else ~/.cache/emotion-workbench/features."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else DEFAULT_CACHE).expanduser() / "features"


@dataclass
class ClipFeatures:
    """The face and audio inputs of one clip, with what the pipeline's modality mask needs."""

    face: np.ndarray             # [FACE_DIM] float32 (zeros when no face)
    face_present: bool
    voice: np.ndarray            # [AUDIO_DIM] float32: core.voice feature (zeros when no audio track)
    has_audio: bool
    voiced: bool                 # not silent: the audio modality is present
    duration: float
    frames_with_face: int = 0
    frames_seen: int = 0
    voice_in_dialogue: np.ndarray | None = None   # [AUDIO_DIM] the voice heard among its dialogue's clips (or None)

    @property
    def audio_present(self) -> bool:
        return self.has_audio and self.voiced

    def heard(self, in_dialogue: bool = True) -> "ClipFeatures":
        """These features with the voice heard among the clips of its dialogue (as the app hears
        the utterances of one video), where there is such a voice; else heard alone (a clip that
        is a file of its own)."""
        if in_dialogue and self.voice_in_dialogue is not None:
            return replace(self, voice=self.voice_in_dialogue)
        return self


def extract_clip(path: str | Path) -> ClipFeatures:
    """Features of one utterance clip, the way core.pipeline computes them (MediaError if unreadable)."""
    info = media.probe(path)
    face = np.zeros(encoders.FACE_DIM, np.float32)
    feature = np.zeros(encoders.AUDIO_DIM, np.float32)
    present, with_face, seen, voiced = False, 0, 0, False
    if info.has_audio:
        audio = media.load_audio(path)
        voiced = not encoders.audio_is_silent(audio)
        if voiced:
            feature = voice.clip_voice_feature(_whisper(), audio)
    if info.has_video:
        times = face_grid.pooled_times(0.0, info.duration, info.duration)
        result = encoders.encode_faces(media.read_frames(path, times, max_side=FRAME_SIDE))
        present, with_face, seen = result.present, result.frames_with_face, result.frames_seen
        face = result.vector.astype(np.float32)
    return ClipFeatures(face, present, feature, info.has_audio, voiced, float(info.duration), with_face, seen)


class FeatureCache:
    """Content-keyed .npz files: key = sha256(version + clip sha256); `version` defaults to
    feature_version() (the face and audio features; train.video_features keys its own)."""

    def __init__(self, root: str | Path | None = None, version: str | None = None):
        self.root = Path(root).expanduser() if root else default_root()
        self.version = version or feature_version()

    def path(self, digest: str) -> Path:
        key = hashlib.sha256(f"{self.version}\n{digest}".encode()).hexdigest()
        return self.root / key[:2] / f"{key}.npz"

    def read(self, digest: str, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        """The arrays `names` of an entry; None when it is missing or damaged (then extracted again)."""
        path = self.path(digest)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return {name: z[name] for name in names}
        except (OSError, KeyError, ValueError):
            return None

    def write(self, digest: str, **arrays) -> None:
        """Store an entry atomically (a reader never sees half a file)."""
        path = self.path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                np.savez(out, **arrays, version=np.str_(self.version))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def load(self, digest: str) -> ClipFeatures | None:
        z = self.read(digest, ("face", "face_present", "voice", "has_audio", "voiced", "duration",
                               "frames_with_face", "frames_seen"))
        if z is None:
            return None
        return ClipFeatures(z["face"].astype(np.float32), bool(z["face_present"]), z["voice"].astype(np.float32),
                            bool(z["has_audio"]), bool(z["voiced"]), float(z["duration"]),
                            int(z["frames_with_face"]), int(z["frames_seen"]))

    def store(self, digest: str, f: ClipFeatures) -> None:
        self.write(digest, face=f.face, face_present=f.face_present, voice=f.voice, has_audio=f.has_audio,
                   voiced=f.voiced, duration=f.duration, frames_with_face=f.frames_with_face,
                   frames_seen=f.frames_seen)


@dataclass
class ExtractStats:
    """What a feature pass did: clips asked for, cache hits, extractions, failures, speed."""

    clips: int = 0
    from_cache: int = 0
    extracted: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)     # clip name -> one-line reason

    @property
    def clips_per_second(self) -> float:
        return round(self.extracted / self.seconds, 2) if self.extracted and self.seconds > 0 else 0.0

    def describe(self, cache: FeatureCache) -> dict:
        return {"dir": str(cache.root), "version": cache.version, "clips": self.clips,
                "from_cache": self.from_cache, "extracted": self.extracted, "failed": self.failed,
                "extract_seconds": round(self.seconds, 1), "clips_per_second": self.clips_per_second}


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return (text[:160] or type(err).__name__) if isinstance(err, media.MediaError) \
        else f"{type(err).__name__}: {text[:140]}"


def clip_features(clips: dict[str, Path], cache: FeatureCache, jobs: int = 2,
                  quiet: bool = False) -> tuple[dict[str, ClipFeatures], ExtractStats]:
    """Face and audio features for {clip name: path} (cached_features with extract_clip), the voice
    of each clip that shares its dialogue with other voiced clips also heard among them
    (with_dialogue_voices)."""
    feats, stats = cached_features(clips, cache, extract_clip, jobs, "extracting clip features", quiet)
    return with_dialogue_voices(clips, feats, cache, quiet), stats


def dialogue_voices(paths: list[Path]) -> np.ndarray:
    """[N, AUDIO_DIM] the voice of each clip of one dialogue (in utterance order) heard as the app
    hears the utterances of one video: their speech spans laid in order into shared windows
    (core.voice.heard_together), each clip's states cut out and pooled."""
    pieces = []
    for path in paths:
        audio = media.load_audio(path)
        start, end = voice.speech_span(audio)
        pieces.append(audio[int(start * voice.SAMPLE_RATE):int(end * voice.SAMPLE_RATE)])
    return np.stack([voice.pool(states) for states in voice.heard_together(_whisper(), pieces)])


def with_dialogue_voices(clips: dict[str, Path], feats: dict[str, ClipFeatures], cache: FeatureCache,
                         quiet: bool = False) -> dict[str, ClipFeatures]:
    """`feats` with `voice_in_dialogue` set on each voiced clip named dia{D}_utt{U} whose dialogue
    has other voiced clips (dialogue_voices, in utterance order). The app hears a video's
    utterances together, and a head trained on voices heard alone reads those poorly (README,
    "Retraining on corrected clips"). Cached per dialogue (the digests of its clips, in order); a
    dialogue whose clips cannot be read again keeps its voices heard alone."""
    from tqdm import tqdm
    by_dialogue: dict[int, list[tuple[int, str]]] = {}
    for name, f in feats.items():
        try:
            dialogue, utterance = parse_clip_name(name)
        except ValueError:
            continue
        if f.audio_present:
            by_dialogue.setdefault(dialogue, []).append((utterance, name))
    out = dict(feats)
    together = [[name for _, name in sorted(items)] for _, items in sorted(by_dialogue.items()) if len(items) > 1]
    for names in tqdm(together, desc="voices heard in their dialogue", unit="dialogue",
                      disable=quiet or not together, file=sys.stderr):
        try:
            digest = hashlib.sha256("\n".join(["dialogue"] + [file_digest(clips[n]) for n in names]).encode()).hexdigest()
            hit = cache.read(digest, ("voices",))
            voices = hit["voices"] if hit is not None and hit["voices"].shape == (len(names), encoders.AUDIO_DIM) \
                else None
            if voices is None:
                voices = dialogue_voices([clips[n] for n in names]).astype(np.float32)
                cache.write(digest, voices=voices)
        except (OSError, media.MediaError) as err:
            if not quiet:
                print(f"dialogue of {names[0]}: voices kept as heard alone ({_one_line(err)})", file=sys.stderr)
            continue
        for name, v in zip(names, voices):
            out[name] = replace(feats[name], voice_in_dialogue=np.asarray(v, np.float32))
    return out


def cached_features(clips: dict[str, Path], cache, extract, jobs: int = 2, desc: str = "extracting",
                    quiet: bool = False) -> tuple[dict, ExtractStats]:
    """extract(path) for {clip name: path}, from `cache` (load/store by content digest) when the
    content was seen, else extracted on `jobs` threads and stored.

    A clip that cannot be read is left out of the result and listed in stats.failures with its
    reason. Identical files (same bytes) are extracted once.
    """
    from tqdm import tqdm
    stats = ExtractStats(clips=len(clips))
    out: dict[str, ClipFeatures] = {}
    todo: dict[str, list[str]] = {}                     # content digest -> names
    for name, path in clips.items():
        try:
            digest = file_digest(path)
        except OSError as err:
            stats.failures[name] = f"cannot be read: {err.strerror or err}"
            continue
        hit = cache.load(digest) if digest not in todo else None
        if hit is not None:
            out[name] = hit
            stats.from_cache += 1
        else:
            todo.setdefault(digest, []).append(name)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(extract, clips[names[0]]): (digest, names) for digest, names in todo.items()}
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc,
                           unit="clip", disable=quiet or not futures, file=sys.stderr):
            digest, names = futures[future]
            try:
                feats = future.result()
            except Exception as err:                    # one bad clip never stops the others
                for name in names:
                    stats.failures[name] = _one_line(err)
                continue
            cache.store(digest, feats)
            stats.extracted += 1
            stats.from_cache += len(names) - 1
            for name in names:
                out[name] = feats
    stats.seconds = time.perf_counter() - t0
    stats.failed = len(stats.failures)
    return out, stats
