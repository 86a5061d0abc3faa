"""Whisper on windows cut in the pauses, decoded together: one encoder pass per window, no re-seeking.

openai-whisper's own loop slides a 30-s window along the audio: a window that ends mid-sentence is
decoded again from its last timestamp, and word timestamps run the encoder a second time. Here the
speech is cut in its pauses into windows of at most 30 s, the encoder runs once per window (a few
windows per batch), the greedy decoder steps through the whole batch at once, and the word
alignment reuses the encoder's output. A window whose text looks wrong (too repetitive or too
improbable) is decoded again by sampling at rising temperatures, as openai-whisper does. The
segments come back in openai-whisper's format ("seek", "start", "end", "text", "tokens", "words",
"avg_logprob", "no_speech_prob", ...), times in seconds from the start of the audio.

On a CPU the decoder runs in dynamic int8 (speed_up_decoder; $WORKBENCH_WHISPER_INT8=0 keeps it
fp32): decoding steps are memory-bound there, and the benchmark's transcript is word for word the
same as in fp32 (bench.py prints the word error rate beside the time). The encoder stays fp32
unless $WORKBENCH_WHISPER_ENCODER=bf16 (encoder_precision): about 1.5x faster on a CPU with native
bfloat16, but the voice head reads its states.
"""

from __future__ import annotations

import math
import os
import threading
import types
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from .repetition import COMPRESSION_RATIO_THRESHOLD, said_again
from .threads import one_cpu_thread

SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100           # Whisper's mel hop is 10 ms
WINDOW_SECONDS = 30.0             # the encoder always sees 30 s
EDGE_SECONDS = 2.0                # windows end this far inside 30 s: Whisper drops a sentence ending at 29.5 s
HARD_CUT_SEARCH = 5.0             # speech with no pause for 30 s is cut at its quietest 10 ms in the last 5 s
CUT_PAUSE = 0.3                   # windows are cut in pauses at least this long when there are any
BATCH_CPU = 4                     # windows per encoder/decoder batch (memory grows with it)
BATCH_CUDA = 16
LOGPROB_THRESHOLD = -1.0          # openai-whisper's defaults for retrying a window (and 2.4 for
                                  # the compression ratio: core.repetition)
NO_SPEECH_THRESHOLD = 0.6
INT8_ENV = "WORKBENCH_WHISPER_INT8"   # "0": keep the CPU decoder in fp32
ENCODER_ENV = "WORKBENCH_WHISPER_ENCODER"   # "bf16": the CPU encoder in bfloat16 where the CPU has it


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
    window (no pause at all) is cut at its quietest point near the window's end. A span up to 30 s
    whose speech ends within `limit` stays whole (_fits).
    """
    windows: list[Window] = []
    for lo, hi in spans:
        inner = [(max(a, lo), min(b, hi)) for a, b in regions if b > lo and a < hi]
        pauses = [((b + a2) / 2.0, a2 - b) for (_, b), (a2, _) in zip(inner, inner[1:])]
        start = lo
        while not _fits(start, hi, inner, limit):
            target = start + (hi - start) / math.ceil((hi - start) / limit)   # windows of equal length
            fits = [(p, gap) for p, gap in pauses if start + 1.0 < p <= start + limit]
            # a real pause between sentences, not a dip between two words, when there is one
            fits = [p for p, gap in fits if gap >= CUT_PAUSE] or [p for p, _ in fits]
            cut = (min(fits, key=lambda p: abs(p - target)) if fits
                   else _quietest(audio, start + limit - HARD_CUT_SEARCH, start + limit))
            cut = round(cut, 2)
            windows.append(Window(start, cut))
            start = cut
        windows.append(Window(start, hi))
    return [w for w in windows if w.end - w.start > 0.05]


def _fits(start: float, hi: float, inner: list[tuple[float, float]], limit: float) -> bool:
    """[start, hi] is one window: at most `limit` s, or at most 30 s with its last speech ending
    within `limit` (the edge margin keeps a sentence away from the window's end; the silent
    padding after the last sentence is no sentence Whisper could drop)."""
    if hi - start <= limit:
        return True
    last = max((b for a, b in inner if a < hi), default=start)
    return hi - start <= WINDOW_SECONDS and min(last, hi) - start <= limit


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
    """openai-whisper's TextDecoder.forward with the output projection done by `self.logits`."""
    offset = next(iter(kv_cache.values())).shape[1] if kv_cache else 0
    x = self.token_embedding(x) + self.positional_embedding[offset: offset + x.shape[-1]]
    x = x.to(xa.dtype)
    for block in self.blocks:
        x = block(x, xa, mask=self.mask, kv_cache=kv_cache)
    return self.logits(self.ln(x)).float()


