"""Find faces while Whisper listens: face detection on a time grid, in a background thread.

Whisper's decoding runs on one CPU thread, so on a 2-core machine one core idles during it. The
face stage needs frames, and the frames it needs depend on the utterances Whisper has not found
yet. So the pipeline reads a frame every GRID_STEP seconds of the video and runs the Haar
detector on it (OpenCV, which releases the GIL) while Whisper works. When the transcript is ready,
each utterance takes the grid frames nearest to the FACE_FRAMES instants it would have sampled
(encoders.sample_times), so a long utterance still pools 6 frames spread across it and a short
one the 1 to 3 frames it spans. The face net runs in the background too, on every grid frame's
crop once all are found (CLASSIFY_BATCH at a time), so after the transcript an utterance's face is
only the mean of its frames' outputs, as core.face.pool_crops would compute it. Training reads a
clip's faces at the same instants (pooled_times, used by train.features).

Files longer than GRID_MAX_SECONDS are analysed the old way (frames read per utterance after the
transcript): a grid over an hour would read far more frames than the utterances need.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import encoders, media
from .face import DETECT_MAX_SIDE, classify_crops, crop_face, detect_faces, load_face_net, pool_classified, to_gray

log = logging.getLogger(__name__)

GRID_STEP = 0.75             # seconds between grid frames (4 every 3 s)
GRID_MAX_SECONDS = 300.0     # longer files: per-utterance frames after the transcript
GRID_FRAMES_PER_CALL = 64    # frames per ffmpeg call (about 25 MB at 480x270)
GRID_NICE = 19               # the grid thread's priority while Whisper works (GridJob.hurry after)
FULL_EVERY = 4               # a whole-frame detection every 4th grid frame (3 s); between them, near the last face
NEAR = 1.0                   # "near": the last face's box grown by this many of its sides each way
KEEP_IOU = 0.7               # a face found near the last one and overlapping it this much keeps its box
AS_LARGE = 0.8               # a whole-frame search while a face is tracked looks for faces this large or larger
CLASSIFY_BATCH = 8           # crops per face-net call (per crop, batches of 6-8 are 3x faster than 83 at once)


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
    probs: np.ndarray | None = None      # [N, 7] the face net's probabilities (FER order) per frame, or None
    feats: np.ndarray | None = None      # [N, 128] its features (rows without a face: zeros)

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

    def features_for(self, start: float, end: float) -> encoders.FaceFeatures:
        """One utterance's face input from the outputs computed in the background (`probs` must be
        set): the mean over its frames with a face, what encode_face_crops gives for crops_for."""
        picked = self.frames_for(start, end)
        rows = [i for i in picked if self.crops[i] is not None]
        return encoders.face_features(pool_classified(self.probs[rows], self.feats[rows], len(picked)))


def classify_grid(crops: list[np.ndarray | None], device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The face net on every crop (CLASSIFY_BATCH at a time): (probabilities [N, 7], features
    [N, 128]), zeros where there is no face."""
    net = load_face_net(device=device)
    present = [i for i, c in enumerate(crops) if c is not None]
    probs, feats = np.zeros((len(crops), 7), np.float32), None
    for first in range(0, len(present), CLASSIFY_BATCH):
        rows = present[first:first + CLASSIFY_BATCH]
        p, f = classify_crops(np.stack([crops[i] for i in rows]), net)
        if feats is None:
            feats = np.zeros((len(crops), f.shape[1]), np.float32)
        probs[rows], feats[rows] = p, f
    return probs, feats if feats is not None else np.zeros((len(crops), 0), np.float32)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int] | None) -> float:
    """Intersection over union of two (x, y, w, h) boxes (0 when `b` is None)."""
    if b is None:
        return 0.0
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0, w) * max(0, h)
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter) if inter else 0.0


