"""Each modality's opinion of an utterance, as the page and the JSON show it (core.types.ModalityOpinion).

core.pipeline runs the model; these functions turn its per-modality heads, the face net's output
and the voice's share of its fusion weight (core.familiarity) into opinions with plain notes.
"""

from __future__ import annotations

from .labels import sentiment_from_emotions
from .types import ModalityOpinion

UNFAMILIAR_VOICE = "sounds unlike the voices it learned from"   # core.familiarity


def head_opinion(m: str, heads: dict, i: int, present: bool, why_absent: str, trained: set[str], use) -> ModalityOpinion:
    """Modality m's own head on utterance i (heads: m -> (emotion probs, sentiment probs) per
    utterance), or why it has no opinion: absent, no input, or a head the checkpoint never trained."""
    if not present:
        return ModalityOpinion(m, False, note=why_absent)
    if m not in heads:
        return ModalityOpinion(m, True, note="this checkpoint has no input for this modality")
    if m not in trained:
        return ModalityOpinion(m, True, note="head untrained in this checkpoint: opinion not shown",
                               used_in_fusion=use(m))
    e, s = heads[m]
    return ModalityOpinion(m, True, e[i], s[i], note="", used_in_fusion=True)


def with_share(opinion: ModalityOpinion, share: float) -> ModalityOpinion:
    """Mark a voice that fusion counted less because it sounds unlike the voices its head learned
    from (core.familiarity)."""
    if not (opinion.present and opinion.used_in_fusion and opinion.emotion_probs) or share >= 0.995:
        return opinion
    opinion.fusion_share = round(float(share), 3)
    if share <= 0.005:
        opinion.used_in_fusion = False
        opinion.note = UNFAMILIAR_VOICE + ": not counted"
    else:
        opinion.note = f"{UNFAMILIAR_VOICE}: counted at {share:.0%}"
    return opinion


def face_opinion(face, ok: bool, fused: bool) -> ModalityOpinion:
    """The pretrained face net's opinion (core.encoders.FaceFeatures), or why there is none."""
    if face is None:
        return ModalityOpinion("face", False, note="no video")
    if not ok:
        return ModalityOpinion("face", False, note=f"no face found in {face.frames_seen} frames")
    probs = list(face.emotion_probs)
    return ModalityOpinion("face", True, probs, sentiment_from_emotions(probs),
                           note=f"pretrained FER2013 net, face in {face.frames_with_face}/{face.frames_seen} frames",
                           used_in_fusion=fused)