class _Logits(torch.nn.Module):
    """The tied output projection, transposed and contiguous once (about 100 MB for base): read
    through a transposed view, it cost 20-40 % of each decoding step on a CPU."""

    def __init__(self, embedding: torch.Tensor):
        super().__init__()
        self.register_buffer("weight_t", embedding.detach().t().contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return torch.mm(x.reshape(b * t, d), self.weight_t).reshape(b, t, -1)


def _plain_linears(module: torch.nn.Module) -> None:
    """Swap whisper's Linear subclass for torch's own (what dynamic quantisation recognises)."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear) and type(child) is not torch.nn.Linear:
            plain = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain)
        else:
            _plain_linears(child)


def _int8_decoder(decoder) -> bool:
    """Dynamic int8 quantisation of the decoder's linear layers and its output projection (weights
    int8 per tensor, activations quantised on the fly). Decoding is memory-bound on a CPU, so
    this makes it about 1.5x faster; the encoder stays fp32. False if torch lacks it."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        return False
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # torch.ao.quantization warns that it will move to torchao
        _plain_linears(decoder.blocks)
        quantize_dynamic(decoder.blocks, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        weight = decoder.token_embedding.weight
        projection = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        projection.weight = torch.nn.Parameter(weight.detach().clone(), requires_grad=False)
        decoder.logits = quantize_dynamic(torch.nn.Sequential(projection), {torch.nn.Linear},
                                          dtype=torch.qint8)
    return True


def speed_up_decoder(model, int8: bool | None = None) -> str:
    """On a CPU: an int8 decoder (unless `int8` is False or $WORKBENCH_WHISPER_INT8=0), else an
    fp32 one with a contiguous output projection. Returns the decoder's precision ("int8",
    "fp32"); a GPU model is left as it is ("fp16" there)."""
    decoder = model.decoder
    if model.device.type != "cpu":
        return "fp16"
    if hasattr(decoder, "logits"):
        return decoder.precision
    if int8 is None:
        int8 = os.environ.get(INT8_ENV, "1").strip().lower() not in ("0", "false", "no")
    if int8 and _int8_decoder(decoder):
        decoder.precision = "int8"
    else:
        decoder.logits = _Logits(decoder.token_embedding.weight)
        decoder.precision = "fp32"
    decoder.forward = types.MethodType(_decoder_forward, decoder)
    return decoder.precision


def _silence(result) -> bool:
    """openai-whisper's no-speech rule: Whisper thinks the window is silent and its words improbable."""
    return result.no_speech_prob > NO_SPEECH_THRESHOLD and result.avg_logprob <= LOGPROB_THRESHOLD


def _needs_retry(result, speech: bool = False, repeated: bool = False) -> bool:
    """openai-whisper's fallback rule: too repetitive or too improbable, unless it is silence (which
    it is not when a voice-activity detector found speech in the window: `speech`). Repetitive
    text that is speech said again (`repeated`: core.repetition.said_again) is not a loop."""
    looping = result.compression_ratio > COMPRESSION_RATIO_THRESHOLD and not repeated
    bad = looping or result.avg_logprob < LOGPROB_THRESHOLD
    return bad and (speech or not _silence(result))


def _decode(model, features: torch.Tensor, language: str, temperatures: tuple[float, ...], fp16: bool,
            speech: bool = False, judge=None):
    """Greedy decoding of a batch of windows, retrying the doubtful ones at each higher temperature.
    `judge(i, result)` says whether window i's repetitive text is speech said again (not a loop)."""
    from whisper.decoding import DecodingOptions

    def repeated(i: int, result) -> bool:
        return (judge is not None and result.compression_ratio > COMPRESSION_RATIO_THRESHOLD
                and judge(i, result))

    results = model.decode(features, DecodingOptions(language=language, temperature=temperatures[0],
                                                     fp16=fp16))
    for t in temperatures[1:]:
        redo = [i for i, r in enumerate(results) if _needs_retry(r, speech, repeated(i, r))]
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


# ---------------------------------------------------------------- encoder states for the voice (core.voice)

_CAPTURE = threading.local()


@contextmanager
def capture_states():
    """Within the block, transcribe_windows keeps each window's encoder states (fp16, CPU) in the
    list it yields, as core.voice.WindowStates: the voice branch reads an utterance's states there
    instead of running the encoder again. Per thread, so concurrent analyses never mix."""
    found: list = []
    _CAPTURE.found = found
    try:
        yield found
    finally:
        _CAPTURE.found = None


def _encoder_states(model, x: torch.Tensor):
    """(encoder output, voice states or None): the states only inside capture_states."""
    if getattr(_CAPTURE, "found", None) is None:
        return model.encoder(x), None
    from .voice import run_encoder
    return run_encoder(model.encoder, x)


def encoder_precision(device_type: str = "cpu") -> str:
    """The Whisper encoder's precision on a device: "fp16" on a GPU; on a CPU "fp32", or "bf16" when
    $WORKBENCH_WHISPER_ENCODER=bf16 and the CPU computes in bfloat16 natively (AVX512-BF16, AMX).
    bf16 makes the encoder about 1.5x faster there but moves its states (and the voice head reads
    them), so fp32 is the default."""
    if device_type != "cpu":
        return "fp16"
    wanted = os.environ.get(ENCODER_ENV, "fp32").strip().lower() == "bf16"
    return "bf16" if wanted and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def _encode(model, x: torch.Tensor, batch: list[Window]) -> torch.Tensor:
    """model.encoder(x); inside capture_states it also keeps each window's voice states (core.voice)."""
    bf16 = encoder_precision(model.device.type) == "bf16"
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
        features, states = _encoder_states(model, x)
    if bf16:
        features = features.float()
    found = getattr(_CAPTURE, "found", None)
    if found is None:
        return features
    from .voice import WindowStates
    for window, kept in zip(batch, states):
        found.append(WindowStates(window.start, window.frames / FRAMES_PER_SECOND, kept.detach().half().cpu()))
    return features


@torch.no_grad()
def transcribe_windows(model, audio: np.ndarray, windows: list[Window], language: str | None,
                       temperatures: tuple[float, ...], progress: bool = False, speech: bool = False,
                       regions: list[tuple[float, float]] | None = None) -> dict:
    """Decode every window (batched) with word timestamps -> {"segments": [...], "language": ...}.

    `speech=True`: every window holds speech a voice-activity detector found, so none is skipped on
    Whisper's own no-speech verdict (under noise it skipped 26 s of real speech that way).
    `regions`: the detected speech (seconds), against which a window of repetitive text is judged
    a loop (decoded again hotter) or a sentence said again (kept: core.repetition)."""
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
        features = _encode(model, x, batch)
        if language is None:                      # detected once, on the first window, as whisper does
            language = "en"
            if model.is_multilingual:
                _, probs = model.detect_language(features[:1])
                language = max(probs[0], key=probs[0].get)
        if tokenizer is None:
            tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages,
                                      language=language, task="transcribe")
        with one_cpu_thread(not cuda):        # tiny ops: a second thread only waits (core.threads)
            sample_len = model.dims.n_text_ctx // 2          # openai-whisper's token limit per window

            def judge(i: int, result) -> bool:
                return said_again(result.tokens, tokenizer, batch[i].first_frame / FRAMES_PER_SECOND,
                                  regions, sample_len)
            results = _decode(model, features, language, temperatures, cuda, speech, judge)
            for i, (window, result) in enumerate(zip(batch, results)):
                if not speech and _silence(result):
                    continue                      # openai-whisper skips such a window as silence
                found = _segments(window, result, tokenizer)
                if not found:
                    continue
                add_word_timestamps(segments=found, model=aligner, tokenizer=tokenizer, mel=features[i],
                                    num_frames=window.frames, last_speech_timestamp=last_speech)
                segments.extend(found)
                last_speech = found[-1]["end"]
    return {"segments": segments, "language": language}
