"""Convert Resemblyzer's pretrained speaker encoder to the safetensors file core.speakers loads.

    .venv/bin/python -m tools.convert_speaker_weights [--wheel Resemblyzer-0.1.4-py3-none-any.whl]

Without --wheel it downloads the wheel from PyPI (`pip download --no-deps`: its code and its
librosa / webrtcvad dependencies are not needed). The wheel's `resemblyzer/pretrained.pt` holds the
training step, the optimiser's state and the model's; only the model's LSTM and linear layer are
kept (1.4 M weights, fp32, 5.7 MB), read with torch.load(weights_only=True). Resemblyzer is
Apache-2.0 (Corentin Jemine); its licence is copied next to the output.
"""

from __future__ import annotations

import argparse
import glob
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "assets" / "speaker" / "resemblyzer_ge2e.safetensors"
WHEEL = "Resemblyzer==0.1.4"
KEEP = ("lstm.", "linear.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="a downloaded Resemblyzer wheel (else fetched from PyPI)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, WHEEL], check=True)
            (wheel,) = glob.glob(f"{tmp}/Resemblyzer-*.whl")
        with zipfile.ZipFile(wheel) as w:
            state = torch.load(io.BytesIO(w.read("resemblyzer/pretrained.pt")), map_location="cpu",
                               weights_only=True)["model_state"]
            licence = w.read(next(n for n in w.namelist() if n.endswith(".dist-info/LICENSE")))
    tensors = {k: v.float().contiguous() for k, v in state.items() if k.startswith(KEEP)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata={"source": WHEEL, "licence": "Apache-2.0"})
    (args.out.parent / "LICENSE-resemblyzer.txt").write_bytes(licence)
    print(f"wrote {args.out} ({sum(v.numel() for v in tensors.values()):,} weights)")


if __name__ == "__main__":
    main()
