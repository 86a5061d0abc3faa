"""Whisper on windows cut in the pauses, decoded together: one encoder pass per window, no re-seeking.

openai-whisper's own loop slides a 30-s window along the audio: a window that ends mid-sentence is
decoded again from its last timestamp, and word timestamps run the encoder a second time. Here the
speech is cut in its pauses into windows of at most 30 s, the encoder runs once per window (a few
windows per batch), the greedy decoder steps through the whole batch at once, and the word
alignment reuses the encoder's output. A window whose text looks wrong (too repetitive or too
improbable) is decoded again by sampling at rising temperatures, as openai-whisper does. The
segments come back in openai-whisper's format ("seek", "start", "end", "text", "tokens", "words",
"avg_logprob", "no_speech_prob", ...), times in seconds from the start of the audio.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass

import numpy as np
import torch

from .threads import one_cpu_thread

SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100           # Whisper's mel hop is 10 ms
WINDOW_SECONDS = 30.0             # the encoder always sees 30 s
EDGE_SECONDS = 2.0                # windows end this far inside 30 s: Whisper drops a sentence ending at 29.5 s
HARD_CUT_SEARCH = 5.0             # speech with no pause for 30 s is cut at its quietest 10 ms in the last 5 s
BATCH_CPU = 4                     # windows per encoder/decoder batch (memory grows with it)
BATCH_CUDA = 16
COMPRESSION_RATIO_THRESHOLD = 2.4   # openai-whisper's defaults for retrying a window
LOGPROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6


@dataclass
class Window:
    """A stretch of audio decoded as one Whisper window (seconds; end - start <= 30)."""

    start: float
    end: float

    @property
    def first_frame(self) -> int:
        return int(round(self.start * FRAMES_PER_SECOND))

    @property
    def frames(self) -> int:
        return max(1, int(round(self.end * FRAMES_PER_SECOND)) - self.first_frame)


def plan_windows(spans: list[tuple[float, float]], regions: list[tuple[float, float]],
                 audio: np.ndarray, limit: float = WINDOW_SECONDS - EDGE_SECONDS) -> list[Window]:
    """Cut each span (speech with its padding) into windows of at most `limit` seconds.

    Cuts fall in the middle of the pause between two speech regions; a region longer than a
    window (no pause at all) is cut at its quietest point near the window's end.
    """
    windows: list[Window] = []
    for lo, hi in spans:
        inner = [(max(a, lo), min(b, hi)) for a, b in regions if b > lo and a < hi]
        pauses = [(b + a2) / 2.0 for (_, b), (a2, _) in zip(inner, inner[1:])]
        start = lo
        while hi - start > limit:
            target = start + (hi - start) / math.ceil((hi - start) / limit)   # windows of equal length
            fits = [p for p in pauses if start + 1.0 < p <= start + limit]
            cut = (min(fits, key=lambda p: abs(p - target)) if fits
                   else _quietest(audio, start + limit - HARD_CUT_SEARCH, start + limit))
            cut = round(cut, 2)
            windows.append(Window(start, cut))
            start = cut
        windows.append(Window(start, hi))
    return [w for w in windows if w.end - w.start > 0.05]


def _quietest(audio: np.ndarray, lo: float, hi: float) -> float:
    """The start of the quietest 10-ms hop in [lo, hi] seconds."""
    hop = SAMPLE_RATE // FRAMES_PER_SECOND
    a, b = max(0, int(lo * SAMPLE_RATE)) // hop, int(hi * SAMPLE_RATE) // hop
    if b - a < 2:
        return hi
    energy = (audio[a * hop: b * hop].astype(np.float64).reshape(-1, hop) ** 2).mean(axis=1)
    return (a + int(np.argmin(energy))) / FRAMES_PER_SECOND


class _Aligner:
    """Stands in for the model in whisper.timing.find_alignment: reuses the encoder's output."""

    def __init__(self, model):
        self.model, self.dims, self.decoder = model, model.dims, model.decoder
        self.device, self.alignment_heads = model.device, model.alignment_heads

    def __call__(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(tokens, features)


def _decoder_forward(self, x: torch.Tensor, xa: torch.Tensor, kv_cache: dict | None = None) -> torch.Tensor:
    """openai-whisper's TextDecoder.forward with the output projection read from a contiguous copy."""
    offset = next(iter(kv_cache.values())).shape[1] if kv_cache else 0
    x = self.token_embedding(x) + self.positional_embedding[offset: offset + x.shape[-1]]
    x = x.to(xa.dtype)
    for block in self.blocks:
        x = block(x, xa, mask=self.mask, kv_cache=kv_cache)
    x = self.ln(x)
    b, t, d = x.shape
    return torch.mm(x.reshape(b * t, d), self.logits_weight).reshape(b, t, -1).float()


def speed_up_decoder(model) -> None:
    """On CPU, keep the tied output projection transposed and contiguous (about 100 MB for base):
    each decoding step multiplies by it, and the transposed view costs 20-40 % of the step there."""
    decoder = model.decoder
    if model.device.type != "cpu" or hasattr(decoder, "logits_weight"):
        return
    decoder.register_buffer("logits_weight", decoder.token_embedding.weight.detach().t().contiguous(),
                            persistent=False)
    decoder.forward = types.MethodType(_decoder_forward, decoder)


def _needs_retry(result) -> bool:
    """openai-whisper's fallback rule: too repetitive or too improbable, unless it is silence."""
    bad = (result.compression_ratio > COMPRESSION_RATIO_THRESHOLD
           or result.avg_logprob < LOGPROB_THRESHOLD)
    silence = result.no_speech_prob > NO_SPEECH_THRESHOLD and result.avg_logprob < LOGPROB_THRESHOLD
    return bad and not silence


def _decode(model, features: torch.Tensor, language: str, temperatures: tuple[float, ...], fp16: bool):
    """Greedy decoding of a batch of windows, retrying the doubtful ones at each higher temperature."""
    from whisper.decoding import DecodingOptions

    results = model.decode(features, DecodingOptions(language=language, temperature=temperatures[0],
                                                     fp16=fp16))
    for t in temperatures[1:]:
        redo = [i for i, r in enumerate(results) if _needs_retry(r)]
        if not redo:
            break
        again = model.decode(features[redo], DecodingOptions(language=language, temperature=t, fp16=fp16))
        for i, r in zip(redo, again):
            results[i] = r
    return results


def _segments(window: Window, result, tokenizer) -> list[dict]:
    """Split one window's tokens at its timestamp tokens into openai-whisper segment dicts."""
    tokens = list(result.tokens)
    begin, precision = tokenizer.timestamp_begin, 0.02
    stamps = [t >= begin for t in tokens]
    cuts = [i + 1 for i in range(len(tokens) - 1) if stamps[i] and stamps[i + 1]]
    if not cuts or cuts[-1] != len(tokens):
        cuts.append(len(tokens))                 # a last segment without its closing pair
    offset = window.first_frame / FRAMES_PER_SECOND
    segments, last = [], 0
    for cut in cuts:
        piece = tokens[last:cut]
        last = cut
        text_tokens = [t for t in piece if t < tokenizer.eot]
        if not text_tokens:
            continue
        times = [t - begin for t in piece if t >= begin]
        start = offset + (times[0] * precision if times and piece[0] >= begin else 0.0)
        end = offset + (times[-1] * precision if times and piece[-1] >= begin and len(times) > 1
                        else window.frames / FRAMES_PER_SECOND)
        segments.append({"seek": window.first_frame, "start": start, "end": max(end, start),
                         "text": tokenizer.decode(text_tokens), "tokens": piece,
                         "temperature": result.temperature, "avg_logprob": result.avg_logprob,
                         "compression_ratio": result.compression_ratio,
                         "no_speech_prob": result.no_speech_prob})
    return segments


def precision(device_type: str) -> tuple[torch.dtype, int]:
    """(activation dtype, windows per batch) on a device type: fp16 on a GPU, fp32 on the CPU."""
    return (torch.float16, BATCH_CUDA) if device_type == "cuda" else (torch.float32, BATCH_CPU)


@torch.no_grad()
def transcribe_windows(model, audio: np.ndarray, windows: list[Window], language: str | None,
                       temperatures: tuple[float, ...], progress: bool = False) -> dict:
    """Decode every window (batched) with word timestamps -> {"segments": [...], "language": ...}."""
    from tqdm import tqdm
    from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim
    from whisper.timing import add_word_timestamps
    from whisper.tokenizer import get_tokenizer

    cuda = model.device.type == "cuda"
    dtype, size = precision(model.device.type)
    mel = log_mel_spectrogram(torch.from_numpy(audio), model.dims.n_mels, padding=N_SAMPLES,
                              device=model.device)
    segments: list[dict] = []
    tokenizer, last_speech = None, 0.0
    aligner = _Aligner(model)
    for first in tqdm(range(0, len(windows), size), disable=not progress, desc="whisper", unit="batch"):
        batch = windows[first:first + size]
        x = torch.stack([pad_or_trim(mel[:, w.first_frame:w.first_frame + w.frames], N_FRAMES)
                         for w in batch]).to(model.device, dtype)
        features = model.encoder(x)
        if language is None:                      # detected once, on the first window, as whisper does
            language = "en"
            if model.is_multilingual:
                _, probs = model.detect_language(features[:1])
                language = max(probs[0], key=probs[0].get)
        if tokenizer is None:
            tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages,
                                      language=language, task="transcribe")
        with one_cpu_thread(not cuda):        # tiny ops: a second thread only waits (core.threads)
            results = _decode(model, features, language, temperatures, cuda)
            for i, (window, result) in enumerate(zip(batch, results)):
                if result.no_speech_prob > NO_SPEECH_THRESHOLD and result.avg_logprob <= LOGPROB_THRESHOLD:
                    continue                      # openai-whisper skips such a window as silence
                found = _segments(window, result, tokenizer)
                if not found:
                    continue
                add_word_timestamps(segments=found, model=aligner, tokenizer=tokenizer, mel=features[i],
                                    num_frames=window.frames, last_speech_timestamp=last_speech)
                segments.extend(found)
                last_speech = found[-1]["end"]
    return {"segments": segments, "language": language}
