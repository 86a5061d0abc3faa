"""analyze(path) -> Analysis: media -> transcript -> features -> model, one utterance at a time safe.

A problem with one utterance (a frame that will not decode, a face crop that fails) is recorded
on that utterance and never fails the others. A file that cannot be read at all raises
MediaError with a one-line message; a file with no speech gives an Analysis whose message says so.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import cache, encoders, face_grid, media, speakers, voice
from .text import TextEncoder, apply_text_state, build_contexts, load_text_encoder
from .checkpoint import Checkpoint, load_or_untrained
from .model import model_batch
from .opinions import face_opinion, head_opinion, with_share
from .threads import one_cpu_thread
from .transcribe import language_note, load_whisper, transcribe_heard
from .whisper_batch import capture_states
from .types import Analysis, ModalityOpinion, Utterance, UtterancePrediction

Progress = Callable[[float, str], None]
log = logging.getLogger(__name__)

STAGES = ("decode", "transcribe", "speakers", "frames", "face", "video", "text", "audio", "model")
NO_SPEECH = "No speech found"
FRAME_SIDE = 480          # frames are read at most this large (face detection then downsizes to 320)
WORDS_ALONE = "read alone, not with the lines around it"   # the text opinion's note when analyze(dialogue=False)
WHISPER_LOCK = threading.Lock()   # one Whisper model is not safe to run from two threads at once
FRAMES_PER_CALL = 256     # frames per ffmpeg call: about 100 MB at 480x270
VOICE_WHISPER = "base"    # the Whisper whose encoder states the voice branch learned on (core.voice)
VOICE_FROM_WINDOWS = True  # read voices from transcription's window states (else: a window per utterance)


@dataclass
class Models:
    """Everything analyze() needs loaded; build once with load_models() and reuse."""

    checkpoint: Checkpoint
    whisper_name: str = "base"
    language: str | None = "en"
    device: str = "cpu"
    text_encoder: TextEncoder | None = None
    video_encoder: encoders.VideoEncoder | None = None
    notes: list[str] = field(default_factory=list)
    voice_refused: str = ""      # why the checkpoint's voice branch is left out ("" = it is used)

    @property
    def card(self):
        return self.checkpoint.card

    @cached_property
    def weights_digest(self) -> str:
        """sha256 over the checkpoint's tensors (fusion model and tuned text layers)."""
        model, text = self.checkpoint.model.state_dict(), self.checkpoint.text_state
        return cache.tensors_digest({**{f"model.{k}": v for k, v in model.items()},
                                     **{f"text.{k}": v for k, v in text.items()}})[:16]

    def signature(self) -> dict:
        """What decides an analysis besides the file: keys the analysis cache (an edited
        checkpoint with the same name and date has other weights, so another key)."""
        card = self.card
        return {"checkpoint": card.name, "created": card.created, "trained": card.trained_modalities,
                "weights": self.weights_digest,
                "video": self.video_encoder.digest if self.video_encoder is not None else None,
                "whisper": self.whisper_name, "language": self.language}


