"""One encoder per modality, each turning an utterance into model inputs.

text  - core.text: a sentence encoder (the shipped model: all-mpnet-base-v2 with a LoRA update),
        mean-pooled over the utterance's own tokens, reading the utterances around it as a
        second segment so attention sees the dialogue;
face  - core.face: Haar face detection + the FER2013 mini-Xception, pooled over frames sampled
        across the whole utterance (7 probabilities + a 128-d feature);
audio - core.voice: Whisper's encoder states over the utterance, mean and std pooled (1,024-d);
video - R3D-18 (torchvision), only with real Kinetics weights (a safetensors file offline, or
        torchvision's download online); it refuses to run at random initialisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cache import tensors_digest

SAMPLE_RATE = 16000
AUDIO_DIM = 2 * 512                   # core.voice: mean + std of Whisper base's 512-d encoder states
SILENCE_RMS = 1e-3                    # below this the audio modality is absent
FACE_FRAMES = 6                       # frames sampled across an utterance for the face net
FACE_DIM = 7 + 128                    # FER probabilities + pooled FER feature
VIDEO_FRAMES = 16
VIDEO_SIZE = 112
VIDEO_DIM = 512
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


class EncoderUnavailable(RuntimeError):
    """An encoder cannot run here (weights missing offline); the message says why, in one line."""


# ---------------------------------------------------------------- audio

def audio_is_silent(segment: np.ndarray) -> bool:
    """True when a segment is empty or too quiet to carry a voice."""
    return segment.size == 0 or float(np.sqrt(np.mean(np.square(segment, dtype=np.float64)))) < SILENCE_RMS


# ---------------------------------------------------------------- face

def sample_times(start: float, end: float, count: int) -> list[float]:
    """`count` instants spread evenly across [start, end] (centres of equal slices)."""
    if end <= start or count <= 0:
        return [max(0.0, start)] if count > 0 else []
    step = (end - start) / count
    return [start + step * (i + 0.5) for i in range(count)]


@dataclass
class FaceFeatures:
    """The face modality for one utterance."""

    present: bool
    vector: np.ndarray                 # [FACE_DIM]: 7 FER probabilities (EMOTIONS order) + 128 feature
    emotion_probs: list[float]
    frames_with_face: int
    frames_seen: int


def encode_faces(frames: np.ndarray, device: str = "cpu") -> FaceFeatures:
    """Run the face-expression net (on `device`) on an utterance's frames and pool over time."""
    from .face import analyze_faces, load_face_net
    return face_features(analyze_faces(frames, load_face_net(device=device)))


def encode_face_crops(crops: list[np.ndarray], frames_seen: int, device: str = "cpu") -> FaceFeatures:
    """encode_faces for faces already found and cropped (core.face_grid): one crop per frame with a face."""
    from .face import load_face_net, pool_crops
    return face_features(pool_crops(crops, frames_seen, load_face_net(device=device)))


def face_features(result) -> FaceFeatures:
    """A core.face.FaceResult as the model's face input (emotion probabilities, then the feature)."""
    if not result.present:
        return FaceFeatures(False, np.zeros(FACE_DIM, np.float32), [], 0, result.frames_seen)
    vector = np.concatenate([np.asarray(result.emotion_probs, np.float32),
                             np.asarray(result.feature, np.float32)])
    return FaceFeatures(True, vector, list(result.emotion_probs),
                        result.frames_with_face, result.frames_seen)


# ---------------------------------------------------------------- video (optional)

VIDEO_WEIGHTS_ENV = "WORKBENCH_VIDEO_WEIGHTS"  # a safetensors file of R3D-18 Kinetics-400 weights
VIDEO_ONLINE = "torchvision:KINETICS400_V1"    # torchvision's download (online only)
VIDEO_READ_SIDE = 160                          # frames are read this small, then resized to 112x112


def video_weights_source(requested: str | None = None) -> str:
    """Where R3D-18 weights come from: `requested`, else $WORKBENCH_VIDEO_WEIGHTS, else torchvision."""
    return requested or os.environ.get(VIDEO_WEIGHTS_ENV) or VIDEO_ONLINE


class VideoEncoder(torch.nn.Module):
    """R3D-18 as a frozen clip encoder -> 512-d. Never at random initialisation: it needs
    Kinetics-400 weights, from a safetensors file (offline) or torchvision's download (online).

    `sha256`, when given, must match the weights' digest (core.cache.tensors_digest, the same for
    a safetensors copy and torchvision's download of the same weights): a projection trained on
    one set of R3D features means nothing on another's.
    """

    def __init__(self, weights: str | None = None, sha256: str | None = None):
        super().__init__()
        from torchvision.models.video import R3D_18_Weights, r3d_18
        self.source = weights = video_weights_source(weights)
        if weights == VIDEO_ONLINE:
            try:
                net = r3d_18(weights=R3D_18_Weights.KINETICS400_V1)
            except Exception:
                raise EncoderUnavailable(
                    "the video (R3D-18) encoder needs Kinetics-400 weights: they cannot be downloaded "
                    f"here, so it stays off (give a safetensors copy with ${VIDEO_WEIGHTS_ENV})") from None
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise EncoderUnavailable(f"R3D-18 weights not found at {path}: the video encoder stays off")
            if path.suffix.lower() != ".safetensors":
                raise EncoderUnavailable(f"R3D-18 weights must be a .safetensors file (never a pickle): {path.name}")
            from safetensors.torch import load_file
            net = r3d_18(weights=None)
            try:
                state = load_file(str(path))
                state = {k: v for k, v in state.items() if not k.startswith("fc.")}
                net.load_state_dict(state, strict=False)
                missing = [k for k in net.state_dict() if not k.startswith("fc.") and k not in state]
                if missing:
                    raise ValueError(f"missing tensor {missing[0]}")
            except Exception as err:
                raise EncoderUnavailable(f"R3D-18 weights at {path} do not load: "
                                         f"{str(err).splitlines()[0][:160]}") from None
        net.fc = torch.nn.Identity()
        self.digest = tensors_digest(net.state_dict())
        if sha256 and sha256 != self.digest:
            raise EncoderUnavailable(f"the R3D-18 weights from {weights} are not the ones this checkpoint was "
                                     "trained with (sha256 differs): the video encoder stays off")
        self.net = net.eval().requires_grad_(False)

    def describe(self) -> dict:
        """What a checkpoint card records about the encoder its video branch learned from."""
        return {"name": "r3d_18", "weights": self.source, "sha256": self.digest,
                "frames": VIDEO_FRAMES, "size": VIDEO_SIZE}

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """frames [T, H, W, 3] uint8 RGB sampled across the utterance -> [512] (on the CPU)."""
        device = next(self.net.parameters()).device
        clip = torch.from_numpy(np.ascontiguousarray(frames)).to(device).float().div(255.0).permute(3, 0, 1, 2)
        clip = torch.nn.functional.interpolate(clip, size=(VIDEO_SIZE, VIDEO_SIZE),
                                               mode="bilinear", align_corners=False)
        mean = torch.tensor(KINETICS_MEAN, device=device).view(3, 1, 1, 1)
        std = torch.tensor(KINETICS_STD, device=device).view(3, 1, 1, 1)
        clip = ((clip - mean) / std).unsqueeze(0)
        return self.net(clip)[0].float().cpu()
