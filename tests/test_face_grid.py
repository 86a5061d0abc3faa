"""Faces found on a time grid while Whisper transcribes (core.face_grid)."""

from __future__ import annotations

import numpy as np

from core import encoders, face_grid, media, pipeline


def test_grid_covers_the_file_and_each_utterance_picks_its_nearest_frames():
    times = face_grid.grid_times(10.0, step=0.5)
    assert len(times) == 20 and times[0] == 0.25 and times[-1] == 9.75
    grid = face_grid.FaceGrid(np.asarray(times), [None] * len(times))
    long = grid.frames_for(1.0, 7.0)                 # 6 instants, 1 s apart: 6 distinct frames
    assert len(long) == encoders.FACE_FRAMES and times[long[0]] < 2.0 and times[long[-1]] > 6.0
    short = grid.frames_for(3.1, 3.5)                # shorter than a grid step: the one frame inside
    assert [times[i] for i in short] == [3.25]
    assert face_grid.grid_times(0.0) == [] and face_grid.FaceGrid(np.zeros(0), []).frames_for(0, 1) == []



def test_training_clips_pool_the_frames_the_app_would():
    """train.features reads a clip's faces at the grid instants the app pools for an utterance."""
    assert face_grid.pooled_times(0.0, 1.0, 1.0) == [0.25, 0.75]                 # a 1-s clip: 2 frames
    long = face_grid.pooled_times(0.0, 6.0, 6.0)
    assert len(long) == encoders.FACE_FRAMES and long[0] < 1.0 and long[-1] > 5.0


def test_grid_finds_the_face_and_pools_it_like_the_per_utterance_path(talking_video):
    info = media.probe(talking_video)
    job = face_grid.start(talking_video, info, pipeline.FRAME_SIDE)
    grid = job.result()
    assert len(grid.crops) == len(face_grid.grid_times(info.duration))
    assert all(c is not None and c.shape == (64, 64) for c in grid.crops)     # the face is in every frame
    crops, seen = grid.crops_for(0.5, 3.5)
    from_grid = encoders.encode_face_crops(crops, seen)
    direct = encoders.encode_faces(media.read_frames(talking_video, encoders.sample_times(0.5, 3.5, 6),
                                                     max_side=pipeline.FRAME_SIDE))
    assert from_grid.present and from_grid.frames_with_face == seen >= 4   # 3 s at one frame per 0.75 s
    assert np.argmax(from_grid.emotion_probs) == np.argmax(direct.emotion_probs)
    assert np.abs(from_grid.vector - direct.vector).max() < 0.05          # same still face, same features


def test_the_face_net_run_in_the_background_gives_what_it_gives_after_the_transcript(talking_video):
    """With `classify`, the grid thread runs the face net on each frame's crop; an utterance's face
    input is then the mean of its frames' outputs, the same as the net run on its crops afterwards."""
    info = media.probe(talking_video)
    grid = face_grid.start(talking_video, info, pipeline.FRAME_SIDE, classify="cpu").result()
    assert grid.probs.shape == (len(grid.crops), 7) and grid.feats.shape[0] == len(grid.crops)
    for start, end in ((0.5, 3.5), (0.1, 0.4), (2.0, 4.9)):
        after = encoders.encode_face_crops(*grid.crops_for(start, end))
        before = grid.features_for(start, end)
        assert before.present and (before.frames_with_face, before.frames_seen) == (after.frames_with_face,
                                                                                    after.frames_seen)
        assert np.abs(before.vector - after.vector).max() < 1e-4       # batch order only
    # no face in a frame: that frame counts as seen, not as a face
    grid.crops[0] = None
    first = grid.features_for(0.0, 0.5)
    assert (first.present, first.frames_with_face, first.frames_seen) == (False, 0, 1)


