"""Data that crosses module lines: utterances, per-modality opinions, predictions, analyses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .labels import EMOTIONS, SENTIMENTS


@dataclass
class MediaInfo:
    """What a media file holds, as probed."""

    path: str
    duration: float              # seconds (0.0 when unknown)
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    video_codec: str = ""
    audio_codec: str = ""
    container: str = ""          # ffmpeg's demuxer, e.g. "matroska,webm" (core.media.ALLOWED_FORMATS)
    audio_tracks: int = 0        # audio streams in the file; only the first is analysed
    audio_start: float = 0.0     # seconds of the file's timeline before its first audio track starts


@dataclass
class Utterance:
    """One stretch of speech with its transcript and Whisper's confidence signals."""

    start: float                 # seconds
    end: float                   # seconds
    text: str
    avg_logprob: float = 0.0     # Whisper's mean token log-probability
    no_speech_prob: float = 0.0  # Whisper's probability that the segment is not speech
    compression_ratio: float = 0.0
    speaker: str = ""

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)


class _TopLabels:
    """`emotion` / `sentiment`: the top label of `emotion_probs` / `sentiment_probs` ("" when empty)."""

    emotion_probs: list[float]
    sentiment_probs: list[float]

    @property
    def emotion(self) -> str:
        return EMOTIONS[_argmax(self.emotion_probs)] if self.emotion_probs else ""

    @property
    def sentiment(self) -> str:
        return SENTIMENTS[_argmax(self.sentiment_probs)] if self.sentiment_probs else ""


@dataclass(frozen=True)
class SpokenLanguage:
    """The language Whisper hears on the first window of speech: its likeliest one and how sure it
    is, and the probability of English (the language the words model learned)."""

    code: str                   # Whisper's code: "en", "fr", ...
    probability: float
    english: float


@dataclass
class ModalityOpinion(_TopLabels):
    """What one modality says about an utterance.

    `present` is False when the modality could not be read (no face in view, no audio track,
    silence) or when the checkpoint has no trained head for it; `note` says which.
    Probabilities are in EMOTIONS / SENTIMENTS order, or empty when absent.
    """

    modality: str
    present: bool
    emotion_probs: list[float] = field(default_factory=list)
    sentiment_probs: list[float] = field(default_factory=list)
    note: str = ""
    used_in_fusion: bool = False
    fusion_share: float = 1.0    # 0..1: how much of its fusion weight it got (an unfamiliar voice: less)


@dataclass
class UtterancePrediction(_TopLabels):
    """The fused prediction for one utterance, with each modality's opinion."""

    index: int
    utterance: Utterance
    emotion_probs: list[float] = field(default_factory=list)
    sentiment_probs: list[float] = field(default_factory=list)
    opinions: list[ModalityOpinion] = field(default_factory=list)
    error: str = ""              # a one-line message when this utterance could not be analysed

    @property
    def confidence(self) -> float:
        return max(self.emotion_probs) if self.emotion_probs else 0.0

    def opinion(self, modality: str) -> ModalityOpinion | None:
        return next((o for o in self.opinions if o.modality == modality), None)


@dataclass
class Analysis:
    """Everything the pipeline found in one file. JSON-able through to_dict / from_dict."""

    source: str
    media: MediaInfo
    utterances: list[UtterancePrediction] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)   # checkpoint summary (name, trained, modalities)
    message: str = ""            # e.g. "No speech found." when there are no utterances
    timings: dict[str, float] = field(default_factory=dict)
    language: SpokenLanguage | None = None   # what Whisper heard (None: not transcribed, English-only Whisper)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for u, pred in zip(d["utterances"], self.utterances):
            u["emotion"], u["sentiment"] = pred.emotion, pred.sentiment
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Analysis":
        preds = []
        for u in d.get("utterances", []):
            opinions = [ModalityOpinion(**o) for o in u.get("opinions", [])]
            preds.append(UtterancePrediction(
                index=u["index"], utterance=Utterance(**u["utterance"]),
                emotion_probs=list(u.get("emotion_probs", [])),
                sentiment_probs=list(u.get("sentiment_probs", [])),
                opinions=opinions, error=u.get("error", "")))
        return cls(source=d["source"], media=MediaInfo(**d["media"]), utterances=preds,
                   model=dict(d.get("model", {})), message=d.get("message", ""),
                   timings=dict(d.get("timings", {})),
                   language=SpokenLanguage(**d["language"]) if d.get("language") else None)


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


class UserError(Exception):
    """A problem with what the user gave or asked for (a file, a value, a request): its message is
    one line meant for them. Every such error in the project derives from this class, so the app and
    the CLI catch one type and show its line, never a traceback."""


def error_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an error's message (its type's name when empty), cut to `limit` characters."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__
