"""Speech to utterances with Whisper: load the model, find the speech, transcribe it all, cut it into
utterances, drop hallucinations.

The default model is the packaged Whisper base (converted once by `core.whisper_convert`), so
transcription works offline. Silero VAD (core.vad) finds the speech; Whisper decodes it in windows
cut at its pauses (core.whisper_batch), its pauses over 1 s shortened to 0.6 s first when that
needs fewer windows (core.packing); speech that no word covers afterwards (Whisper ended a
window early, or skipped a quiet clip) is decoded again in windows of its own, so nothing real is
dropped. Segments are then cut into utterances with their word timestamps (core.utterances).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from . import packing as packed
from . import recall
from .online import reachable
from . import utterances as cut
from .types import SpokenLanguage, UserError, Utterance, error_line
from .vad import at_speaking_level, join_regions, speech_regions
from .whisper_batch import plan_windows, speed_up_decoder, transcribe_windows
from .whisper_align import speed_up_alignment

SAMPLE_RATE = 16000
DEFAULT_MODEL = "base"
MIN_AUDIO_SECONDS = 0.3       # shorter clips hold no utterance worth transcribing
SILENCE_PEAK = 1e-3           # |sample| below this everywhere (about -60 dBFS) means silence
# Decoding: greedy first; on a failed window (repetition loop, low confidence) Whisper retries with
# sampling. The RNG is seeded per call, so the same audio always gives the same transcript.
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
SEED = 0
PAD = cut.PAD                 # seconds kept around an utterance's speech (core.utterances)
SKIP_SILENCE = 3.0            # Whisper never sees silences longer than this (hallucination bait)
CLIP_PAD = 1.0                # seconds of audio kept around the speech that Whisper sees
PACK = True                   # pauses over 1 s shortened to 0.6 s when that saves a window (core.packing)
# Hallucination guard.
NO_SPEECH_PROB = 0.6
LOGPROB_FLOOR = -1.0
MIN_VOICED = 0.25             # seconds (or half the utterance) of detected speech: it is voiced
DOUBT_NO_SPEECH = 0.3         # on unvoiced audio, text is dropped above this no-speech probability
DOUBT_LOGPROB = -0.7          # ...or below this mean log-probability
# Language (README, "Speech that is not English"): Whisper base gives English speech measured here
# (espeak-ng's English voices, 120 RAVDESS clips) p(en) >= 0.40, nine other languages <= 0.24.
NOT_ENGLISH = 0.3             # below this probability of English the speech is called foreign
CLASSIC_HALLUCINATIONS = {"thank you", "thank you so much", "thanks", "you", "bye", "okay", "so",
                          "music", "applause", "silence", "please subscribe"}
CLASSIC_PREFIXES = ("thanks for watching", "thank you for watching", "subtitles by",
                    "transcribed by", "translated by", "amara org")


class TranscriptionError(UserError):
    """Whisper could not be loaded or run; the message is one line, fit to show a user."""


_MODELS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()

def _device(device: str | None) -> str:
    if device:
        return device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_checkpoint(path: Path, device: str, version: int | None = None):
    """Load an openai-whisper checkpoint strictly, tensors only (weights_only=True).

    With `version`, a checkpoint written by another converter version is refused (ValueError).
    """
    import torch
    from whisper.model import ModelDimensions, Whisper

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if version is not None and ckpt.get("converter_version") != version:
        raise ValueError(f"{path.name} was written by another converter version")
    model = Whisper(ModelDimensions(**ckpt["dims"]))
    model.load_state_dict(ckpt["model_state_dict"])
    heads = ckpt.get("alignment_heads")
    if heads:  # the cross-attention heads that track time, for word timestamps
        mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model.to(device).eval()


def _load_packaged_base(device: str):
    """The packaged base, converted on first use; a damaged or stale cache file is rebuilt."""
    from .whisper_convert import CONVERTER_VERSION, ConversionError, packaged_base_checkpoint
    try:
        try:
            return _load_checkpoint(packaged_base_checkpoint(), device, CONVERTER_VERSION)
        except Exception:  # our own cache file, damaged or stale: rebuild it
            return _load_checkpoint(packaged_base_checkpoint(force=True), device)
    except (ConversionError, OSError) as err:
        raise TranscriptionError(f"The packaged Whisper base model cannot be read: {err}") from None


def _load_named(name: str, device: str):
    import os
    import whisper

    unavailable = (f'Whisper model "{name}" is not available offline (it must be downloaded '
                   f'first); the default "{DEFAULT_MODEL}" ships with the app.')
    if name not in whisper.available_models():
        raise TranscriptionError(f'Unknown Whisper model "{name}"; use "{DEFAULT_MODEL}", a '
                                 f'name such as "small" or "tiny.en", or a path to a .pt file.')
    root = os.path.join(os.getenv("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "whisper")
    cached = os.path.join(root, os.path.basename(whisper._MODELS[name]))
    if not os.path.isfile(cached) and not reachable(whisper._MODELS[name]):
        raise TranscriptionError(unavailable)  # fail fast rather than wait on a dead network
    try:
        return whisper.load_model(name, device=device, download_root=root)
    except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
        raise TranscriptionError(unavailable) from err


def load_whisper(name: str = DEFAULT_MODEL, device: str | None = None):
    """A Whisper model, loaded once per (name, device) and kept for the process.

    `name` is "base" (the packaged offline weights), another openai-whisper name ("small",
    "tiny.en", ...; needs a download unless already in ~/.cache/whisper) or a path to a .pt file.
    """
    device = _device(device)
    key = (str(name), device)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = _load_model(str(name), device)
            speed_up_decoder(_MODELS[key])
            speed_up_alignment()          # compiled (or loaded from numba's cache) now, not at the first word
    return _MODELS[key]


def _load_model(name: str, device: str):
    path = Path(name).expanduser()
    if name == DEFAULT_MODEL:
        return _load_packaged_base(device)
    if path.suffix != ".pt" and not path.is_file():
        return _load_named(name, device)
    if not path.is_file():
        raise TranscriptionError(f"Whisper checkpoint not found: {path}")
    try:
        return _load_checkpoint(path, device)
    except Exception as err:
        raise TranscriptionError(f"Cannot load Whisper checkpoint {path.name}: {error_line(err, 160)}") from None


# --------------------------------------------------------------------------- where Whisper listens

Region = tuple[float, float]


def _clips(regions: list[Region], duration: float) -> list[float]:
    """Whisper's clip_timestamps: the speech, padded, with long silences left out."""
    spans = join_regions(regions, SKIP_SILENCE)
    # end on a whole 10-ms mel frame: openai-whisper rounds a clip end past its last frame up and then
    # loops for ever on an empty segment when the speech runs to the end of the file
    last = np.floor(duration * 100) / 100
    return [t for a, b in spans for t in (max(0.0, a - CLIP_PAD), float(min(last, b + CLIP_PAD)))]