def test_a_failing_face_net_in_the_background_leaves_it_to_the_per_utterance_path(talking_video, monkeypatch):
    # Failure injection (a mock): the face net cannot load in the grid thread.
    def missing(*args, **kwargs):
        raise FileNotFoundError("face-expression weights not found: simulated")
    monkeypatch.setattr(face_grid, "load_face_net", missing)
    info = media.probe(talking_video)
    grid = face_grid.start(talking_video, info, pipeline.FRAME_SIDE, classify="cpu").result()
    assert grid.probs is None and all(c is not None for c in grid.crops)


def test_a_cancelled_grid_stops_and_long_files_skip_it(talking_video):
    info = media.probe(talking_video)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool:     # a thread of its own: the grid lowers its thread's priority
        assert pool.submit(face_grid.detect_on_grid, talking_video, info.duration, 320,
                           stop=_set_event()).result() is None
    long = media.MediaInfo(**{**info.__dict__, "duration": face_grid.GRID_MAX_SECONDS + 1})
    assert face_grid.start(talking_video, long, 320) is None
    no_picture = media.MediaInfo(**{**info.__dict__, "has_video": False})
    assert face_grid.start(talking_video, no_picture, 320) is None


def test_when_the_grid_fails_faces_are_read_per_utterance(talking_video, models, monkeypatch):
    # Failure injection (a mock): the background grid cannot read the frames.
    def broken(*args, **kwargs):
        raise media.MediaError("simulated unreadable frames")
    monkeypatch.setattr(face_grid, "detect_on_grid", broken)
    result = pipeline.analyze(talking_video, models, use_cache=False)
    assert len(result.utterances) == 3 and "face_grid" not in result.timings
    assert all(p.opinion("face").present and p.error == "" for p in result.utterances)


def _set_event():
    import threading
    event = threading.Event()
    event.set()
    return event


def _scene(small_at=(20, 40), big_at=None):
    """A 640x360 frame with the astronaut's face (skimage, public domain), and a larger copy of it."""
    import cv2
    from skimage import data
    astronaut = data.astronaut()
    canvas = np.full((360, 640, 3), 90, np.uint8)
    y, x = small_at
    canvas[y:y + 280, x:x + 280] = cv2.resize(astronaut, (280, 280))
    if big_at is not None:
        y, x = big_at
        canvas[y:y + 360, x:x + 360] = cv2.resize(astronaut, (360, 360))
    return canvas


