"""Benchmark: `python -m bench [--seconds 60 | --quick] [--batch 10] [--jobs 2] [--no-app] [--keep DIR] [--checkpoint DIR]`.

`python -m bench --vs-faster-whisper [--encoders bf16-top,bf16-bottom,bf16]`: only our full analysis side by side
with faster-whisper's transcript alone (tools/vs_faster_whisper.py), and with other Whisper encoder
precisions when asked.

Generates a talking video (espeak-ng speech over a still face, 25 fps, 640x360), analyses it with
the default models and prints the device, seconds per stage, total, real-time factor, peak memory
and the word error rate of the transcript against the words that were spoken. Then whether every
utterance is heard: a recording of 8 known clips (RAVDESS real speech when ../shared/data/ravdess is
there, and espeak-ng) with pauses, clean, under pink noise and over music, and 14 acted RAVDESS clips
of the same two sentences clean and under noise: clips heard, word error rate, longest utterance
(`--no-hearing` skips it). Then one sentence said 14 times against varied speech: seconds per audio
second of each, their ratio, the words recovered and the temperature fallbacks (`--no-repetition`
skips it). Then the throughput of `python -m core batch` on
`--batch` such videos, and how long `app.py` takes to answer its first HTTP request and its first
analysis.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import core  # noqa: F401  (before torch: core sets OpenMP's passive waiting)

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


QUICK_SECONDS = 20.0
APP_TIMEOUT = 300.0          # seconds to wait for app.py before giving up
FIRST_CLIP_SECONDS = 6.0     # the app's first analysis is of a clip this long
REPEATS = 3                  # alternating runs of each case in the repetition check (median)


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


def hearing_check(folder: Path, device: str) -> None:
    """Every clip heard? The recall recording clean, under pink noise and over music."""
    from core.transcribe import load_whisper, transcribe
    from tests import hearing
    model = load_whisper(device=device)
    base = hearing.recording(hearing.source_clips(folder / "hearing"))
    real = sum(c.source.endswith(".flac") for c in base.clips)
    print(f"\nhearing: {len(base.clips)} clips ({real} real RAVDESS, {len(base.clips) - real} espeak-ng) "
          f"with pauses, {len(base.audio) / hearing.SAMPLE_RATE:.1f} s")
    print(f"{'condition':<28}{'clips heard':>12}{'WER %':>8}{'longest s':>11}{'seconds':>9}")
    names = {"clean": "clean", "noise": "pink noise 0.08", "music": "music bed"}
    sets = [("", base, ("clean", "noise", "music"))]
    if hearing.have_ravdess():      # the same two sentences again and again: Whisper skips repeats
        sets.append(("14 acted, ", hearing.recording(hearing.acted_clips(14, seed=1)), ("clean", "noise")))
    for label, recording, kinds in sets:
        for kind in kinds:
            rec = hearing.with_noise(recording, kind)
            t0 = time.perf_counter()
            utterances = transcribe(rec.audio, model)
            seconds = time.perf_counter() - t0
            got = hearing.score(rec, utterances)
            print(f"{label + names[kind]:<28}{f'{got.heard}/{got.clips}':>12}{100 * got.wer:>8.1f}"
                  f"{got.longest:>11.1f}{seconds:>9.2f}" + (f"   missed: {', '.join(got.missed)}" if got.missed else ""))
    sys.stdout.flush()


def _fallbacks(model) -> list[float]:
    """Wrap model.decode to record each call's temperature (a temperature above 0 is a fallback)."""
    temperatures: list[float] = []
    decode = model.decode

    def counted(features, options):
        temperatures.append(options.temperature)
        return decode(features, options)
    model.decode = counted
    return temperatures


