"""Benchmark: `python -m bench [--seconds 60] [--keep DIR]`.

Generates a talking video (espeak-ng speech over a still face, 25 fps, 640x360), analyses it with
the default models and prints seconds per stage, total, real-time factor, peak memory and the word
error rate of the transcript against the words that were spoken.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

SENTENCES = [
    "Kids are talking by the door.", "I can't believe you did that to me.",
    "This is the best day of my whole life.", "Please put the books back on the shelf.",
    "We should leave before the rain starts.", "Why would anybody say something like that?",
    "The meeting has been moved to Thursday afternoon.", "I am so happy for you and your family.",
    "Get out of my house right now.", "Nobody told me the train was cancelled.",
    "Let's order pizza and watch a movie tonight.", "I'm scared of what might happen next.",
    "The garden looks wonderful in the spring.", "That was a terrible thing to say.",
    "Could you help me carry these boxes upstairs?", "We finally finished the project on time.",
]


def make_video(seconds: float, folder: Path) -> tuple[Path, str]:
    """A talking video of about `seconds` seconds and the words spoken in it."""
    from tests import mediagen
    spoken, total, sentences = [], 0.0, []
    while total < seconds - 4.0:
        s = SENTENCES[len(sentences) % len(SENTENCES)]
        sentences.append(s)
        total += 2.3 + 1.0
    wav, spans = mediagen.speech_with_pauses(sentences, folder / "speech.wav", pause=1.0)
    pad = max(0.0, seconds - mediagen.wav_duration(wav))
    full = folder / "speech_full.wav"
    mediagen.ffmpeg("-i", str(wav), "-af", f"apad=pad_dur={pad:.3f}", "-t", f"{seconds:.3f}", str(full))
    video = mediagen.talking_video(full, folder / f"talking_{int(seconds)}s.mp4", size="640x360")
    spoken = " ".join(sentences)
    return video, spoken


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MB (ffmpeg children are small and not counted)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--keep", help="keep the generated video in this folder")
    args = parser.parse_args(argv)

    import torch
    from core.pipeline import STAGES, analyze, load_models
    from core.transcribe import word_error_rate

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    video, spoken = make_video(args.seconds, folder)
    print(f"generated {video.name} in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    models = load_models()
    load_s = time.perf_counter() - t0
    analyze(video, models, use_cache=False)      # warm-up: first-call costs are not per-video costs
    t0 = time.perf_counter()
    result = analyze(video, models, use_cache=False)
    total = time.perf_counter() - t0
    analyze(video, models)                       # fills the cache
    t0 = time.perf_counter()
    analyze(video, models)                       # reopening: from the cache
    reopen = time.perf_counter() - t0
    heard = " ".join(p.utterance.text for p in result.utterances)
    peak = peak_rss_mb()

    print(f"\nmachine: {torch.get_num_threads()} torch threads, cuda={torch.cuda.is_available()}")
    print(f"model load (once per process): {load_s:6.2f} s")
    print(f"{'stage':<12}{'seconds':>9}")
    for stage in STAGES:
        print(f"{stage:<12}{result.timings.get(stage, 0.0):>9.2f}")
    print(f"{'total':<12}{total:>9.2f}")
    print(f"video seconds {result.media.duration:.1f}, real-time factor {total / result.media.duration:.3f}")
    print(f"utterances {len(result.utterances)}, WER {100 * word_error_rate(spoken, heard):.1f} %")
    print(f"reopening the analysed video (cache): {reopen:.3f} s")
    print(f"peak RSS: {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