def test_tracked_faces_are_the_largest_face_of_each_frame_for_less(monkeypatch):
    """Between whole-frame searches the grid looks near the last face only: a still face gives the
    crops of a whole-frame search exactly, a moving one is followed, and a larger face that comes
    in elsewhere is taken at the next whole-frame search."""
    from core.face import detect_faces, largest_face_crop
    searched: list[tuple[int, int]] = []

    def counting(image, *args, **kwargs):
        searched.append(image.shape[:2])
        return detect_faces(image, *args, **kwargs)
    monkeypatch.setattr(face_grid, "detect_faces", counting)

    still = [_scene()] * 8
    track = face_grid.FaceTrack()
    crops = [track.crop(f) for f in still]
    expected = largest_face_crop(still[0])
    assert expected is not None and all(c is not None and np.array_equal(c, expected) for c in crops)
    whole = [s for s in searched if s == (360, 640)]
    assert len(whole) == 8 // face_grid.FULL_EVERY                         # the others: near the face
    assert all(s[0] * s[1] < 0.5 * 180 * 320 for s in searched if s != (360, 640))

    moving = [_scene(small_at=(20, 40 + 25 * i)) for i in range(6)]       # 25 px a frame
    track = face_grid.FaceTrack()
    assert all(track.crop(f) is not None for f in moving)
    first = track_boxes(moving[:1])[0]
    assert all(np.abs(np.asarray(b[:2]) - (first[0] + 25 * i, first[1])).max() <= 6    # on the face each time
               for i, b in enumerate(track_boxes(moving)))

    arrives = [_scene()] * 5 + [_scene(big_at=(0, 280))] * 6
    track = face_grid.FaceTrack()
    crops = [track.crop(f) for f in arrives]
    big = largest_face_crop(arrives[-1])
    first_whole_after = -(-5 // face_grid.FULL_EVERY) * face_grid.FULL_EVERY
    assert all(np.array_equal(c, big) for c in crops[first_whole_after:])
    assert not any(np.array_equal(c, big) for c in crops[:5])


def track_boxes(frames):
    from core.face import to_gray
    track = face_grid.FaceTrack()
    return [track.boxes(to_gray(f))[0] for f in frames]


def test_the_grid_yields_while_whisper_works_and_not_once_it_is_waited_for(talking_video, monkeypatch):
    """The grid thread runs at the lowest priority; when the pipeline waits for it, it gets the
    waiting thread's priority back (on a busy machine it would otherwise starve behind other
    processes). Linux lets only a privileged process raise a priority."""
    import os
    import threading
    import time

    import pytest
    gate, real = threading.Event(), media.read_frames

    def held(*args, **kwargs):              # hold the grid at its first frames until the test looks
        gate.wait(30)
        return real(*args, **kwargs)
    monkeypatch.setattr(face_grid.media, "read_frames", held)
    job = face_grid.start(talking_video, media.probe(talking_video), 320)
    for _ in range(300):
        if job.running:
            break
        time.sleep(0.01)
    tid = job.running[0]
    assert os.getpriority(os.PRIO_PROCESS, tid) == face_grid.GRID_NICE
    # the idle policy only where it can be undone
    idle = os.SCHED_IDLE if face_grid.can_raise_priority() else os.SCHED_OTHER
    assert os.sched_getscheduler(tid) == idle
    waiter = threading.Thread(target=job.result)
    waiter.start()
    own = os.getpriority(os.PRIO_PROCESS, 0)

    def back() -> bool:
        return os.getpriority(os.PRIO_PROCESS, tid) == own and os.sched_getscheduler(tid) == os.SCHED_OTHER
    for _ in range(300):
        if back():
            break
        time.sleep(0.01)
    restored = back()
    gate.set()
    waiter.join(60)
    assert job.result() is not None and not job.running
    if os.geteuid() != 0 and not restored:
        pytest.skip("not privileged: Linux does not let this process raise a thread's priority")
    assert restored



def test_the_processes_a_thread_started_are_found_to_hurry_them_too():
    """GridJob.hurry also raises the ffmpeg the grid thread is reading from (Linux /proc)."""
    import os
    import subprocess
    import sys
    import threading
    import time

    import pytest
    found: list = []

    def start_one():
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
        found.append((threading.get_native_id(), child))
        done.wait(10)
    done = threading.Event()
    worker = threading.Thread(target=start_one)
    worker.start()
    while not found:
        time.sleep(0.01)
    tid, child = found[0]
    try:
        children = face_grid._children(tid)
    finally:
        done.set()
        child.kill()
        child.wait()
        worker.join()
    if not children and not os.path.exists(f"/proc/{os.getpid()}/task/{tid}"):
        pytest.skip("no Linux /proc here")
    assert child.pid in children


def test_the_idle_policy_is_taken_only_where_it_can_be_given_back(monkeypatch):
    """Unprivileged, a SCHED_IDLE thread could never be hurried (Linux refuses to leave the policy
    without RLIMIT_NICE), so there the grid thread only lowers its nice value."""
    import os
    import threading

    seen = {}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "an earlier test left this thread idle"

    def lowered(key):
        face_grid._lower_priority()
        tid = threading.get_native_id()
        seen[key] = (os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid))

    for allowed in (False, True):
        monkeypatch.setattr(face_grid, "can_raise_priority", lambda allowed=allowed: allowed)
        t = threading.Thread(target=lowered, args=(allowed,))
        t.start()
        t.join(10)
    assert seen[False] == (os.SCHED_OTHER, face_grid.GRID_NICE)
    assert seen[True] == (os.SCHED_IDLE, face_grid.GRID_NICE)
