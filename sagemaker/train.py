"""SageMaker training entry: SageMaker's environment mapped onto `python -m train.train`.

    SM_CHANNEL_TRAIN        the "train" channel's folder: one MELD-format CSV (text only), or the
                            workbench's export (its zip, or a CSV with its dia{D}_utt{U}.mp4 clips)
    SM_CHANNEL_VALIDATION   optional "validation" channel: one MELD-format CSV (clips beside it);
                            text-only training needs it, clip training holds out 10 % without it
    SM_MODEL_DIR            the checkpoint (card.json + safetensors) goes here; SageMaker uploads
                            it as model.tar.gz, which sagemaker/inference.py's model_fn loads
    SM_OUTPUT_DATA_DIR      TensorBoard logs (--tb), unless a hyperparameter says otherwise
    SM_NUM_CPUS             --threads, unless a hyperparameter says otherwise
    hyperparameters         arrive as arguments, `--name value`: any train.train option
                            (epochs=4 -> --epochs 4, tune_layers=1 -> --tune-layers 1; a switch
                            such as quiet=True -> --quiet, quiet=False -> nothing)

On failure the one-line reason is also written to $SM_OUTPUT_DIR/failure, where SageMaker shows it.
Run it here with the variables set to local folders (tests/test_sagemaker.py does).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for _root in (HERE, HERE.parent):       # the container's code/ folder, or a checkout
    if (_root / "train").is_dir() and (_root / "core").is_dir():
        if str(_root) not in sys.path:
            sys.path.insert(0, str(_root))
        break

SET_BY_CHANNELS = {"train", "dev", "out", "clips", "dev-clips"}
MAX_THREADS = 8            # more threads than this only wait on each other at these sizes
TRUE, FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


class EntryError(Exception):
    """The environment or the hyperparameters cannot make a training run; one line."""


def channel_input(folder: Path, channel: str) -> tuple[Path, Path | None]:
    """(the file train.train reads, the clips folder or None) for a channel's folder."""
    if not folder.is_dir():
        raise EntryError(f"The {channel} channel's folder does not exist.")
    zips, csvs = sorted(folder.glob("*.zip")), sorted(folder.glob("*.csv"))
    if len(zips) == 1 and not csvs:
        return zips[0], None
    if len(csvs) == 1 and not zips:
        has_clips = next(folder.rglob("*.mp4"), None) is not None
        return csvs[0], folder if has_clips else None
    found = ", ".join(p.name for p in [*csvs, *zips]) or "nothing"
    raise EntryError(f"The {channel} channel must hold one MELD-format CSV or one export zip "
                     f"(found: {found}).")


def hyperparameters(args: list[str], switches: set[str]) -> list[str]:
    """SageMaker's `--name value` pairs as train.train options (names with - or _; switches
    given as true/false)."""
    argv, i = [], 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise EntryError(f"Unexpected argument {token!r}: hyperparameters come as --name value.")
        name, eq, value = token[2:].partition("=")
        name = name.replace("_", "-")
        if not eq and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value, eq, i = args[i + 1], "=", i + 1
        i += 1
        if name in SET_BY_CHANNELS:
            raise EntryError(f"--{name} is set from the channels and SM_MODEL_DIR, not a hyperparameter.")
        if name in switches:
            if value.strip().lower() not in TRUE | FALSE:
                raise EntryError(f"--{name} is a switch: give true or false, not {value!r}.")
            argv += [f"--{name}"] if not eq or value.strip().lower() in TRUE else []
        elif not eq:
            raise EntryError(f"--{name} needs a value.")
        else:
            argv += [f"--{name}", value]
    return argv


def command_line(env: dict[str, str], args: list[str], switches: set[str]) -> list[str]:
    """train.train's arguments from SageMaker's environment and hyperparameters."""
    def folder(var: str) -> Path:
        if not env.get(var):
            raise EntryError(f"{var} is not set: run this inside a SageMaker training job, or set it.")
        return Path(env[var])

    train, clips = channel_input(folder("SM_CHANNEL_TRAIN"), "train")
    argv = ["--train", str(train), "--out", str(folder("SM_MODEL_DIR"))]
    if clips is not None:
        argv += ["--clips", str(clips)]
    if env.get("SM_CHANNEL_VALIDATION"):
        dev, dev_clips = channel_input(Path(env["SM_CHANNEL_VALIDATION"]), "validation")
        argv += ["--dev", str(dev)] + (["--dev-clips", str(dev_clips)] if dev_clips is not None else [])
    options = hyperparameters(args, switches)
    given = {a for a in options if a.startswith("--")}
    if "--tb" not in given and env.get("SM_OUTPUT_DATA_DIR"):
        argv += ["--tb", str(Path(env["SM_OUTPUT_DATA_DIR"]) / "tensorboard")]
    if "--threads" not in given and env.get("SM_NUM_CPUS", "").isdigit():
        argv += ["--threads", str(max(1, min(int(env["SM_NUM_CPUS"]), MAX_THREADS)))]
    return argv + options


def main(args: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    if args in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    from train import train as trainer
    env = dict(os.environ) if env is None else env
    parser = trainer.build_parser()
    switches = {a.option_strings[0][2:] for a in parser._actions    # store_true options: no value
                if a.nargs == 0 and a.option_strings and a.option_strings[0] != "-h"}
    try:
        argv = command_line(env, args, switches)
        print("python -m train.train " + " ".join(argv), file=sys.stderr, flush=True)
        trainer.main(argv)
    except EntryError as err:
        return _failed(f"error: {err}", env)
    except SystemExit as exit_:             # train.train's own one-line errors
        if exit_.code in (None, 0):
            return 0
        return _failed(str(exit_.code) if isinstance(exit_.code, str) else f"train.train exited with {exit_.code}",
                       env, printed=not isinstance(exit_.code, str))
    return 0


def _failed(line: str, env: dict[str, str], printed: bool = False) -> int:
    if not printed:
        print(line, file=sys.stderr)
    if env.get("SM_OUTPUT_DIR"):
        try:
            Path(env["SM_OUTPUT_DIR"]).mkdir(parents=True, exist_ok=True)
            (Path(env["SM_OUTPUT_DIR"]) / "failure").write_text(line + "\n")
        except OSError:
            pass
    return 1


if __name__ == "__main__":
    sys.exit(main())
