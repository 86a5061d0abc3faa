"""Whisper on windows cut in the pauses, decoded together: one encoder pass per window, no re-seeking.

openai-whisper's own loop slides a 30-s window along the audio: a window that ends mid-sentence is
decoded again from its last timestamp, and word timestamps run the encoder a second time. Here the
speech is cut in its pauses into windows of at most 30 s, the encoder runs once per window (a few
windows per batch), the greedy decoder steps through the whole batch at once, and the word
alignment reuses the encoder's output. A window whose text looks wrong (too repetitive or too
improbable) is decoded again by sampling at rising temperatures, as openai-whisper does; when every
temperature fails, the most probable attempt is kept (not openai-whisper's last, a sample at
temperature 1.0: faster-whisper's choice, and under noise it halves what the retries cost). The
segments come back in openai-whisper's format ("seek", "start", "end", "text", "tokens", "words",
"avg_logprob", "no_speech_prob", ...), times in seconds from the start of the audio.

On a CPU the decoder runs in dynamic int8 (speed_up_decoder; $WORKBENCH_WHISPER_INT8=0 keeps it
fp32): decoding steps are memory-bound there, and the benchmark's transcript is word for word the
same as in fp32 (bench.py prints the word error rate beside the time). The encoder stays fp32
unless $WORKBENCH_WHISPER_ENCODER says bf16, bf16-top or bf16-bottom (encoder_precision): faster on
a CPU with native bfloat16, but each loses words under noise (docs/speed.md, "Fourth round").
"""

from __future__ import annotations

import math
import os
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from .repetition import COMPRESSION_RATIO_THRESHOLD, said_again
from .threads import one_cpu_thread, wide
from .whisper_decoder import INT8_ENV, speed_up_decoder  # noqa: F401  (speed_up_decoder: re-exported)

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
ENCODER_ENV = "WORKBENCH_WHISPER_ENCODER"   # "fp32", "bf16-top", "bf16-bottom" or "bf16" (encoder_precision)
DEFAULT_ENCODER = "fp32"


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
        with wide():          # one pass over all the tokens and 1,500 audio states: not tiny ops
            return self.decoder(tokens, features)


def _silence(result) -> bool:
    """openai-whisper's no-speech rule: Whisper thinks the window is silent and its words improbable."""
    return result.no_speech_prob > NO_SPEECH_THRESHOLD and result.avg_logprob <= LOGPROB_THRESHOLD


def _looping(result, repeated: bool = False) -> bool:
    """Too repetitive to be speech, unless it is speech said again (`repeated`)."""
    return result.compression_ratio > COMPRESSION_RATIO_THRESHOLD and not repeated


def _needs_retry(result, speech: bool = False, repeated: bool = False) -> bool:
    """openai-whisper's fallback rule: too repetitive or too improbable, unless it is silence (which
    it is not when a voice-activity detector found speech in the window: `speech`). Repetitive
    text that is speech said again (`repeated`: core.repetition.said_again) is not a loop."""
    bad = _looping(result, repeated) or result.avg_logprob < LOGPROB_THRESHOLD
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
    attempts = [[r] for r in results]
    for t in temperatures[1:]:
        redo = [i for i, r in enumerate(results) if _needs_retry(r, speech, repeated(i, r))]
        if not redo:
            break
        again = model.decode(features[redo], DecodingOptions(language=language, temperature=t, fp16=fp16))
        for i, r in zip(redo, again):
            results[i] = r
            attempts[i].append(r)
    for i, tried in enumerate(attempts):     # every attempt failed: keep the most probable, not the last
        if len(tried) > 1 and _needs_retry(results[i], speech, repeated(i, results[i])):
            results[i] = max(tried, key=lambda r: (not _looping(r, repeated(i, r)), r.avg_logprob))
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
    """The Whisper encoder's precision on a device: "fp16" on a GPU. On a CPU, per
    $WORKBENCH_WHISPER_ENCODER: "fp32"; "bf16-top", the blocks above the voice's block (core.voice
    LAYER) in bfloat16, so that the states the voice head reads stay exactly fp32; "bf16-bottom",
    the blocks up to it; or "bf16", all of it (about 1.5x faster, but it moves the voice's states). Either bf16 only where the CPU computes
    in bfloat16 natively (AVX512-BF16, AMX); elsewhere "fp32"."""
    if device_type != "cpu":
        return "fp16"
    wanted = os.environ.get(ENCODER_ENV, DEFAULT_ENCODER).strip().lower()
    if wanted not in ("bf16", "bf16-top", "bf16-bottom"):
        return "fp32"
    from .precision import native_bf16
    return wanted if native_bf16() else "fp32"