def is_silent(audio: np.ndarray, sr: int = SAMPLE_RATE) -> bool:
    """True for audio too short or too quiet to hold speech."""
    return len(audio) < MIN_AUDIO_SECONDS * sr or float(np.max(np.abs(audio))) < SILENCE_PEAK


def _hear(model, audio: np.ndarray, regions: list[Region], spans: list[Region], language: str | None,
          progress: bool, packing: "packed.Packing | None") -> dict:
    """Whisper on `spans` of `audio`, in windows cut in their pauses; as laid out by `packing`
    instead (times mapped back) when that needs fewer windows."""
    windows = plan_windows(spans, regions, audio)
    if packing is not None and packing.shortened:
        heard, where = packing.audio(audio), packing.regions(regions)
        clips = _clips(where, len(heard) / SAMPLE_RATE)
        fewer = plan_windows(list(zip(clips[::2], clips[1::2])), where, heard)
        if len(fewer) < len(windows):
            result = transcribe_windows(model, heard, fewer, language, TEMPERATURES, progress, speech=True,
                                        regions=where, states_map=packing.states)
            result["segments"] = packing.segments(result.get("segments") or [])
            return result
    return transcribe_windows(model, audio, windows, language, TEMPERATURES, progress, speech=True,
                              regions=regions)


def decode(model, audio: np.ndarray, regions: list[Region], language: str | None,
           progress: bool = False) -> dict:
    """Whisper on the detected speech: windows cut in its pauses, decoded as a batch; its long
    pauses shortened first (core.packing, times mapped back to `audio`) when that needs fewer
    windows. Then what it left out or lost track of is decoded again on its own (core.recall),
    its stretches set apart by silence in one window when they fit (core.packing.end_to_end)."""
    duration = len(audio) / SAMPLE_RATE
    clips = _clips(regions, duration)
    result = _hear(model, audio, regions, list(zip(clips[::2], clips[1::2])), language, progress,
                   packed.plan(regions, len(audio)) if PACK else None)
    language = result.get("language") or language
    last = float(np.floor(duration * 100) / 100)      # whole mel frames, as in _clips

    def again(spans: list[Region]) -> list[dict]:
        spans = [(a, min(b, last)) for a, b in spans if min(b, last) > a]
        laid = packed.end_to_end(spans, len(audio)) if PACK else None
        return _hear(model, audio, regions, spans, language, False, laid).get("segments") or []

    segments = recall.second_look(again, regions, result.get("segments") or [], duration)
    return {"segments": segments, "language": result.get("language"), "heard": result.get("heard")}


# --------------------------------------------------------------------------- hallucination guard

def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).replace("'", "").split())


def _hallucinated(piece: cut.Piece, start: float, end: float, audio: np.ndarray,
                  regions: list[Region]) -> bool:
    """Silence hallucinations: empty text, silent audio, or words where the voice-activity detector
    heard no speech and Whisper doubts them. Words over detected speech are kept, however unsure
    Whisper is: under noise its no-speech probability rises on real speech."""
    seg, text = piece.segment, _normalise(piece.text)
    if not text or end - start <= 0:
        return True
    clip = audio[int(start * SAMPLE_RATE): int(end * SAMPLE_RATE)]
    if clip.size == 0 or float(np.max(np.abs(clip))) < SILENCE_PEAK:
        return True
    if cut.overlap(regions, start, end) >= min(MIN_VOICED, 0.5 * (end - start)):
        return False
    classic = text in CLASSIC_HALLUCINATIONS or text.startswith(CLASSIC_PREFIXES)
    doubtful = (seg.get("no_speech_prob", 0.0) > DOUBT_NO_SPEECH
                or seg.get("avg_logprob", 0.0) < DOUBT_LOGPROB)
    return classic or doubtful


