"""The correction-loop check: does training on tens of corrected clips teach the model a voice?

    python -m train.ravdess_check --work runs/ravdess-check [--train-actors 9,10,11,12,13,14]
                                  [--test-actors 23,24] [--init assets/model]

Builds, from ../shared/data/ravdess, two exports laid out exactly as the app writes them
(webapp/export.py: `{base}/{base}.csv` in MELD format + `{base}/clips/dia{D}_utt{U}.mp4`, each
clip the actor's audio under one still face, skimage's public-domain astronaut): the train export
holds one clip per emotion per train actor (7 x 6 = 42 clips: strong intensity, neutral at
normal), the test export PER_CLASS clips per emotion of each test actor (calm left out). Then runs
the README's commands, `python -m train.train --train train.zip [--init CKPT] --out ...`, with and
without --init, and scores each result with `python -m train.evaluate --clips test.zip` (every
modality the checkpoint uses, as the app predicts): each test actor's clips form one dialogue,
so their voices are scored heard together, as the app hears the utterances of one video
(`fused_accuracy`), and each clip heard alone, as a one-utterance file
(`fused_accuracy_heard_alone`). The last stdout line is one JSON object.

Mind what --init's checkpoint has heard: the shipped voice head was trained without actors 23
and 24 (train.voice --exclude 23,24), the default test actors, so it never heard them.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from core.labels import EMOTIONS, EMOTION_POLARITY
from core.meld import MeldRow, write_meld_csv

from . import ravdess

PER_CLASS = 4
TRAIN_ACTORS = (9, 10, 11, 12, 13, 14)
TEST_ACTORS = (23, 24)


def still_face(folder: Path) -> Path:
    """skimage's astronaut (public domain) as a PNG: the one still face under every clip."""
    from PIL import Image
    from skimage import data
    path = folder / "face.png"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.astronaut()).resize((320, 320)).save(path)
    return path


def clip_video(audio: Path, face: Path, out: Path) -> Path:
    """The still face looped under the clip's audio (libx264 + aac), as a recorded utterance: the
    picture as long as the audio (`-shortest` alone let a looped image run to twice its length)."""
    import subprocess

    import imageio_ffmpeg

    from core import media
    if not out.is_file():
        seconds = media.audio_seconds(audio)
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-loop", "1",
                        "-framerate", "10", "-i", str(face), "-i", str(audio), "-c:v", "libx264",
                        "-pix_fmt", "yuv420p", "-c:a", "aac", "-t", f"{seconds:.3f}", str(out)], check=True)
    return out


def pick(clips: list[ravdess.VoiceClip], actors, per_class: int, seed: int) -> list[ravdess.VoiceClip]:
    """Per actor and emotion (calm left out): `per_class` clips, strong intensity first, seeded."""
    rng = np.random.default_rng(seed)
    out = []
    for actor in actors:
        for e in range(len(EMOTIONS)):
            pool = [c for c in clips if c.actor == actor and c.emotion == e and not c.calm]
            pool.sort(key=lambda c: (c.intensity != "strong", str(c.path)))
            strong = [c for c in pool if c.intensity == "strong"] or pool
            order = strong + [c for c in pool if c not in strong]
            head = order[:per_class] if per_class > 1 else [strong[int(rng.integers(len(strong)))]]
            out += head
    return out


def write_export(clips: list[ravdess.VoiceClip], folder: Path, base: str, seed: int = 0) -> Path:
    """The app's export zip for these clips: one dialogue per actor, its utterances in a seeded
    random order (a real dialogue is not sorted by emotion: in label order, an utterance's place
    and its dialogue context would give its label away to the text branch)."""
    root = folder / base
    (root / "clips").mkdir(parents=True, exist_ok=True)
    face = still_face(folder)
    rng = np.random.default_rng(seed)
    by_actor: dict[int, list[ravdess.VoiceClip]] = {}
    for c in clips:
        by_actor.setdefault(c.actor, []).append(c)
    clips = [group[i] for group in by_actor.values() for i in rng.permutation(len(group))]
    rows, counter = [], {}
    for c in clips:
        u = counter.get(c.actor, 0)
        counter[c.actor] = u + 1
        emotion = EMOTIONS[c.emotion]
        rows.append(MeldRow(c.statement + ".", f"Actor {c.actor:02d}", emotion, EMOTION_POLARITY[emotion],
                            c.actor, u, None, None, 0.0, 4.0))
        clip_video(c.path, face, root / "clips" / f"dia{c.actor}_utt{u}.mp4")
    write_meld_csv(rows, root / f"{base}.csv")
    zip_path = folder / f"{base}.zip"
    with zipfile.ZipFile(zip_path, "w") as z:
        for path in sorted(root.rglob("*")):
            z.write(path, path.relative_to(folder).as_posix(), compress_type=zipfile.ZIP_STORED)
    return zip_path


def run(work: Path, train_actors, test_actors, inits: list[str | None], per_class: int = PER_CLASS,
        seed: int = 0, threads: int = 2, cache: str | None = None) -> dict:
    from .evaluate import evaluate_clips
    from .train import main as train_main
    clips = ravdess.load_clips()
    train_zip = write_export(pick(clips, train_actors, 1, seed), work, "ravdess_train", seed)
    test_zip = write_export(pick(clips, test_actors, per_class, seed), work, "ravdess_test", seed)
    cache = cache or str(work / "features")
    results = {}
    for init in inits:
        tag = "scratch" if init is None else f"init {init}"
        out = work / ("model-scratch" if init is None else f"model-init-{Path(init).name}")
        args = ["--train", str(train_zip), "--out", str(out), "--tb", str(work / "tb"), "--feature-cache", cache,
                "--threads", str(threads), "--quiet", "--seed", str(seed)] + (["--init", init] if init else [])
        summary = train_main(args)
        scored = evaluate_clips(out, test_zip, None, cache)
        alone = scored.get("voice_heard_alone") or {}
        results[tag] = {"fused_accuracy": scored["emotion_accuracy"], "heads": scored["heads"],
                        "fused_accuracy_heard_alone": alone.get("emotion_accuracy"),
                        "heads_heard_alone": alone.get("heads"),
                        "trained": summary["trained_modalities"], "kept": summary["kept"],
                        "epochs": summary["epochs_run"], "train_rows": summary["train_rows"],
                        "test_rows": scored["rows"]}
        print(f"{tag}: fused emotion accuracy on actors {list(test_actors)}: {scored['emotion_accuracy']:.1f} % "
              f"with each actor's clips heard together as one video, {alone.get('emotion_accuracy', float('nan')):.1f} % "
              f"with each clip heard alone ({scored['rows']} clips); heads {json.dumps(scored['heads'])}",
              file=sys.stderr, flush=True)
    return {"train_actors": list(train_actors), "test_actors": list(test_actors), "results": results}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m train.ravdess_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="folder for the exports, checkpoints and feature cache")
    p.add_argument("--train-actors", default=",".join(map(str, TRAIN_ACTORS)))
    p.add_argument("--test-actors", default=",".join(map(str, TEST_ACTORS)))
    p.add_argument("--init", action="append", default=[], help="checkpoint for a --init run (repeatable)")
    p.add_argument("--per-class", type=int, default=PER_CLASS, help="test clips per emotion and actor")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if ravdess.find_root() is None:
        raise SystemExit(f"error: no RAVDESS data at {ravdess.DEFAULT_ROOT}")
    result = run(Path(args.work), [int(a) for a in args.train_actors.split(",")],
                 [int(a) for a in args.test_actors.split(",")], [None] + args.init, args.per_class,
                 threads=args.threads)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
