"""Find faces while Whisper listens: face detection on a time grid, in a background thread.

Whisper's decoding runs on one CPU thread, so on a 2-core machine one core idles during it. The
face stage needs frames, and the frames it needs depend on the utterances Whisper has not found
yet. So the pipeline reads a frame every GRID_STEP seconds of the video and runs the Haar
detector on it (OpenCV, which releases the GIL) while Whisper works. When the transcript is ready,
each utterance takes the grid frames nearest to the FACE_FRAMES instants it would have sampled
(encoders.sample_times), so a long utterance still pools 6 frames spread across it and a short
one the 1 to 3 frames it spans; the face net then runs on those crops. Training reads a clip's
faces at the same instants (pooled_times, used by train.features).

Files longer than GRID_MAX_SECONDS are analysed the old way (frames read per utterance after the
transcript): a grid over an hour would read far more frames than the utterances need.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import encoders, media
from .face import largest_face_crop

GRID_STEP = 0.75             # seconds between grid frames (4 every 3 s)
GRID_MAX_SECONDS = 300.0     # longer files: per-utterance frames after the transcript
GRID_FRAMES_PER_CALL = 64    # frames per ffmpeg call (about 25 MB at 480x270)
GRID_NICE = 19               # the grid thread's priority: it takes only CPU time nobody else wants


def grid_times(duration: float, step: float = GRID_STEP) -> list[float]:
    """Instants at the centres of `step`-long slices of [0, duration]."""
    if duration <= 0:
        return []
    return encoders.sample_times(0.0, duration, max(1, int(np.ceil(duration / step))))


def pooled_times(start: float, end: float, duration: float) -> list[float]:
    """The grid instants an utterance [start, end] of a `duration`-long file pools (FaceGrid.frames_for)."""
    times = grid_times(duration)
    grid = FaceGrid(np.asarray(times, np.float64), [None] * len(times))
    return [times[i] for i in grid.frames_for(start, end)]


@dataclass
class FaceGrid:
    """The largest face's crop (or None) at each grid instant."""

    times: np.ndarray                    # [N] seconds
    crops: list[np.ndarray | None]       # [N]: the face net's 64x64 input, or None: no face
    seconds: float = 0.0                 # wall time spent reading and detecting (in the background)

    def frames_for(self, start: float, end: float, count: int = encoders.FACE_FRAMES) -> list[int]:
        """Distinct grid indices nearest to the `count` instants sampled across [start, end]."""
        if len(self.times) == 0:
            return []
        wanted = encoders.sample_times(start, end, count)
        picked = np.abs(self.times[None, :] - np.asarray(wanted)[:, None]).argmin(axis=1)
        return sorted(set(int(i) for i in picked))

    def crops_for(self, start: float, end: float) -> tuple[list[np.ndarray], int]:
        """(crops of the frames with a face, frames looked at) for one utterance."""
        picked = self.frames_for(start, end)
        return [self.crops[i] for i in picked if self.crops[i] is not None], len(picked)


def detect_on_grid(path: str | Path, duration: float, side: int,
                   stop: threading.Event | None = None) -> FaceGrid | None:
    """Read a frame every GRID_STEP seconds (at most `side` pixels) and find the largest face in each.

    OpenCV runs on one thread meanwhile: this is meant for the core Whisper's decoder leaves idle.
    Returns None when `stop` is set (checked between chunks of frames). Raises media.MediaError
    when the frames cannot be read.
    """
    t0 = time.perf_counter()
    _lower_priority()
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        times = grid_times(duration)
        crops: list[np.ndarray | None] = []
        for first in range(0, len(times), GRID_FRAMES_PER_CALL):
            if stop is not None and stop.is_set():
                return None
            frames = media.read_frames(path, times[first:first + GRID_FRAMES_PER_CALL], max_side=side)
            crops.extend(largest_face_crop(f) for f in frames)
        return FaceGrid(np.asarray(times, np.float64), crops, time.perf_counter() - t0)
    finally:
        cv2.setNumThreads(before)


def _lower_priority() -> None:
    """Make the calling thread (and the ffmpeg it starts) yield to Whisper: it should only use a
    core Whisper leaves idle. Linux nice values are per thread; elsewhere this does nothing."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), GRID_NICE)
    except (AttributeError, OSError):
        pass


@dataclass
class GridJob:
    """detect_on_grid running in the background: result() waits for it, cancel() stops it early."""

    future: Future
    stop: threading.Event = field(default_factory=threading.Event)

    def result(self) -> FaceGrid | None:
        return self.future.result()

    def cancel(self) -> None:
        self.stop.set()


def start(path: str | Path, info: media.MediaInfo, side: int) -> GridJob | None:
    """Start detect_on_grid in a background thread (None when the grid is not used for this file)."""
    if not info.has_video or not info.duration or info.duration > GRID_MAX_SECONDS:
        return None
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="face-grid")
    future = pool.submit(detect_on_grid, path, float(info.duration), side, stop)
    pool.shutdown(wait=False)
    return GridJob(future, stop)
