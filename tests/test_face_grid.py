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


def test_a_cancelled_grid_stops_and_long_files_skip_it(talking_video):
    info = media.probe(talking_video)
    assert face_grid.detect_on_grid(talking_video, info.duration, 320, stop=_set_event()) is None
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
