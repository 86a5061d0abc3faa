"""Label sets and their order. This is the only place they are defined."""

EMOTIONS: tuple[str, ...] = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
SENTIMENTS: tuple[str, ...] = ("negative", "neutral", "positive")

# The FER2013 face-expression net outputs its classes in this order.
FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_TO_EMOTION: dict[str, str] = {
    "angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "joy",
    "sad": "sadness", "surprise": "surprise", "neutral": "neutral",
}
# Index i of a FER output goes to position FER_TO_EMOTION_INDEX[i] in EMOTIONS.
FER_TO_EMOTION_INDEX: tuple[int, ...] = tuple(EMOTIONS.index(FER_TO_EMOTION[c]) for c in FER_CLASSES)

# Polarity of each emotion, used only to read a sentiment off an emotion distribution
# (the face net knows emotions, not sentiment). Surprise is ambiguous in MELD: neutral.
EMOTION_POLARITY: dict[str, str] = {
    "anger": "negative", "disgust": "negative", "fear": "negative", "sadness": "negative",
    "joy": "positive", "neutral": "neutral", "surprise": "neutral",
}

# The sentiments MELD pairs with each emotion (train split: every anger, disgust, fear and sadness
# row is negative, every joy row positive, every neutral row neutral; surprise goes both ways).
MELD_SENTIMENTS: dict[str, tuple[str, ...]] = {
    **{e: (p,) for e, p in EMOTION_POLARITY.items() if e != "surprise"},
    "surprise": ("negative", "positive"),
}

MODALITIES: tuple[str, ...] = ("text", "face", "audio", "video")


def emotion_index(label: str) -> int:
    """Position of an emotion label (case-insensitive); ValueError if unknown."""
    key = label.strip().lower()
    if key not in EMOTIONS:
        raise ValueError(f"unknown emotion {label!r}; expected one of {', '.join(EMOTIONS)}")
    return EMOTIONS.index(key)


def sentiment_index(label: str) -> int:
    """Position of a sentiment label (case-insensitive); ValueError if unknown."""
    key = label.strip().lower()
    if key not in SENTIMENTS:
        raise ValueError(f"unknown sentiment {label!r}; expected one of {', '.join(SENTIMENTS)}")
    return SENTIMENTS.index(key)


def unusual_pair(emotion: str, sentiment: str) -> str:
    """A short note when MELD never pairs this emotion with this sentiment (say "anger" and
    "positive": the heads are read apart, and an annotator may change one and not the other);
    "" when it does, or when either is missing or unknown."""
    allowed = MELD_SENTIMENTS.get((emotion or "").strip().lower())
    sentiment = (sentiment or "").strip().lower()
    if not allowed or sentiment not in SENTIMENTS or sentiment in allowed:
        return ""
    return f"MELD never pairs {emotion.strip().lower()} with {sentiment} (it has {' or '.join(allowed)})"


def fer_to_emotion_probs(fer_probs: list[float]) -> list[float]:
    """Reorder a FER2013 probability vector into EMOTIONS order."""
    out = [0.0] * len(EMOTIONS)
    for i, p in enumerate(fer_probs):
        out[FER_TO_EMOTION_INDEX[i]] = float(p)
    return out


def sentiment_from_emotions(emotion_probs: list[float]) -> list[float]:
    """Collapse an emotion distribution (EMOTIONS order) into a sentiment distribution."""
    out = [0.0] * len(SENTIMENTS)
    for label, p in zip(EMOTIONS, emotion_probs):
        out[SENTIMENTS.index(EMOTION_POLARITY[label])] += float(p)
    return out