def pick_device() -> str:
    """"cuda" when a GPU is usable (Whisper fp16, text encoder fp16, face net and fusion fp32), else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_models(checkpoint: str | Path | Checkpoint | None = None, whisper_name: str = "base",
                language: str | None = "en", device: str | None = None) -> Models:
    """Load the checkpoint (default: the shipped one, else untrained), the text encoder and Whisper."""
    device = device or pick_device()
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_or_untrained(checkpoint)
    ckpt.model.to(device).eval()
    models = Models(ckpt, whisper_name, language, device)
    text_cfg = ckpt.card.text_encoder
    if ckpt.text_state:   # a tuned encoder is the checkpoint's own copy, never the shared cached one
        models.text_encoder = apply_text_state(TextEncoder(text_cfg["name"]),
                                                        ckpt.text_state)
    else:                 # the cached encoder is shared by the process: move or halve only a copy of it
        shared = load_text_encoder(text_cfg["name"])
        models.text_encoder = shared if device == "cpu" else copy.deepcopy(shared)
    models.text_encoder.to(device)
    if device.startswith("cuda"):      # half precision where it is safe: the BERT encoder; fusion stays fp32
        models.text_encoder.half()
    models.text_encoder.encode(["Hello."])   # its bfloat16 copies and kernels made now, not in the first analysis
    speakers.embed(np.zeros(speakers.SAMPLE_RATE, np.float32))   # likewise the speaker encoder's
    from .face import load_face_net
    load_face_net(device=device)
    if "video" in ckpt.model.config.modalities:
        video_cfg = ckpt.card.video_encoder
        try:          # $WORKBENCH_VIDEO_WEIGHTS (this machine's copy) wins over the path in the card
            models.video_encoder = encoders.VideoEncoder(
                os.environ.get(encoders.VIDEO_WEIGHTS_ENV) or video_cfg.get("weights"),
                video_cfg.get("sha256")).to(device)
        except encoders.EncoderUnavailable as err:
            models.notes.append(str(err))
    learned = voice.feature_of(ckpt.card.data)
    if "audio" in ckpt.card.trained_modalities and learned != voice.FEATURE:
        models.voice_refused = (f"voice left out: this checkpoint's voice learned on {learned}, this release "
                                f"hears {voice.FEATURE} (retrain it with train.train to use its voice)")
    load_whisper(whisper_name, device=device)
    return models


def analyze(path: str | Path, models: Models | None = None,
            progress: Progress | None = None, use_cache: bool = True,
            utterances: list[Utterance] | None = None, dialogue: bool = True,
            any_language: bool = False) -> Analysis:
    """Analyse one video or audio file end to end (a file analysed before comes from the cache).
    `utterances` given (e.g. an imported MELD CSV's rows): no transcription, those spans and words
    are read by every modality instead (not cached). `dialogue` False: the words of each utterance
    are read alone, not with their neighbours as the checkpoint's context (for a file of unrelated
    lines, where one line's mood would colour the next). `any_language`: Whisper writes the
    language it hears instead of `models.language` (English by default); speech that does not
    sound like English gets a warning in `Analysis.message` either way (core.transcribe.language_note)."""
    models = models or load_models()
    report = progress or (lambda fraction, stage: None)
    timings: dict[str, float] = {}
    clock = partial(_timed, timings)

    report(0.0, "reading the file")
    key = None
    if use_cache and utterances is None:
        with clock("cache"):
            key = _cache_key(path, models, dialogue, any_language)
            hit = cache.load(key) if key else None
        if hit is not None:
            hit.source, hit.timings = str(path), dict(timings)
            report(1.0, "done (from cache)")
            return hit
    analysis = _analyze_uncached(path, models, report, clock, timings, utterances, dialogue,
                                 None if any_language else models.language)
    if key and not any(p.error for p in analysis.utterances):
        cache.store(key, analysis)
    return analysis


def _cache_key(path: str | Path, models: Models, dialogue: bool = True, any_language: bool = False) -> str | None:
    signature = models.signature() if dialogue else {**models.signature(), "words": "alone"}
    if any_language:
        signature["language"] = "as heard"       # the two transcripts are kept apart
    try:
        return cache.cache_key(cache.file_digest(path), signature)
    except OSError:
        return None          # unreadable: probe() below says why, in one line


def _analyze_uncached(path, models: Models, report: Progress, clock, timings,
                      given: list[Utterance] | None = None, dialogue: bool = True,
                      language: str | None = "en") -> Analysis:
    card = models.card
    with clock("decode"):
        info = media.probe(path)
        audio = media.load_audio(path) if info.has_audio else np.zeros(0, np.float32)
    summary = card.summary() if dialogue else {**card.summary(), "words": "each utterance alone"}
    analysis = Analysis(source=str(path), media=info, model=summary, timings=timings)
    if not info.has_audio:
        analysis.message = f"{NO_SPEECH}: the file has no audio track."
        return analysis

    report(0.1, "transcribing" if given is None else "reading the given utterances")
    grid = face_grid.start(path, info, FRAME_SIDE, models.device)   # faces found and read while Whisper listens
    try:
        with clock("transcribe"):
            if given is not None:
                utterances, windows = list(given), []
            else:
                with WHISPER_LOCK, capture_states() as windows:
                    utterances, analysis.language = transcribe_heard(
                        audio, load_whisper(models.whisper_name, device=models.device), language=language)
                analysis.message = language_note(analysis.language, language)
    except BaseException:
        if grid is not None:
            grid.cancel()
        raise
    if not utterances:
        if grid is not None:
            grid.cancel()
        analysis.message = f"{NO_SPEECH}: the audio is silent or holds no words Whisper could hear."
        if info.audio_tracks > 1:
            analysis.message += (f" The file has {info.audio_tracks} audio tracks and only the first is "
                                 "analysed: export the one with the speech as the first track.")
        return analysis

    if given is None:
        report(0.45, "telling the speakers apart")
        with clock("speakers"):
            _suggest_speakers(audio, utterances)
    preds = [UtterancePrediction(index=i, utterance=u) for i, u in enumerate(utterances)]
    errors: dict[int, list[str]] = {i: [] for i in range(len(preds))}

    report(0.5, "reading text")      # before the faces: the face grid may still be finishing meanwhile
    try:
        with clock("text"):
            texts = [u.text for u in utterances]
            contexts = build_contexts(texts, *card.context) if dialogue else None
            text_vectors = models.text_encoder.encode(texts, contexts)
    except BaseException:
        if grid is not None:
            grid.cancel()
        raise

    report(0.6, "reading faces")
    faces = _faces(path, info, utterances, grid, models.device, errors, clock, timings)

    videos: list = [None] * len(utterances)
    if models.video_encoder is not None:
        report(0.7, "reading motion (R3D-18)")
        clips = _frames_per_utterance(path, info, utterances, errors, clock,
                                      encoders.VIDEO_FRAMES, encoders.VIDEO_READ_SIDE)
        with clock("video"):
            videos = _per_utterance(clips, models.video_encoder.encode, errors, "video")

    report(0.8, "listening to the voice")
    cpu = models.device == "cpu"
    with clock("audio"), one_cpu_thread(cpu and VOICE_FROM_WINDOWS):   # pooling only: one thread
        segments = [media.audio_segment(audio, u.start, u.end) for u in utterances]
        voiced = [not encoders.audio_is_silent(s) for s in segments]
        voices = _voices(models, utterances, audio, voiced,
                         windows if models.whisper_name == VOICE_WHISPER else [], errors)

    report(0.9, "fusing")
    with clock("model"), one_cpu_thread(cpu):
        _predict(models, preds, text_vectors, faces, voices, voiced, videos, words_alone=not dialogue)
    for stage in STAGES:
        timings.setdefault(stage, 0.0)            # a stage that had nothing to do (no video branch, ...)
    for i, pred in enumerate(preds):
        pred.error = "; ".join(errors[i])
    analysis.utterances = preds
    report(1.0, "done")
    return analysis


# ---------------------------------------------------------------- stages

def _frames_per_utterance(path, info, utterances: list[Utterance], errors, clock,
                          count: int = encoders.FACE_FRAMES, side: int = FRAME_SIDE) -> list:
    """`count` frames spread across each utterance, at most `side` pixels; one ffmpeg call per
    chunk of utterances (bounded memory)."""
    if not info.has_video:
        return [None] * len(utterances)
    times = [encoders.sample_times(u.start, u.end, count) for u in utterances]
    out: list = []
    per_call = max(1, FRAMES_PER_CALL // count)
    with clock("frames"):
        for first in range(0, len(times), per_call):
            chunk = times[first:first + per_call]
            try:
                flat = media.read_frames(path, [t for ts in chunk for t in ts], max_side=side)
            except media.MediaError as err:
                for i in range(first, first + len(chunk)):
                    errors[i].append(f"frames: {err}")
                out.extend([None] * len(chunk))
                continue
            k = 0
            for ts in chunk:
                out.append(flat[k:k + len(ts)])
                k += len(ts)
    return out


def _faces(path, info, utterances: list[Utterance], grid, device: str, errors, clock, timings) -> list:
    """Each utterance's face features: from the face grid found during transcription (core.face_grid),
    else (no grid, or it failed) from frames read per utterance now."""
    found = None
    if grid is not None:
        with clock("face"):
            try:
                found = grid.result()
            except Exception as err:   # unreadable at some point: the per-utterance path says where
                log.warning("face grid failed (%s); reading frames per utterance", err)
                found = None
    if found is None:
        frames = _frames_per_utterance(path, info, utterances, errors, clock)
        with clock("face"):
            return _per_utterance(frames, partial(encoders.encode_faces, device=device), errors, "face")
    timings["face_grid"] = found.seconds          # spent in the background, during transcription
    with clock("face"):
        if found.probs is not None:               # the face net ran in the background too
            return _per_utterance(utterances, lambda u: found.features_for(u.start, u.end), errors, "face")
        crops = [found.crops_for(u.start, u.end) for u in utterances]
        return _per_utterance(crops, lambda c: encoders.encode_face_crops(*c, device=device), errors, "face")


def _voices(models: Models, utterances: list[Utterance], audio: np.ndarray, voiced: list[bool],
            windows: list, errors) -> list:
    """Each voiced utterance's voice feature (core.voice): the states of its speech
    (voice.voiced_span) cut out of the transcription window that holds it (no second encoder
    pass), else from a window encoded around it."""
    if "audio" not in models.checkpoint.model.config.modalities:
        return [None] * len(utterances)
    whisper = None

    def one(i: int):
        nonlocal whisper
        start, end = voice.voiced_span(audio, utterances[i].start, utterances[i].end)
        states = voice.from_windows(windows, start, end) if VOICE_FROM_WINDOWS else None
        if states is not None:
            return voice.pool(states)
        if whisper is None:
            whisper = load_whisper(VOICE_WHISPER, device=models.device)
        with WHISPER_LOCK:
            return voice.voice_feature(whisper, audio, start, end)
    return _per_utterance([i if ok else None for i, ok in enumerate(voiced)], one, errors, "audio")


def _suggest_speakers(audio: np.ndarray, utterances: list[Utterance]) -> None:
    """Each transcribed utterance's suggested speaker ("Speaker 1", ...: core.speakers). A failure
    leaves the speakers blank, as before there were suggestions, and never fails the analysis."""
    try:
        names = speakers.name_speakers(audio, [(u.start, u.end) for u in utterances])
    except Exception as err:          # the speakers are a suggestion: the rest of the analysis stands
        log.warning("speakers left blank: %s", err)
        return
    for u, name in zip(utterances, names):
        u.speaker = u.speaker or name


def _per_utterance(items: list, fn, errors: dict[int, list[str]], stage: str) -> list:
    """fn(item) for each item; a failure becomes that utterance's error and a None result."""
    results = []
    for i, item in enumerate(items):
        if item is None:
            results.append(None)
            continue
        try:
            results.append(fn(item))
        except Exception as err:   # one utterance must never fail the others
            errors[i].append(f"{stage}: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}")
            results.append(None)
    return results


@torch.no_grad()
def _predict(models: Models, preds, text_vectors, faces, voices, voiced, videos=None,
             words_alone: bool = False) -> None:
    """Batch the features through the fusion model and fill each prediction and opinion."""
    model, card = models.checkpoint.model, models.card
    trained = set(card.trained_modalities) - ({"audio"} if models.voice_refused else set())
    use = (lambda m: m in trained) if trained else (lambda m: True)   # untrained: fuse what is there
    n, dev = len(preds), models.device
    face_ok = [f is not None and f.present for f in faces]
    audio_ok = [v is not None and ok for v, ok in zip(voices, voiced)]
    videos = videos if videos is not None else [None] * n
    video_ok = [v is not None for v in videos]
    config = model.config
    features = {
        "text": text_vectors.to(dev),
        "face": torch.from_numpy(np.stack([f.vector if ok else np.zeros(config.face_dim, np.float32)
                                           for f, ok in zip(faces, face_ok)])).to(dev),
        "audio": torch.from_numpy(np.stack([v if ok else np.zeros(config.audio_dim, np.float32)
                                            for v, ok in zip(voices, audio_ok)])).to(dev),
        "video": torch.stack([v if ok else torch.zeros(config.video_dim) for v, ok in zip(videos, video_ok)]).to(dev),
    }
    present = {"text": torch.ones(n, dtype=torch.bool), "face": torch.tensor(face_ok),
               "audio": torch.tensor(audio_ok), "video": torch.tensor(video_ok)}
    inputs, mask = model_batch(config, features, present, use)   # the function training feeds the model with
    out = model(inputs, mask)
    emo = out.emotion_logits.softmax(-1).cpu().tolist()
    sen = out.sentiment_logits.softmax(-1).cpu().tolist()
    heads = {m: (e.softmax(-1).cpu().tolist(), s.softmax(-1).cpu().tolist())
             for m, (e, s) in out.modality_logits.items()}
    voice_share = out.late_share["audio"].cpu().tolist() if "audio" in out.late_share else [1.0] * n
    for i, pred in enumerate(preds):
        pred.emotion_probs, pred.sentiment_probs = emo[i], sen[i]
        words = head_opinion("text", heads, i, True, "", trained, use)
        if words_alone and not words.note:
            words.note = WORDS_ALONE
        pred.opinions = [
            words,
            face_opinion(faces[i], face_ok[i], use("face") and "face" in config.modalities),
            ModalityOpinion("audio", audio_ok[i], note=models.voice_refused) if models.voice_refused else
            with_share(head_opinion("audio", heads, i, audio_ok[i],
                                      "" if audio_ok[i] else "silent: no voice under this utterance", trained, use),
                        voice_share[i]),
            head_opinion("video", heads, i, True, "", trained, use) if video_ok[i]
            else ModalityOpinion("video", False, note=_video_note(models)),
        ]


def _video_note(models: Models) -> str:
    if "video" not in models.checkpoint.model.config.modalities:
        return "R3D-18 video encoder off: this checkpoint has no video branch (it needs Kinetics weights)"
    if models.video_encoder is None:
        return models.notes[0] if models.notes else "R3D-18 video encoder off"
    return "no frames for this utterance"


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    """Add the wall seconds spent inside the block to timings[stage]."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0