def repetition_check(video: Path, device: str, repeats: int = REPEATS) -> None:
    """One sentence said 14 times (RAVDESS actors 09-24) against the benchmark video's varied speech:
    transcribe seconds per audio second of each (alternating, median of `repeats`), their ratio, the
    words recovered and the decoder passes at a temperature above 0 (fallbacks)."""
    import statistics
    from core.media import load_audio
    from core.transcribe import load_whisper, transcribe
    from tests import hearing
    if not hearing.have_ravdess():
        print(f"\nrepetition: skipped (RAVDESS is not at {hearing.RAVDESS})")
        return
    model = load_whisper(device=device)
    rec = hearing.recording(hearing.one_sentence(14, seed=0), pause=1.0)
    cases = {"varied": load_audio(video), "repeated": rec.audio}
    per_second: dict[str, list[float]] = {k: [] for k in cases}
    temperatures = _fallbacks(model)
    try:
        for audio in cases.values():              # warm-up: first-call costs are not per-second costs
            transcribe(audio, model)
        for _ in range(repeats):
            for name, audio in cases.items():
                temperatures.clear()
                t0 = time.perf_counter()
                utterances = transcribe(audio, model)
                per_second[name].append((time.perf_counter() - t0) / (len(audio) / hearing.SAMPLE_RATE))
                if name == "repeated":
                    got, hot = hearing.score(rec, utterances), sum(t > 0 for t in temperatures)
    finally:
        del model.decode                          # back to the class's own method
    varied, repeated = (statistics.median(per_second[k]) for k in cases)
    print(f"\nrepetition: 14 RAVDESS clips of \"{hearing.STATEMENTS['1']}\" ({len(rec.audio) / 16000:.1f} s) "
          f"against the benchmark video's varied speech ({len(cases['varied']) / 16000:.1f} s), "
          f"transcribe only, median of {repeats} alternating runs")
    print(f"  seconds per audio second: varied {varied:.3f}, repeated {repeated:.3f}, ratio {repeated / varied:.2f} "
          f"(target <= 1.3)")
    print(f"  repeated: {got.heard}/{got.clips} sentences heard, WER {100 * got.wer:.1f} %, "
          f"decoder passes above temperature 0: {hot}" + (f"; missed: {', '.join(got.missed)}" if got.missed else ""))
    sys.stdout.flush()


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MB (ffmpeg children are small and not counted)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def distinct_copies(video: Path, count: int, folder: Path) -> Path:
    """`count` copies of `video` that differ only in a metadata tag (so the content cache misses)."""
    from tests import mediagen
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        mediagen.ffmpeg("-i", str(video), "-map", "0", "-c", "copy", "-metadata", f"comment=copy {i}",
                        str(folder / f"video_{i:02d}.mp4"))
    return folder


