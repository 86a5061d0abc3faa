"""What train/gpu_text.sh needs to train the words on a lent GPU (the `device` tool), in Python.

The working tree that travels to the GPU machine is at most 64 MiB a call, and a base encoder is
larger (all-MiniLM-L6-v2 87 MiB, all-mpnet-base-v2 418 MiB in float32), while that machine reaches
no registry. So `prepare` (here) writes what the GPU needs into .gpu/ (git-ignored): the MELD CSVs
and the encoder's folder with its weights in float16 (MiniLM 44 MiB, MPNet 209 MiB; `--precision
fp32` keeps them exact, in twice the pieces), packed in one tar cut into pieces of at most 40 MiB.
Each device call carries one piece and `receive` keeps it in /tmp/gpu-text on the machine (which
lives while the machine stays warm); the last call carries the last piece and the data, and
`assemble` joins the pieces, checks their sha256 and unpacks the encoder for train.train
($WORKBENCH_TEXT_MODELS).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU_DIR = ROOT / ".gpu"                        # what travels (carry), ignored by git
REMOTE = Path("/tmp/gpu-text")                 # on the GPU machine: pieces received, encoder unpacked
PIECE_BYTES = 40 * 1024 * 1024
MELD = ROOT.parent / "shared" / "data" / "meld"
CSVS = ("train_sent_emo.csv", "dev_sent_emo.csv")
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
KEEP = (".json", ".txt", ".model")             # config, tokenizer, vocabulary files of the folder


def _encoder_tar(name: str, precision: str, gpu_dir: Path) -> tuple[str, bytes]:
    """The encoder's folder (config, tokenizer, weights in `precision`) as one uncompressed tar."""
    from safetensors.torch import load_file, save_file

    from core.text import MINILM_FOLDER, MPNET_FOLDER, resolve_text_model
    folder = Path(resolve_text_model(name))
    top = MPNET_FOLDER if name == "mpnet" else MINILM_FOLDER        # the name resolve_text_model looks for
    weights = load_file(str(folder / WEIGHTS))
    if precision == "fp16":
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix in KEEP:
                tar.add(str(path), arcname=f"{top}/{path.name}")
        staged = gpu_dir / "weights.tmp"
        save_file({k: v.contiguous() for k, v in weights.items()}, str(staged), metadata={"format": "pt"})
        tar.add(str(staged), arcname=f"{top}/{WEIGHTS}")
        staged.unlink()
    return top, buffer.getvalue()


def prepare(encoder: str, precision: str, meld: Path = MELD, gpu_dir: Path = GPU_DIR) -> dict:
    """Write .gpu/: meld/ (the CSVs and the manifest) and enc/piece-NN; returns the manifest."""
    exclude = ROOT / ".git" / "info" / "exclude"
    ignored = exclude.read_text() if exclude.exists() else ""
    if gpu_dir == GPU_DIR and exclude.parent.is_dir() and "/.gpu/" not in ignored:
        with open(exclude, "a") as f:
            f.write("\n/.gpu/\n")
    shutil.rmtree(gpu_dir, ignore_errors=True)
    (gpu_dir / "meld").mkdir(parents=True)
    (gpu_dir / "enc").mkdir()
    for name in CSVS:
        shutil.copyfile(meld / name, gpu_dir / "meld" / name)
    folder, blob = _encoder_tar(encoder, precision, gpu_dir)
    pieces = [blob[i:i + PIECE_BYTES] for i in range(0, len(blob), PIECE_BYTES)]
    for k, piece in enumerate(pieces, start=1):
        (gpu_dir / "enc" / f"piece-{k:02d}").write_bytes(piece)
    manifest = {"encoder": encoder, "folder": folder, "precision": precision, "pieces": len(pieces),
                "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    (gpu_dir / "meld" / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def calls(manifest: dict, train_args: str) -> list[dict]:
    """The device calls, in order: one piece each, the last with the data and the training."""
    n = manifest["pieces"]
    out = [{"carry": [f".gpu/enc/piece-{k:02d}"], "command": "bash train/gpu_text.sh receive"} for k in range(1, n)]
    out.append({"carry": [".gpu/meld", f".gpu/enc/piece-{n:02d}"],
                "command": f"bash train/gpu_text.sh train {train_args}".strip()})
    return out


def receive(gpu_dir: Path = GPU_DIR, remote: Path = REMOTE) -> list[str]:
    """Keep the pieces this call carried in REMOTE/pieces (they outlive the call, not the machine)."""
    dest = remote / "pieces"
    dest.mkdir(parents=True, exist_ok=True)
    got = []
    for piece in sorted((gpu_dir / "enc").glob("piece-*")):
        shutil.copyfile(piece, dest / piece.name)
        got.append(piece.name)
    return got


def assemble(gpu_dir: Path = GPU_DIR, remote: Path = REMOTE) -> Path:
    """Join the pieces (carried now or received before), check them, unpack the encoder; returns
    the folder to give as $WORKBENCH_TEXT_MODELS."""
    manifest = json.loads((gpu_dir / "meld" / MANIFEST).read_text())
    receive(gpu_dir, remote)
    names = [f"piece-{k:02d}" for k in range(1, manifest["pieces"] + 1)]
    missing = [n for n in names if not (remote / "pieces" / n).is_file()]
    if missing:
        raise SystemExit(f"error: encoder pieces {', '.join(missing)} never reached this machine "
                         "(a fresh machine starts bare: send every piece again, one call each)")
    blob = b"".join((remote / "pieces" / n).read_bytes() for n in names)
    if hashlib.sha256(blob).hexdigest() != manifest["sha256"]:
        raise SystemExit("error: the encoder pieces do not add up to what prepare wrote (sha256 differs)")
    models = remote / "models"
    shutil.rmtree(models, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(models, filter="data")
    return models


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.gpu_text", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    prep = sub.add_parser("prepare", help="write .gpu/ here and print the device calls")
    prep.add_argument("--encoder", default="minilm", choices=("minilm", "mpnet"))
    prep.add_argument("--precision", default="fp16", choices=("fp16", "fp32"))
    prep.add_argument("--train-args", default="--tiny -- --recipe minilm-top2-lora16 --seed 2",
                      help="what the last call passes to `gpu_text.sh train`")
    sub.add_parser("receive", help="(on the GPU machine) keep the pieces this call carried")
    sub.add_parser("assemble", help="(on the GPU machine) unpack the encoder; prints its parent folder")
    args = p.parse_args(argv)
    if args.verb == "prepare":
        manifest = prepare(args.encoder, args.precision)
        print(json.dumps({"manifest": manifest, "calls": calls(manifest, args.train_args)}, indent=1))
    elif args.verb == "receive":
        print(f"received {', '.join(receive()) or 'no piece'} into {REMOTE / 'pieces'}", file=sys.stderr)
    else:
        print(assemble())


if __name__ == "__main__":
    main()
