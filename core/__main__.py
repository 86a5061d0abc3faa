"""Command line: `python -m core analyze VIDEO [--json OUT]` and `python -m core batch FOLDER --out DIR`.

Both apply the app's limits (core/limits.py: --max-mb / --max-upload-mb, --max-seconds, else the
WORKBENCH_MAX_* variables) and refuse an over-limit file in one line before any model is loaded;
a --checkpoint whose card asks for absurd shapes is refused the same way, before any weight
exists. Failures (a refused file, a full disk) are one line on stderr, never a traceback.
`batch` runs on worker processes here (`--engine local`) or on Ray actors (`--engine ray
[--address auto|ray://HOST:PORT]`, core/ray_engine.py) and skips files already done with the
same models (core/batch.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from .types import Analysis

TEXT_WIDTH = 48


def format_table(analysis: Analysis) -> str:
    """A readable, fixed-width table of the utterances with what each modality says."""
    lines = []
    model = analysis.model
    if not model.get("trained"):
        lines.append("WARNING: the model is untrained; fused emotion and sentiment are not meaningful. "
                     "The face column is the pretrained face-expression net's real opinion.")
    else:
        lines.append(f"Model: {model.get('name')} (trained on: {', '.join(model.get('trained_modalities', []))})")
    if analysis.message:
        lines.append(analysis.message)
    if not analysis.utterances:
        return "\n".join(lines)
    header = f"{'#':>3} {'start':>7} {'end':>7}  {'speaker':<10} {'emotion':<15} {'sentiment':<15} {'face':<14} text"
    lines += [header, "-" * len(header)]
    for p in analysis.utterances:
        u = p.utterance
        face = p.opinion("face")
        face_txt = f"{face.emotion} {max(face.emotion_probs):.2f}" if face and face.present else "-"
        text = textwrap.shorten(u.text, TEXT_WIDTH, placeholder="…")
        lines.append(f"{p.index:>3} {u.start:>7.2f} {u.end:>7.2f}  {u.speaker[:10]:<10} "
                     f"{p.emotion + f' {p.confidence:.2f}':<15} "
                     f"{p.sentiment + f' {max(p.sentiment_probs):.2f}':<15} {face_txt:<14} {text}")
        if p.error:
            lines.append(f"{'':>20}! {p.error}")
    return "\n".join(lines)


def _analyze(args: argparse.Namespace) -> int:
    from .media import MediaError

    path = Path(args.video)
    try:                                    # size, duration, frame size: before torch or a model loads
        args.limits.check_media(path)
    except MediaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if (problem := _checkpoint_problem(args.checkpoint)):
        print(f"error: {problem}", file=sys.stderr)
        return 1

    from tqdm import tqdm

    from .checkpoint import CheckpointError
    from .pipeline import analyze, load_models
    from .transcribe import TranscriptionError

    bar = tqdm(total=100, desc="loading models", unit="%", file=sys.stderr,
               bar_format="{desc:<18} {bar} {percentage:3.0f}%")

    def progress(fraction: float, stage: str) -> None:
        bar.set_description_str(stage)
        bar.update(round(fraction * 100) - bar.n)

    try:
        models = load_models(args.checkpoint, whisper_name=args.whisper, language=args.language or None)
        result = analyze(path, models, progress, dialogue=not args.alone)
    except (MediaError, CheckpointError, TranscriptionError) as err:
        bar.close()
        print(f"error: {err}", file=sys.stderr)
        return 1
    bar.close()
    print(format_table(result))
    if args.json:
        from .writes import os_error_line
        try:
            Path(args.json).write_text(json.dumps(result.to_dict(), indent=2))
        except OSError as err:
            print(f"error: {os_error_line(err, args.json)}", file=sys.stderr)
            return 1
        print(f"wrote {args.json}")
    return 0


def _checkpoint_problem(folder: str | None) -> str | None:
    """Why the --checkpoint folder's card cannot be used (shapes, size), read before any weight."""
    if not folder:
        return None
    from .checkpoint import CheckpointError, check_card
    try:
        check_card(folder)
    except CheckpointError as err:
        return str(err)
    return None


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-mb", "--max-upload-mb", dest="max_mb", type=float, default=None,
                        help="largest file in MB, 0 = no limit (default: $WORKBENCH_MAX_UPLOAD_MB or 500)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="longest video or audio in seconds, 0 = no limit "
                             "(default: $WORKBENCH_MAX_SECONDS or 3600)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="analyse a video or audio file")
    a.add_argument("video", help="video or audio file")
    a.add_argument("--json", help="also write the full analysis as JSON here")
    a.add_argument("--checkpoint", help="checkpoint folder (default: assets/model, else untrained)")
    a.add_argument("--whisper", default="base",
                   help="Whisper model: 'base' (packaged, offline), another name (online) or a .pt path")
    a.add_argument("--language", default="en", help="spoken language code; '' to let Whisper detect it")
    a.add_argument("--alone", action="store_true",
                   help="read each utterance's words alone, not with its neighbours (a file of unrelated lines)")
    _add_limit_flags(a)
    b = sub.add_parser("batch", help="analyse every video in a folder into one JSON + CSV each")
    b.add_argument("folder")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--jobs", type=int, default=None,
                   help="workers, each loading the models once (local: processes sharing the CPU cores, "
                        "default 1; ray: actors, default as many as the cluster fits)")
    b.add_argument("--checkpoint", help="checkpoint folder (default: assets/model, else untrained)")
    b.add_argument("--alone", action="store_true",
                   help="read each utterance's words alone, not with its neighbours (files of unrelated lines)")
    b.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where the workers run: this machine's processes, or Ray actors (needs "
                        "requirements-ray.txt)")
    b.add_argument("--address", default=None,
                   help="ray: the cluster to join ('auto', or ray://HOST:10001); default: a local Ray")
    b.add_argument("--cpus-per-job", type=float, default=None, help="ray: CPU cores each actor asks for")
    b.add_argument("--gpus-per-job", type=float, default=None,
                   help="ray: GPUs each actor asks for when the cluster has GPUs (default 1; 0: CPUs only)")
    _add_limit_flags(b)
    args = parser.parse_args(argv)
    from .limits import Limits
    try:
        args.limits = Limits.from_env(max_upload_mb=args.max_mb, max_seconds=args.max_seconds)
    except ValueError as err:
        parser.error(str(err))
    if args.command == "analyze":
        return _analyze(args)
    if args.engine != "ray" and (args.address or args.cpus_per_job or args.gpus_per_job is not None):
        parser.error("--address, --cpus-per-job and --gpus-per-job are for --engine ray")
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return _batch(args)