def batch_throughput(video: Path, count: int, jobs: int, folder: Path) -> tuple[float, int]:
    """Wall seconds for `python -m core batch` on `count` copies, and how many succeeded."""
    videos = distinct_copies(video, count, folder / "batch_in")
    env = dict(os.environ, WORKBENCH_ANALYSIS_CACHE=str(folder / "batch_cache"))
    for stale in ("batch_out", "batch_cache"):       # a reused --keep folder must not count old results
        shutil.rmtree(folder / stale, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "core", "batch", str(videos), "--out", str(folder / "batch_out"),
                           "--jobs", str(jobs)], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"batch failed: {proc.stderr.strip()[-400:]}")
    return seconds, len(list((folder / "batch_out").glob("*.json")))


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_first_request(clip: Path, folder: Path) -> tuple[float | None, float | None]:
    """Seconds from starting app.py (default preload) to an HTTP 200, and to its first analysis."""
    import urllib.request
    port = free_port()
    env = dict(os.environ, WORKBENCH_ANALYSIS_CACHE=str(folder / "app_cache"))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--data", str(folder / "app_data")],
                            cwd=Path(__file__).resolve().parent, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    http = analysed = None
    try:
        url = f"http://127.0.0.1:{port}/"
        while time.perf_counter() - t0 < APP_TIMEOUT and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        http = time.perf_counter() - t0
                        break
            except OSError:
                time.sleep(0.1)
        if http is not None:
            from gradio_client import Client, handle_file
            client = Client(url, verbose=False)
            client.predict(handle_file(str(clip)), api_name="/analyze")
            analysed = time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return http, analysed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the generated video")
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_SECONDS:.0f}-s video and a batch of 3")
    parser.add_argument("--batch", type=int, default=10, help="videos in the batch run (0: skip it)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="batch worker processes")
    parser.add_argument("--no-app", action="store_true", help="skip timing app.py's first request")
    parser.add_argument("--no-hearing", action="store_true",
                        help="skip the clips-heard check (clean, pink noise, music)")
    parser.add_argument("--no-repetition", action="store_true",
                        help="skip the repeated-sentence check (one sentence 14 times against varied speech)")
    parser.add_argument("--vs-faster-whisper", action="store_true",
                        help="only: our full analysis of the video side by side with faster-whisper's "
                             "transcript alone (tools/vs_faster_whisper.py; installs it in its own venv)")
    parser.add_argument("--encoders", default="",
                        help="with --vs-faster-whisper: also time these Whisper encoder precisions "
                             "(comma-separated: bf16-top, bf16-bottom, bf16)")
    parser.add_argument("--keep", help="keep the generated media in this folder")
    parser.add_argument("--checkpoint", default=None,
                        help="analyse with this checkpoint folder (default: the shipped assets/model; "
                             "e.g. assets/model-minilm, the faster text model)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.batch = QUICK_SECONDS, min(args.batch, 3)

    import torch
    from core.media import cut_clip
    from core.pipeline import STAGES, analyze, load_models
    from core.transcribe import load_whisper, word_error_rate
    from core.whisper_batch import encoder_precision

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    video, spoken = make_video(args.seconds, folder)
    print(f"generated {video.name} in {time.perf_counter() - t0:.1f} s")
    from core.checkpoint import CheckpointError
    if args.vs_faster_whisper:
        from tools.vs_faster_whisper import YardstickError, compare
        try:
            compare(video, spoken, encoders=tuple(k for k in args.encoders.split(",") if k.strip()),
                    checkpoint=args.checkpoint)
        except (YardstickError, CheckpointError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        return 0

    t0 = time.perf_counter()
    try:
        models = load_models(args.checkpoint)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    load_s = time.perf_counter() - t0
    analyze(video, models, use_cache=False)      # warm-up: first-call costs are not per-video costs
    t0 = time.perf_counter()
    result = analyze(video, models, use_cache=False)
    total = time.perf_counter() - t0
    os.environ["WORKBENCH_ANALYSIS_CACHE"] = str(folder / "cache")
    analyze(video, models)                       # fills the cache
    t0 = time.perf_counter()
    analyze(video, models)                       # reopening: from the cache
    reopen = time.perf_counter() - t0
    heard = " ".join(p.utterance.text for p in result.utterances)
    peak = peak_rss_mb()

    gpu = f" ({torch.cuda.get_device_name(0)})" if models.device.startswith("cuda") else ""
    print(f"\ndevice: {models.device}{gpu}; {torch.get_num_threads()} torch threads, {os.cpu_count()} cores")
    print(f"model load (once per process): {load_s:6.2f} s; Whisper encoder: "
          f"{encoder_precision(torch.device(models.device).type)}, decoder: "
          f"{getattr(load_whisper(device=models.device).decoder, 'precision', '?')}")
    print(f"{'stage':<12}{'seconds':>9}")
    for stage in STAGES:
        print(f"{stage:<12}{result.timings.get(stage, 0.0):>9.2f}")
    if "face_grid" in result.timings:
        print(f"  (faces found during transcription, in a background thread: {result.timings['face_grid']:.2f} s; "
              "the face row is what was left after it)")
    print(f"{'total':<12}{total:>9.2f}")
    print(f"video seconds {result.media.duration:.1f}, real-time factor {total / result.media.duration:.3f}")
    longest = max((p.utterance.end - p.utterance.start for p in result.utterances), default=0.0)
    print(f"utterances {len(result.utterances)}, WER {100 * word_error_rate(spoken, heard):.1f} %, "
          f"longest utterance {longest:.1f} s")
    print(f"reopening the analysed video (cache): {reopen:.3f} s")
    print(f"peak RSS: {peak:.0f} MB")
    sys.stdout.flush()

    if not args.no_hearing:
        hearing_check(folder, models.device)
    if not args.no_repetition:
        repetition_check(video, models.device)
    if args.batch > 0:
        seconds, done = batch_throughput(video, args.batch, args.jobs, folder)
        print(f"batch: {done}/{args.batch} videos of {result.media.duration:.0f} s with --jobs {args.jobs} in "
              f"{seconds:.1f} s (model loading included): {60 * done / seconds:.2f} videos per minute, "
              f"{seconds / max(done, 1):.2f} s per video")
        sys.stdout.flush()
    if not args.no_app:
        clip = cut_clip(video, 0.0, FIRST_CLIP_SECONDS, folder / "first_clip.mp4")
        http, analysed = app_first_request(clip, folder)
        print("app.py: " + (f"HTTP 200 after {http:.1f} s" if http is not None else "no HTTP answer") +
              (f", first analysis ({FIRST_CLIP_SECONDS:.0f}-s clip, models loaded by then) done after "
               f"{analysed:.1f} s" if analysed is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
