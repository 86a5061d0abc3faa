"""R3D-18 features of utterance clips for the video branch, cached by clip content and weights.

Only used when R3D-18 Kinetics-400 weights exist (--video-weights FILE.safetensors, or
$WORKBENCH_VIDEO_WEIGHTS, or torchvision's download when online): the branch never learns from
a randomly initialised encoder. A clip is read as core.pipeline reads an utterance spanning
[0, duration]: VIDEO_FRAMES frames spread across it (encoders.sample_times) at VIDEO_READ_SIDE,
through encoders.VideoEncoder. A clip without a picture has no video input (absent, not zeros).

Entries live beside the face/audio features (train.features) under their own key, which names
the weights' sha256: other weights never serve stale vectors.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from core import encoders, media

from .features import ExtractStats, FeatureCache, cached_features

VIDEO_SCHEMA = 1
ABSENT = np.zeros(0, np.float32)          # a clip with no picture: cached as "no video input"


def video_version(encoder: encoders.VideoEncoder) -> str:
    """Every setting the video vectors depend on, the weights' digest included."""
    return (f"video{VIDEO_SCHEMA}-r3d18-{encoder.digest[:16]}-f{encoders.VIDEO_FRAMES}"
            f"@{encoders.VIDEO_READ_SIDE}-s{encoders.VIDEO_SIZE}")


def extract_video(path: str | Path, encoder: encoders.VideoEncoder) -> np.ndarray:
    """[512] float32 R3D-18 vector of one clip; ABSENT when it has no picture (MediaError if unreadable)."""
    info = media.probe(path)
    if not info.has_video:
        return ABSENT
    times = encoders.sample_times(0.0, info.duration, encoders.VIDEO_FRAMES)
    frames = media.read_frames(path, times, max_side=encoders.VIDEO_READ_SIDE)
    return encoder.encode(frames).numpy().astype(np.float32)


class VideoCache(FeatureCache):
    """Content-keyed .npz files of R3D-18 vectors: key = sha256(video_version + clip sha256)."""

    def __init__(self, encoder: encoders.VideoEncoder, root: str | Path | None = None):
        super().__init__(root, video_version(encoder))

    def load(self, digest: str) -> np.ndarray | None:
        z = self.read(digest, ("video",))
        return None if z is None else z["video"].astype(np.float32)

    def store(self, digest: str, vector: np.ndarray) -> None:
        self.write(digest, video=vector)


def video_features(clips: dict[str, Path], encoder: encoders.VideoEncoder, root: str | Path | None = None,
                   quiet: bool = False) -> tuple[dict[str, np.ndarray | None], ExtractStats]:
    """{clip name: [512] vector, or None when the clip has no picture}, from the cache when seen.

    Clips that cannot be read are left out and listed in stats.failures (as train.features does).
    R3D-18 uses torch's own threads, so clips are encoded one after another.
    """
    found, stats = cached_features(clips, VideoCache(encoder, root), partial(extract_video, encoder=encoder),
                                   jobs=1, desc="R3D-18 video features", quiet=quiet)
    return {name: vector if vector.size else None for name, vector in found.items()}, stats