# --------------------------------------------------------------------------- transcription

def transcribe(audio: np.ndarray, model=None, language: str | None = "en",
               progress: bool = False, sliding: bool = False) -> list[Utterance]:
    """Utterances in `audio` (float32, 16 kHz, mono): text, times and Whisper's confidence.

    `model` is a loaded Whisper, a name for `load_whisper`, or None for the default.
    `language=None` lets Whisper detect it. `progress=True` shows a tqdm bar. The speech is cut
    in its pauses into 30-s windows decoded as a batch (core.whisper_batch); `sliding=True` runs
    openai-whisper's own sliding-window loop instead (about twice as slow; kept to compare).
    """
    return transcribe_heard(audio, model, language, progress, sliding)[0]


def spoken_language(heard: dict[str, float] | None) -> SpokenLanguage | None:
    """Whisper's language probabilities (on the first window of speech) as a SpokenLanguage."""
    if not heard:
        return None
    code = max(heard, key=heard.get)
    return SpokenLanguage(code, round(heard[code], 3), round(heard.get("en", 0.0), 3))


def sounds_foreign(language: SpokenLanguage | None) -> bool:
    """True when Whisper finds the speech unlikely to be English (the words model's language)."""
    return language is not None and language.code != "en" and language.english < NOT_ENGLISH


def language_name(code: str) -> str:
    """'fr' -> 'French' (Whisper's own names); an unknown code as it is."""
    from whisper.tokenizer import LANGUAGES
    return LANGUAGES.get(code, code).title()


def language_note(language: SpokenLanguage | None, asked: str | None) -> str:
    """One line for speech that does not sound like English, the words model's language ("" else).
    `asked`: the language Whisper was told to write ("en", the default), or None (its own guess)."""
    if not sounds_foreign(language):
        return ""
    name = language_name(language.code)
    heard = (f"⚠ This speech does not sound like English: Whisper hears {name} "
             f"({language.probability:.0%}; English {language.english:.0%}).")
    if asked == "en":
        return (heard + " It was asked to write English words, so the transcript may be a rough "
                "translation or a guess, and the words model reads English only; the voice and the face "
                "do not depend on the language.")
    return (heard + f" The transcript is in {language_name(asked) if asked else name}; the words model "
            "learned English dialogue, so its reading of these words is unreliable; the voice and the "
            "face do not depend on the language.")


def transcribe_heard(audio: np.ndarray, model=None, language: str | None = "en", progress: bool = False,
                     sliding: bool = False) -> tuple[list[Utterance], SpokenLanguage | None]:
    """transcribe(), and the language Whisper hears on the first window of speech (even when
    `language` tells it what to write; None with an English-only Whisper or `sliding`)."""
    import torch

    audio = np.nan_to_num(np.asarray(audio, dtype=np.float32).reshape(-1))
    if is_silent(audio):
        return [], None
    regions = speech_regions(at_speaking_level(audio))    # Whisper itself hears the audio as it is
    if not regions:
        return [], None
    if model is None or isinstance(model, str):
        model = load_whisper(model or DEFAULT_MODEL)
    cuda = model.device.type == "cuda"
    duration = len(audio) / SAMPLE_RATE
    try:
        with torch.random.fork_rng(devices=[model.device] if cuda else []):
            torch.manual_seed(SEED)
            if sliding:
                result = model.transcribe(audio, language=language, fp16=cuda, temperature=TEMPERATURES,
                                          condition_on_previous_text=False, word_timestamps=True,
                                          clip_timestamps=_clips(regions, duration),
                                          verbose=False if progress else None)
            else:
                result = decode(model, audio, regions, language, progress)
    except Exception as err:
        raise TranscriptionError(f"Whisper failed: {error_line(err, 160)}") from err
    silences = cut.gaps(regions, duration)
    pieces = cut.pieces(result.get("segments") or [], silences)
    utterances = []
    for piece, (start, end) in zip(pieces, cut.bounds(pieces, regions, silences, duration)):
        if end - start < 0.01 or _hallucinated(piece, start, end, audio, regions):
            continue
        seg = piece.segment
        utterances.append(Utterance(start=round(start, 3), end=round(end, 3), text=piece.text,
                                    avg_logprob=float(seg.get("avg_logprob", 0.0)),
                                    no_speech_prob=float(seg.get("no_speech_prob", 0.0)),
                                    compression_ratio=float(seg.get("compression_ratio", 0.0))))
    return utterances, spoken_language(result.get("heard"))


# --------------------------------------------------------------------------- scoring

def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation ("Don't!" -> ["dont"]), for scoring."""
    return _normalise(text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, after normalisation.

    An empty reference scores 0.0 against an empty hypothesis and 1.0 against anything else.
    """
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / len(ref)