def run_encoder_split_bf16(encoder, x: torch.Tensor, top: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """core.voice.run_encoder with one side of its LAYER in bfloat16 (autocast): the blocks above
    it (top) or the convolutions and blocks up to it (bottom); the other side in fp32. Returns
    (final states fp32, voice states)."""
    from .voice import LAYER
    with torch.autocast("cpu", dtype=torch.bfloat16) if not top else nullcontext():
        x = torch.nn.functional.gelu(encoder.conv1(x))
        x = torch.nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
        x = (x + encoder.positional_embedding).to(x.dtype)
        kept = x
        for block in encoder.blocks[:LAYER + 1]:
            x = block(x)
        kept = x = x.float()
    with torch.autocast("cpu", dtype=torch.bfloat16) if top else nullcontext():
        for block in encoder.blocks[LAYER + 1:]:
            x = block(x)
    return encoder.ln_post(x.float()).float(), kept


def run_encoder_top_bf16(encoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """core.voice.run_encoder with the blocks above its LAYER in bfloat16 (autocast): the same
    operations up to LAYER, so the voice states are the fp32 ones bit for bit; the blocks above
    feed only the decoder. Returns (final states fp32, voice states)."""
    from .voice import LAYER
    x = torch.nn.functional.gelu(encoder.conv1(x))
    x = torch.nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = (x + encoder.positional_embedding).to(x.dtype)
    kept = x
    for i, block in enumerate(encoder.blocks):
        with torch.autocast("cpu", dtype=torch.bfloat16) if i > LAYER else nullcontext():
            x = block(x)
        if i == LAYER:
            kept = x
    return encoder.ln_post(x.float()).float(), kept


def _encode(model, x: torch.Tensor, batch: list[Window], states_map=None) -> torch.Tensor:
    """model.encoder(x); inside capture_states it also keeps each window's voice states (core.voice),
    through `states_map(start, seconds, states) -> [WindowStates]` when the audio is packed
    (core.packing.Packing.states)."""
    kind = encoder_precision(model.device.type)
    if kind == "bf16-top":
        features, states = run_encoder_top_bf16(model.encoder, x)
    elif kind == "bf16-bottom":
        features, states = run_encoder_split_bf16(model.encoder, x, top=False)
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16) if kind == "bf16" else nullcontext():
            features, states = _encoder_states(model, x)
        features = features.float() if kind == "bf16" else features
    found = getattr(_CAPTURE, "found", None)
    if found is None:
        return features
    from .voice import WindowStates
    for window, kept in zip(batch, states):
        args = (window.start, window.frames / FRAMES_PER_SECOND, kept.detach().half().cpu())
        found.extend(states_map(*args) if states_map is not None else [WindowStates(*args)])
    return features


@torch.no_grad()
def transcribe_windows(model, audio: np.ndarray, windows: list[Window], language: str | None,
                       temperatures: tuple[float, ...], progress: bool = False, speech: bool = False,
                       regions: list[tuple[float, float]] | None = None, states_map=None) -> dict:
    """Decode every window (batched) with word timestamps -> {"segments": [...], "language": ...,
    "heard": {language code: probability} on the first window (None for an English-only model)}.

    `speech=True`: every window holds speech a voice-activity detector found, so none is skipped on
    Whisper's own no-speech verdict (under noise it skipped 26 s of real speech that way).
    `regions`: the detected speech (seconds), against which a window of repetitive text is judged
    a loop (decoded again hotter) or a sentence said again (kept: core.repetition).
    `states_map`: how captured encoder states map to the original audio (_encode)."""
    from tqdm import tqdm
    from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim
    from whisper.timing import add_word_timestamps
    from whisper.tokenizer import get_tokenizer

    from .whisper_align import speed_up_alignment
    speed_up_alignment()                          # the same word times, a third less alignment

    cuda = model.device.type == "cuda"
    dtype, size = precision(model.device.type)
    mel = log_mel_spectrogram(torch.from_numpy(audio), model.dims.n_mels, padding=N_SAMPLES,
                              device=model.device)
    segments: list[dict] = []
    tokenizer, last_speech, heard = None, 0.0, None
    aligner = _Aligner(model)
    for first in tqdm(range(0, len(windows), size), disable=not progress, desc="whisper", unit="batch"):
        batch = windows[first:first + size]
        x = torch.stack([pad_or_trim(mel[:, w.first_frame:w.first_frame + w.frames], N_FRAMES)
                         for w in batch]).to(model.device, dtype)
        features = _encode(model, x, batch, states_map)
        if heard is None and model.is_multilingual:   # one decoder step on the first window, as whisper does
            _, probs = model.detect_language(features[:1])
            heard = {code: float(p) for code, p in probs[0].items()}
        if language is None:                      # detected once, on the first window
            language = max(heard, key=heard.get) if heard else "en"
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
    return {"segments": segments, "language": language, "heard": heard}
