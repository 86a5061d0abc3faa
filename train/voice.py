"""Train the shipped voice model on RAVDESS and fuse it late into a checkpoint.

    python -m train.voice --checkpoint assets/model --out assets/model

1. Voice features of the RAVDESS clips (actors 09-24) as the app hears utterances: each actor's
   clips laid into 28-s windows, each window through Whisper's encoder once, each clip's states cut
   out and pooled (train.ravdess.window_features, core.voice), and each clip alone in its own
   window; cached. --augment adds training-only rows: each clip heard alone once more, played
   faster or slower (speed) or under noise (noise; train.voice_states.perturb); they are never
   scored. --exclude leaves actors out. Calm is dropped from training by default (--calm
   drop; --calm neutral folds it into neutral): measured by the same CV, dropping it lifts the
   7-class accuracy by about 2 points (calm and neutral, sad voices blur together).
2. Actor-independent cross-validation: 8 folds, each holding out 2 whole actors. Each fold trains
   the checkpoint's own voice branch (core.model: standardisation, projection, heads) with one
   fixed recipe per candidate in RECIPES; the recipe with the best held-out accuracy is kept. Its
   out-of-fold predictions give the accuracy per class on actors the head never heard, and a
   temperature per head (emotion, sentiment: each fitted on its own out-of-fold logits) that
   calibrates it (RAVDESS is acted: the raw head is over-confident). The voice's sentiment is read
   off its emotion opinion (core.model.sentiment_of_emotion): a RAVDESS clip's sentiment is its
   emotion's polarity; the card keeps both ways' held-out scores.
3. The fusion weight: there is no data where words and voice are labelled together, so pairs
   are built from what there is, on out-of-fold voices only:
   - flat words, emotional voice: the checkpoint's text opinion of the RAVDESS sentence ("Kids
     are talking by the door") with each held-out clip's voice; the fused label should be the
     clip's label;
   - emotional words, flat voice: MELD dev utterances whose words the text model reads as an
     emotion, each with the voice of a held-out neutral RAVDESS clip; the fused label should be
     the words' label.
   The weight in WEIGHTS with the best worse-of-the-two is kept. Each held-out voice counts in
   these pairs as the app would count it (core.familiarity): fully up to the 99th percentile of
   the held-out actors' distances from the training voices, not at all from NONE_RATIO times that.
4. The head is trained once more on all 16 actors, calibrated, and written into the checkpoint as
   a late-fused modality (core.model.late_fuse) with that weight and the familiarity gate (the
   training voices' principal directions and the two distances); the voice tensors go to their
   own file (voice.safetensors) with the licence notice beside it (CC BY-NC-SA 4.0), and the card
   records all of the above. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core import checkpoint as ck
from core import familiarity
from core.labels import EMOTIONS, SENTIMENTS
from core.model import POLARITY, EmotionModel, ModelConfig, late_fuse, sentiment_of_emotion

from . import ravdess, ridge
from .card import fusion_section
from .ridge import voice_branch

FOLDS = 8
RECIPES = [{"epochs": 15, "weight_decay": 0.3, "lr": 1e-3}, {"epochs": 30, "weight_decay": 0.3, "lr": 3e-4},
           {"epochs": 30, "weight_decay": 1.0, "lr": 3e-4}, {"ridge": 1000.0}, {"ridge": 3000.0}]
WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
SENTENCE = "Kids are talking by the door"
NOTICE = f"""The voice branch in voice.safetensors was trained on the Ryerson Audio-Visual Database of
Emotional Speech and Song (RAVDESS), actors 09-24, speech, audio only.

Licence: Creative Commons Attribution-NonCommercial-ShareAlike 4.0 International (CC BY-NC-SA 4.0),
https://creativecommons.org/licenses/by-nc-sa/4.0/ . These weights are a derivative of RAVDESS:
non-commercial use only, with attribution, and derivatives under the same licence. The rest of
the checkpoint (model.safetensors, text_encoder.safetensors) is not trained on RAVDESS.