class FaceTrack:
    """The largest face's crop in each of a sequence of frames (core.face.largest_face_crop, frame by
    frame), found for less: Haar detection over the whole frame costs about 27 ms at 320 px on one
    core, so every FULL_EVERY-th frame (and any frame after one without a face) is searched whole,
    and the frames between only near the last face (its box grown by NEAR sides each way, at the
    same detection scale), falling back to the whole frame when no face is there; a face found
    there that overlaps the last box by KEEP_IOU keeps that box (a search in a smaller image lands
    a pixel or two off the whole frame's, and a still face must give the same crop). A larger face
    that appears elsewhere is found at the next whole-frame search, at most FULL_EVERY - 1 frames
    later. That search, while a face is tracked, only looks for faces at least AS_LARGE times its
    size (the small sizes are most of a search's cost, and a smaller face would not be the largest);
    when it finds none, the whole frame is searched at every size."""

    def __init__(self, full_every: int = FULL_EVERY):
        self.full_every, self.seen, self.last = max(1, full_every), 0, None

    def boxes(self, gray: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face boxes (x, y, w, h, full-size pixels, largest first) in one gray frame."""
        h, w = gray.shape
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w, 1))
        near = self.last is not None and self.seen % self.full_every != 0
        self.seen += 1
        found = []
        if near:
            x, y, bw, bh = (v * scale for v in self.last)
            grow = NEAR * max(bw, bh)
            x0, y0 = max(0, int(x - grow)), max(0, int(y - grow))
            x1, y1 = min(int(round(w * scale)), int(x + bw + grow) + 1), min(int(round(h * scale)), int(y + bh + grow) + 1)
            small = gray if scale == 1.0 else cv2.resize(
                gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
            roi = small[y0:y1, x0:x1]
            if roi.size:
                found = [(int(round((bx + x0) / scale)), int(round((by + y0) / scale)),
                          int(round(bw_ / scale)), int(round(bh_ / scale)))
                         for bx, by, bw_, bh_ in detect_faces(roi, max_side=max(roi.shape))]
        elif self.last is not None:    # the periodic whole-frame search: the tracked face or a larger one
            found = detect_faces(gray, min_size=int(AS_LARGE * min(self.last[2:]) * scale))
        if found and _iou(found[0], self.last) >= KEEP_IOU:
            found[0] = self.last       # the same face: its box, not a search's jitter of a pixel or two
        if not found:
            found = detect_faces(gray)
        self.last = found[0] if found else None
        return found

    def crop(self, frame: np.ndarray) -> np.ndarray | None:
        """The net's input for the largest face in an RGB (or gray) frame, or None."""
        gray = to_gray(np.asarray(frame))
        found = self.boxes(gray)
        return crop_face(gray, found[0]) if found else None


def detect_on_grid(path: str | Path, duration: float, side: int,
                   stop: threading.Event | None = None, running: list[int] | None = None,
                   classify: str | None = None) -> FaceGrid | None:
    """Read a frame every GRID_STEP seconds (at most `side` pixels) and find the largest face in each;
    with `classify` (a device), run the face net on the crops too (FaceGrid.probs, .feats).

    OpenCV and the face net run on one thread meanwhile: this is meant for the core Whisper's
    decoder leaves idle. Returns None when `stop` is set (checked between chunks of frames). Raises
    media.MediaError when the frames cannot be read; a face net that fails leaves `probs` None
    (the pipeline then runs it after the transcript, where the failure is reported per utterance).
    """
    t0 = time.perf_counter()
    if running is not None:          # GridJob.result() gives this thread its priority back
        running.append(threading.get_native_id())
    _lower_priority()
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        times = grid_times(duration)
        crops: list[np.ndarray | None] = []
        track = FaceTrack()
        for first in range(0, len(times), GRID_FRAMES_PER_CALL):
            if stop is not None and stop.is_set():
                return None
            frames = media.read_frames(path, times[first:first + GRID_FRAMES_PER_CALL], max_side=side,
                                      skip_b_frames=True)    # a frame 0.1 s early is as good here
            crops.extend(track.crop(f) for f in frames)
        probs = feats = None
        if classify is not None:
            try:
                probs, feats = classify_grid(crops, device=classify)
            except Exception as err:      # noqa: BLE001 (missing weights, ...: see the docstring)
                log.warning("face net on the grid failed (%s); it runs per utterance instead", err)
        return FaceGrid(np.asarray(times, np.float64), crops, time.perf_counter() - t0, probs, feats)
    finally:
        if running is not None:
            running.clear()
        cv2.setNumThreads(before)


def _lower_priority() -> None:
    """Make the calling thread (and the ffmpeg it starts) yield to Whisper: it should only use a
    core Whisper leaves idle. Linux nice values are per thread; elsewhere this does nothing.

    Where the process may raise priorities again (GridJob.hurry: root, or RLIMIT_NICE), the thread
    also takes Linux's SCHED_IDLE policy: a woken Whisper thread then preempts it at once, where at
    nice 19 it waited out the grid's time slice (the benchmark video: transcript 2.9 -> 2.6 s, the
    whole analysis 3.6 -> 3.4 s). Elsewhere only the nice value: a SCHED_IDLE thread could not be
    hurried, and would starve behind other processes on a busy machine."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, GRID_NICE)
        if can_raise_priority():
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        pass


def can_raise_priority() -> bool:
    """True where this process may give a thread a higher priority again (Linux: root, or an
    RLIMIT_NICE that allows nice 0)."""
    try:
        import resource
        limit = resource.getrlimit(resource.RLIMIT_NICE)[0]
        return os.geteuid() == 0 or limit == resource.RLIM_INFINITY or limit >= 20
    except (ImportError, AttributeError, OSError, ValueError):
        return False


def _children(tid: int) -> list[int]:
    """The processes a thread of this process started (Linux /proc; elsewhere none)."""
    try:
        with open(f"/proc/{os.getpid()}/task/{tid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


@dataclass
class GridJob:
    """detect_on_grid running in the background: result() waits for it, cancel() stops it early."""

    future: Future
    stop: threading.Event = field(default_factory=threading.Event)
    running: list[int] = field(default_factory=list)     # the grid thread's id while it works

    def hurry(self) -> None:
        """From now on the grid (and the ffmpeg reading its frames) runs at the calling thread's
        priority, where the system allows: result() hurries it, since nothing is left for it to yield
        to; at the lowest priority it would starve behind other processes on a busy machine. (Hurried
        as soon as Whisper's encoder is done, it took CPU from the decoder instead: no faster.)"""
        for tid in list(self.running):
            for thread in [tid] + _children(tid):       # and the ffmpeg reading its frames
                try:
                    if os.sched_getscheduler(thread) == os.SCHED_IDLE:
                        os.sched_setscheduler(thread, os.SCHED_OTHER, os.sched_param(0))
                    os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, 0))
                except (AttributeError, OSError):
                    pass              # raising a priority needs CAP_SYS_NICE (or RLIMIT_NICE) on Linux

    def result(self) -> FaceGrid | None:
        """The grid, once done (hurried meanwhile)."""
        self.hurry()
        return self.future.result()

    def cancel(self) -> None:
        self.stop.set()


def start(path: str | Path, info: media.MediaInfo, side: int, classify: str | None = None) -> GridJob | None:
    """Start detect_on_grid in a background thread (None when the grid is not used for this file);
    `classify`: the device to run the face net on there too (None: not in the background)."""
    if not info.has_video or not info.duration or info.duration > GRID_MAX_SECONDS:
        return None
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="face-grid")
    running: list[int] = []
    future = pool.submit(detect_on_grid, path, float(info.duration), side, stop, running, classify)
    pool.shutdown(wait=False)
    return GridJob(future, stop, running)