def _batch(args: argparse.Namespace) -> int:
    from .batch import analyze_folder, find_media
    from .types import UserError
    from .writes import os_error_line
    if args.engine == "ray":
        from .ray_engine import RayUnavailable, import_ray
        try:                                # before any file is read: one line on how to get Ray
            import_ray()
        except RayUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    if not Path(args.folder).is_dir() or not find_media(args.folder):
        print(f"error: no video or audio files in {args.folder}", file=sys.stderr)
        return 1
    if (problem := _checkpoint_problem(args.checkpoint)):
        print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        results = analyze_folder(args.folder, args.out, jobs=args.jobs, checkpoint=args.checkpoint,
                                 limits=args.limits, engine=args.engine, address=args.address,
                                 cpus_per_job=args.cpus_per_job, gpus_per_job=args.gpus_per_job,
                                 dialogue=not args.alone)
    except OSError as err:                  # the output folder cannot be made
        print(f"error: {os_error_line(err, args.out)}", file=sys.stderr)
        return 1
    except UserError as err:                # Ray unreachable, no worker could start
        print(f"error: {err}", file=sys.stderr)
        return 1
    for r in results:
        into = f" -> {r.output}.json, {r.output}.csv" if r.ok and r.output else ""
        tag = "SKIP" if r.skipped else "done" if r.resumed else "ok  " if r.ok else "ERR "
        print(f"{tag} {Path(r.source).name}: {r.message}{into}")
    skipped = sum(r.skipped for r in results)
    resumed = sum(r.resumed for r in results)
    failed = sum(not r.ok for r in results) - skipped
    print(f"{len(results) - failed - skipped - resumed} analysed, {failed} failed, {skipped} skipped "
          f"(over a limit), {resumed} already done (same file and models); results in {args.out}")
    return 1 if failed + skipped == len(results) else 0


if __name__ == "__main__":
    sys.exit(main())