{ravdess.CITATION}
"""


def ridge_branch(config: ModelConfig, x: np.ndarray, y: np.ndarray, s: np.ndarray, lam: float) -> EmotionModel:
    """A fresh model whose voice branch is a ridge classifier on the standardised features, with
    L2 penalty `lam`, written into the branch exactly (train.ridge)."""
    model = EmotionModel(config)
    ridge.write_branch(voice_branch(model), *ridge.fit(x, y, s, lam))
    return model.eval()


def train_branch(config: ModelConfig, x: np.ndarray, y: np.ndarray, s: np.ndarray, recipe: dict,
                 seed: int = 0) -> EmotionModel:
    """A fresh model whose voice branch is trained on (x, y, s) with `recipe` (gradient steps, or
    {"ridge": lam}: ridge_branch); standardised on x."""
    if "ridge" in recipe:
        return ridge_branch(config, x, y, s, recipe["ridge"])
    torch.manual_seed(seed)
    model = EmotionModel(config)
    branch = voice_branch(model)
    scaler = branch["encoder"][0]
    xt, yt, st = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(y).long(), torch.from_numpy(s).long()
    scaler.mean.copy_(xt.mean(0))
    scaler.std.copy_(xt.std(0).clamp_min(1e-4))
    counts = np.bincount(y, minlength=len(EMOTIONS)).astype(np.float64)
    w = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** 0.5, 0.0)
    ce_e = nn.CrossEntropyLoss(weight=torch.tensor(w / w[y].mean(), dtype=torch.float32))
    ce_s = nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(branch.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    rng = np.random.default_rng(seed)
    branch.train()
    for _ in range(recipe["epochs"]):
        for idx in np.array_split(rng.permutation(len(y)), max(1, len(y) // 32)):
            h = branch["encoder"](xt[idx])
            loss = ce_e(branch["emotion"](h), yt[idx]) + 0.5 * ce_s(branch["sentiment"](h), st[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def voice_logits(model: EmotionModel, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    branch = voice_branch(model).eval()
    h = branch["encoder"](torch.from_numpy(np.asarray(x, np.float32)))
    return branch["emotion"](h), branch["sentiment"](h)


def cross_validate(config, x, y, s, actor, recipe) -> tuple[torch.Tensor, torch.Tensor]:
    """Out-of-fold emotion and sentiment logits: each clip scored by a head that never heard its actor."""
    actors = sorted(set(actor.tolist()))
    folds = [actors[i::FOLDS] for i in range(FOLDS)]
    emo = torch.zeros(len(y), len(EMOTIONS))
    sen = torch.zeros(len(y), len(SENTIMENTS))
    for held in folds:
        test = np.isin(actor, held)
        model = train_branch(config, x[~test], y[~test], s[~test], recipe)
        e, t = voice_logits(model, x[test])
        emo[torch.from_numpy(test)], sen[torch.from_numpy(test)] = e, t
    return emo, sen


def temperature(logits: torch.Tensor, y: np.ndarray) -> float:
    """The scalar T minimising the negative log-likelihood of logits / T (grid search)."""
    target = torch.from_numpy(y).long()
    grid = np.exp(np.linspace(np.log(0.02), np.log(8.0), 120))
    nll = [float(nn.functional.cross_entropy(logits / t, target)) for t in grid]
    return float(grid[int(np.argmin(nll))])


def per_class(pred: np.ndarray, y: np.ndarray) -> dict:
    return {EMOTIONS[c]: round(100.0 * float((pred[y == c] == c).mean()), 1) for c in range(len(EMOTIONS))
            if (y == c).any()}


@torch.no_grad()
def sentiment_check(head: torch.Tensor, emotion: torch.Tensor, s: np.ndarray, keep: np.ndarray) -> dict:
    """Held-out sentiment accuracy (%) and negative log-likelihood of the voice's own sentiment head
    and of its sentiment read off its emotion (core.model.sentiment_of_emotion), and how often the
    head's sentiment contradicts the polarity of the head's own top emotion."""
    derived = sentiment_of_emotion(emotion)
    target = torch.from_numpy(s[keep]).long()
    out = {}
    for name, logits in (("own_head", head[torch.from_numpy(keep)]), ("from_emotion", derived[torch.from_numpy(keep)])):
        out[name] = {"accuracy": round(100.0 * float((logits.argmax(-1) == target).float().mean()), 1),
                     "nll": round(float(nn.functional.cross_entropy(logits, target)), 3)}
    polarity_of_top = POLARITY[emotion.argmax(-1)].argmax(-1)
    out["own_head_contradicts_its_emotion_pct"] = round(
        100.0 * float((polarity_of_top != head.argmax(-1))[torch.from_numpy(keep)].float().mean()), 1)
    return out


@torch.no_grad()
def text_logits(checkpoint: ck.Checkpoint, texts: list[str], contexts: list[str] | None = None) -> torch.Tensor:
    """The checkpoint's fused emotion logits from the words alone (voice absent), as the app."""
    from .evaluate import text_encoder_for
    vectors = text_encoder_for(checkpoint).encode(texts, contexts)
    out = checkpoint.model({"text": vectors}, {"text": torch.ones(len(texts), dtype=torch.bool)})
    return out.emotion_logits


