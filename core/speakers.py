"""Who speaks when: a speaker embedding per utterance, grouped into suggested speakers.

MELD rows name their speaker, and an annotator corrects speakers with the labels; the app
suggests them ("Speaker 1", "Speaker 2", ... in order of first appearance) so that they are
corrected, not typed. The embedding is Resemblyzer's pretrained GE2E speaker encoder (Apache-2.0,
Corentin Jemine; the weights ship in its PyPI wheel and are kept here as safetensors by
tools/convert_speaker_weights.py): a 3-layer LSTM over 40-band mel power frames (25-ms window,
10-ms hop) of audio levelled up to -30 dBFS, run on 1.6-s partials of the utterance (1.3 a
second), their outputs averaged and L2-normed. Utterances are then grouped by average-linkage
clustering on cosine distance, cut at THRESHOLD (chosen on conversations built from RAVDESS actors
09-22; README, "Who speaks"). Utterances shorter than MIN_SECONDS get the speaker of the most
similar longer one; a file of one speaker gets one name.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16000
WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "speaker" / "resemblyzer_ge2e.safetensors"
N_MELS, N_FFT, HOP = 40, 400, 160      # 25-ms window, 10-ms hop
PARTIAL_FRAMES = 160                   # 1.6 s per partial
PARTIALS_PER_SECOND = 1.3
MIN_COVERAGE = 0.75                    # a last partial needs this share of real audio
TARGET_DBFS = -30.0                    # quieter audio is raised to this RMS level (never lowered)
THRESHOLD = 0.40                       # cosine distance at which two groups stay apart
MIN_SECONDS = 0.7                      # shorter utterances join the nearest group, never found one
NAME = "Speaker {}"
BATCH = 256                            # partials per LSTM call


class SpeakerEncoder(nn.Module):
    """GE2E: LSTM(40 -> 256, 3 layers), the last layer's final state through Linear + ReLU, L2-normed."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:      # [B, frames, 40] -> [B, 256]
        _, (hidden, _) = self.lstm(mels)
        out = torch.relu(self.linear(hidden[-1]))
        return out / out.norm(dim=1, keepdim=True).clamp_min(1e-9)


@lru_cache(maxsize=1)
def load_encoder(path: str = str(WEIGHTS)) -> SpeakerEncoder:
    """The packaged encoder (safetensors only), loaded once per process, in eval mode."""
    from safetensors.torch import load_file
    model = SpeakerEncoder()
    model.load_state_dict(load_file(path))
    return model.eval()


@lru_cache(maxsize=1)
def _mel_basis() -> torch.Tensor:
    import torchaudio
    return torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE,
                                                 norm="slaney", mel_scale="slaney")


def mel_frames(audio: np.ndarray) -> torch.Tensor:
    """Mel power frames [frames, 40] as the encoder learned them (librosa's melspectrogram)."""
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True, pad_mode="reflect",
                      return_complex=True).abs() ** 2
    return (spec.T @ _mel_basis()).float()


def _levelled(audio: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    if rms <= 1e-6:
        return audio
    gain = 10 ** ((TARGET_DBFS - 20 * np.log10(rms)) / 20)
    return audio * gain if gain > 1 else audio


def partial_starts(n_frames: int) -> list[int]:
    """First frames of the 1.6-s partials covering n_frames (always at least one)."""
    step = max(1, int(round(SAMPLE_RATE / PARTIALS_PER_SECOND / HOP)))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    if len(starts) > 1 and (n_frames - starts[-1]) / PARTIAL_FRAMES < MIN_COVERAGE:
        starts.pop()
    return starts


def _partials(audio: np.ndarray) -> torch.Tensor:
    """The 1.6-s partials [P, 160, 40] of one stretch of speech (the last one zero-padded)."""
    mels = mel_frames(_levelled(np.asarray(audio, dtype=np.float32)))
    starts = partial_starts(len(mels))
    need = starts[-1] + PARTIAL_FRAMES
    if len(mels) < need:
        mels = torch.cat([mels, torch.zeros(need - len(mels), N_MELS)])
    return torch.stack([mels[s:s + PARTIAL_FRAMES] for s in starts])


@torch.no_grad()
def embed_many(pieces: list[np.ndarray], encoder: SpeakerEncoder | None = None,
               batch: int = BATCH) -> np.ndarray:
    """Speaker embeddings [N, 256] (unit length) of N stretches of 16-kHz speech: every partial of
    every stretch goes through the LSTM in shared batches, then each stretch's are averaged."""
    encoder = encoder or load_encoder()
    partials = [_partials(p) for p in pieces]
    flat = torch.cat(partials)
    out = torch.cat([encoder(flat[i:i + batch]) for i in range(0, len(flat), batch)])
    means = torch.stack([chunk.mean(0) for chunk in out.split([len(p) for p in partials])])
    return (means / means.norm(dim=1, keepdim=True).clamp_min(1e-9)).numpy()


def embed(audio: np.ndarray, encoder: SpeakerEncoder | None = None) -> np.ndarray:
    """The speaker embedding (256-d, unit length) of one stretch of 16-kHz speech."""
    return embed_many([audio], encoder)[0]


def group(embeddings: np.ndarray, durations: list[float], threshold: float = THRESHOLD) -> list[int]:
    """Group index (0, 1, ... in order of first appearance) of each row of `embeddings` [N, d]:
    average-linkage clusters of the utterances of MIN_SECONDS or more, cut at `threshold` cosine
    distance; a shorter utterance takes the group of its most similar long one."""
    n = len(embeddings)
    if n == 0:
        return []
    long = [i for i in range(n) if durations[i] >= MIN_SECONDS] or list(range(n))
    labels = np.zeros(n, dtype=int)
    if len(long) > 1:
        from scipy.cluster.hierarchy import fcluster, linkage
        tree = linkage(embeddings[long], method="average", metric="cosine")
        labels[long] = fcluster(tree, t=threshold, criterion="distance")
    else:
        labels[long] = 1
    for i in set(range(n)) - set(long):
        labels[i] = labels[long[int(np.argmax(embeddings[long] @ embeddings[i]))]]
    order: dict[int, int] = {}
    return [order.setdefault(int(label), len(order)) for label in labels]


def name_speakers(audio: np.ndarray, spans: list[tuple[float, float]],
                  threshold: float = THRESHOLD) -> list[str]:
    """A suggested speaker name for each (start, end) span of `audio` (16 kHz): "Speaker 1", ..."""
    if not spans:
        return []
    pieces = [audio[int(a * SAMPLE_RATE):max(int(a * SAMPLE_RATE) + 1, int(b * SAMPLE_RATE))] for a, b in spans]
    embeddings = embed_many(pieces)
    groups = group(embeddings, [b - a for a, b in spans], threshold)
    return [NAME.format(g + 1) for g in groups]