def fusion_checks(checkpoint, voice_emo: torch.Tensor, y: np.ndarray, meld_dev: str | None,
                  share: torch.Tensor | None = None) -> dict:
    """Worse-of-two accuracy per late weight on the paired checks (see the module docstring).
    share [N]: each voice's part of the weight (core.familiarity; default: all 1)."""
    neutral = EMOTIONS.index("neutral")
    flat = text_logits(checkpoint, [SENTENCE]).expand(len(y), -1)
    emotional_words = None
    if meld_dev and Path(meld_dev).is_file():
        from .data import load_text_split
        turns, ahead = checkpoint.card.context
        split = load_text_split(meld_dev, turns, ahead=ahead)
        words = text_logits(checkpoint, [e.text for e in split.examples], [e.context for e in split.examples])
        gold = torch.tensor([e.emotion for e in split.examples])
        keep = (words.argmax(-1) != neutral) & (gold != neutral) & (words.argmax(-1) == gold)
        emotional_words = words[keep]
    share = torch.ones(len(y)) if share is None else share.float()
    flat_voices = voice_emo[torch.from_numpy(y == neutral)]
    flat_shares = share[torch.from_numpy(y == neutral)]
    rows = {}
    for w in WEIGHTS:
        weight = torch.tensor(float(w))
        fused = late_fuse(flat, [(voice_emo, share, weight)], neutral).argmax(-1).numpy()
        follows_voice = float((fused == y).mean())
        follows_words = None
        if emotional_words is not None and len(emotional_words):
            g = torch.Generator().manual_seed(0)
            chosen = torch.randint(len(flat_voices), (len(emotional_words),), generator=g)
            f = late_fuse(emotional_words, [(flat_voices[chosen], flat_shares[chosen], weight)], neutral).argmax(-1)
            follows_words = float((f == emotional_words.argmax(-1)).float().mean())
        rows[w] = {"flat_words_emotional_voice": round(100 * follows_voice, 1),
                   "emotional_words_flat_voice": None if follows_words is None else round(100 * follows_words, 1),
                   "emotional_words_rows": 0 if emotional_words is None else int(len(emotional_words))}
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m train.voice", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(ck.DEFAULT_CHECKPOINT), help="checkpoint to add the voice to")
    p.add_argument("--out", required=True, help="checkpoint folder to write (may be --checkpoint)")
    p.add_argument("--data", default=None, help="RAVDESS folder (default ../shared/data/ravdess)")
    p.add_argument("--meld-dev", default=str(ravdess.DEFAULT_ROOT.parent / "meld" / "dev_sent_emo.csv"),
                   help="MELD dev CSV for the emotional-words check")
    p.add_argument("--exclude", default="", help="actors to leave out entirely, e.g. 23,24 (a fair --init "
                                                 "for train.ravdess_check)")
    p.add_argument("--contexts", default="windows,clips",
                   help="how the clips are heard in training: windows (28-s windows of one actor's clips, as "
                        "utterances of a video), clips (each alone, as a one-utterance file), or both")
    p.add_argument("--augment", default="",
                   help="training-only copies of the clips heard alone: speed (0.9 or 1.1), noise (20 dB SNR), "
                        "pitch (-2 or +2 semitones, tempo kept), gain (-20 to +10 dB), or several (speed,gain); never scored")
    p.add_argument("--calm", choices=("drop", "neutral"), default="drop",
                   help="RAVDESS calm (no MELD label): left out of training, or trained as neutral")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    augment = [k.strip() for k in args.augment.split(",") if k.strip()]
    kinds = {"speed", "noise", "pitch", "gain"}
    if set(augment) - kinds:
        p.error(f"--augment: unknown {sorted(set(augment) - kinds)} ({', '.join(sorted(kinds))})")
    torch.set_num_threads(args.threads)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)   # noqa: E731
    from core.transcribe import load_whisper
    from core.voice import FEATURE, LAYER, encoder_digest

    clips = ravdess.load_clips(args.data)
    whisper = load_whisper("base", device="cpu")
    excluded = {int(a) for a in args.exclude.split(",") if a.strip()}
    used = [i for i, c in enumerate(clips) if c.actor not in excluded and not (c.calm and args.calm == "drop")]
    views = {"windows": ravdess.window_features(clips, whisper)[used]}   # calm clips stay as neighbours
    clips = [clips[i] for i in used]
    if "clips" in args.contexts.split(","):       # each clip heard alone, as train.features and a one-utterance file
        views["clips"] = ravdess.clip_features(clips, whisper)
    scored_views = list(views)
    for kind in augment:                          # training rows only, never scored
        from core.voice import pool
        from .voice_states import augmented_clip_states
        views[kind] = np.stack([pool(torch.from_numpy(st)) for st in augmented_clip_states(clips, whisper, kind)])
    view_of = np.concatenate([[name] * len(clips) for name in views])
    x = np.concatenate(list(views.values()))
    clips = clips * len(views)
    y = np.array([c.emotion for c in clips])
    s = np.array([c.sentiment for c in clips])
    actor = np.array([c.actor for c in clips])
    calm = np.array([c.calm for c in clips])
    scored = np.isin(view_of, scored_views)
    base = ck.load_checkpoint(args.checkpoint)
    config = ModelConfig.from_dict({**base.model.config.to_dict(), "late": ["audio"],
                                    "voice_familiarity": familiarity.COMPONENTS,
                                    "sentiment_from_emotion": ["audio"]})   # RAVDESS: sentiment = emotion's polarity

    results = []
    for recipe in RECIPES:
        emo, sen = cross_validate(config, x, y, s, actor, recipe)
        emo, sen = emo[torch.from_numpy(scored)], sen[torch.from_numpy(scored)]
        pred = emo.argmax(-1).numpy()
        acc7 = 100.0 * float((pred[~calm[scored]] == y[scored][~calm[scored]]).mean())
        by_view = {v: round(100.0 * float((pred[k] == y[scored][k]).mean()), 1)
                   for v in scored_views for k in [~calm[scored] & (view_of[scored] == v)]}
        results.append((acc7, recipe, emo, by_view, sen))
        log(f"recipe {recipe}: held-out actors, 7 classes (calm left out) {acc7:.1f} % {by_view}, "
            f"calm as neutral {100.0 * float((pred == y[scored]).mean()):.1f} %")
    acc7, recipe, emo, by_view, sen = max(results, key=lambda r: r[0])
    pred = emo.argmax(-1).numpy()
    ys, calm_s, view_s = y[scored], calm[scored], view_of[scored]       # the scored rows (no augmented copy)
    t = temperature(emo, ys)
    t_sentiment = temperature(sen, s[scored])     # each head its own: one T for both left the sentiment over-sure
    calibrated = emo / t
    sentiment_cv = sentiment_check(sen / t_sentiment, calibrated, s[scored], ~calm_s)
    log(f"voice sentiment, held-out actors: {json.dumps(sentiment_cv)}")
    # how far an unheard actor's voice lies from the training voices (core.familiarity): the
    # distances up to the 99th percentile count fully, NONE_RATIO times that not at all
    held_dist = familiarity.held_out_distances(x[scored], actor[scored])
    full = float(np.percentile(held_dist[~calm_s], familiarity.FULL_QUANTILE))
    none = full * familiarity.NONE_RATIO
    share = familiarity.reliance(torch.from_numpy(held_dist), full, none)
    log(f"familiarity: held-out distances median {np.median(held_dist):.3f}, p99 {full:.3f} (full), none at "
        f"{none:.3f}; {100 * float((share < 1).float().mean()):.1f} % of held-out voices counted less")
    checks = fusion_checks(base, calibrated, ys, args.meld_dev, share)
    weight = max(WEIGHTS, key=lambda w: min(v for v in checks[w].values() if isinstance(v, float)))
    log(f"kept {recipe}: {acc7:.1f} %; temperature {t:.3f}, sentiment {t_sentiment:.3f}; fusion checks by weight {json.dumps(checks)}; "
        f"weight {weight}")

    final = train_branch(config, x, y, s, recipe)
    model = EmotionModel(config)
    state = model.state_dict()
    state.update({k: v for k, v in base.model.state_dict().items() if k in state})
    state.update({k: v for k, v in final.state_dict().items() if k.startswith(ck.VOICE_PREFIXES)})
    for head, temp in (("emotion_by.audio", t), ("sentiment_by.audio", t_sentiment)):   # calibrate: logits / T
        state[f"{head}.weight"] = state[f"{head}.weight"] / temp
        state[f"{head}.bias"] = state[f"{head}.bias"] / temp
    state["late_log_weight.audio"] = torch.tensor(float(np.log(weight)))
    model.load_state_dict(state)
    scaler = voice_branch(model)["encoder"][0]
    z = (x - scaler.mean.numpy()) / scaler.std.numpy()
    model.familiarity.set(familiarity.fit_basis(z[scored]), full, none)
    card = base.card
    card.trained_modalities = sorted(set(card.trained_modalities) | {"audio"}, key=["text", "face", "audio",
                                                                                   "video"].index)
    card.data["voice"] = {
        "data": f"RAVDESS speech, actors {sorted(set(actor.tolist()))} ({len(clips) // len(views)} clips; 16 kHz FLAC), "
                "../shared/data/ravdess",
        "licence": ravdess.LICENSE, "file": ck.VOICE_FILE, "notice": NOTICE, "citation": ravdess.CITATION,
        "calm": "dropped from training" if args.calm == "drop" else f"folded into {ravdess.CALM_AS}",
        "feature": f"{FEATURE}: mean and std over the utterance of Whisper base's encoder states after block "
                   f"{LAYER}, in a 30-s window (core.voice); whisper encoder digest {encoder_digest(whisper)}",
        "recipe": recipe, "temperature": round(t, 3), "sentiment_temperature": round(t_sentiment, 3),
        "sentiment": {"how": "read off the voice's emotion opinion, each emotion's probability counted for its "
                             "polarity (core.model.sentiment_of_emotion; surprise neutral): a RAVDESS clip's "
                             "sentiment is its emotion's polarity, so a head of its own learns nothing more, and "
                             "one said joy and negative of the same voice; the sentiment head is kept in the "
                             "file (calibrated) for a retraining that teaches it real sentiment labels",
                      "cross_validation": sentiment_cv},
        "cross_validation": {"folds": FOLDS, "held_out_per_fold": "2 whole actors",
                             "accuracy_7_classes_calm_left_out": round(acc7, 1),
                             "accuracy_with_calm_as_neutral": round(100.0 * float((pred == ys).mean()), 1)
                             if calm.any() else None,
                             "accuracy_by_context": by_view,
                             "per_class_by_context": {v: per_class(pred[~calm_s & (view_s == v)], ys[~calm_s & (view_s == v)])
                                                      for v in scored_views},
                             "per_class": per_class(pred[~calm_s], ys[~calm_s]),
                             "recipes": [{"recipe": r, "accuracy": round(a, 1), "by_context": b}
                                         for a, r, _, b, _ in results]},
        "contexts": scored_views,
        "familiarity": {
            "what": "how far a voice feature lies outside the top principal directions of the training voices "
                    "(core.familiarity); its late-fusion weight is scaled by 1 up to 'full', 0 from 'none', "
                    "linear between; the voice's own opinion is still shown",
            "components": familiarity.COMPONENTS, "full": round(full, 4), "none": round(none, 4),
            "held_out_actor_distances": {"median": round(float(np.median(held_dist)), 4),
                                         "p99": round(full, 4), "max": round(float(held_dist.max()), 4)},
            "held_out_voices_counted_less_pct": round(100 * float((share < 1).float().mean()), 1)},
        **({"augmented_training_rows": [v for v in views if v not in scored_views]} if augment else {}),
    }
    card.data["fusion_how"] = (
        "Late fusion (core.model.late_fuse): the text model (MELD) and the voice head (RAVDESS) learned apart, "
        "no data holds both; 'neutral' counts as no evidence, so the fused label is neutral only if both find it "
        "so, and otherwise the weighted pool of what each finds beyond neutral. The voice weight was chosen on "
        "pairs built from held-out voices: flat words + emotional voice (should follow the voice), MELD dev "
        f"emotional words + neutral voice (should follow the words): by weight {json.dumps(checks)}; kept "
        f"{weight}. The face net's opinion is shown, not fused.")
    card.data["fusion_checks"] = checks[weight]
    card.data["fusion"] = fusion_section(model, card.trained_modalities)
    voice_note = ("Text (MELD, with dialogue context) and voice (RAVDESS acted speech, CC BY-NC-SA 4.0, "
                  "voice.safetensors) fused late; the face net's opinion is shown beside, not fused.")
    old_note = (card.notes or "").strip()        # what the words' training wrote stays after it
    card.notes = old_note if old_note.startswith(voice_note) else " ".join(filter(None, [voice_note, old_note]))
    ck.save_checkpoint(args.out, model, card, base.text_state)
    card = ck.load_checkpoint(args.out).card
    summary = {"voice_accuracy_held_out_actors": round(acc7, 1), "by_context": by_view, "per_class": card.data["voice"]["cross_validation"]["per_class"],
               "temperature": round(t, 3), "sentiment_temperature": round(t_sentiment, 3), "fusion_weight": weight, "fusion_checks": checks[weight], "out": args.out}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
