"""Whisper's decoder made fast on a CPU: int8 linear layers, a contiguous output projection, and
cross-attention over keys and values laid out once per decoding call.

Decoding steps are memory-bound on a CPU. Each step of each of the 6 decoder blocks reads the
cross-attention keys and values of every window in the batch (1,500 audio states x 512, twice,
9 MB a window in fp32). openai-whisper keeps them as the key/value projections' outputs and
permutes them into heads at every step, which makes scaled_dot_product_attention copy or stride
through them: 2-4x slower than attention over keys and values laid out per head once
(_cross_attention). The arithmetic is the same (softmax(q k^T / sqrt(d)) v in fp32); only the
order of its float additions differs.

`speed_up_decoder(model)` applies all of it once per loaded model; word alignment
(whisper.timing, no kv cache) still runs openai-whisper's own attention, which returns the
attention weights it needs.
"""

from __future__ import annotations

import os
import types

import torch

from .threads import wide

INT8_ENV = "WORKBENCH_WHISPER_INT8"   # "0": keep the CPU decoder in fp32


def _cross_attention(self, x: torch.Tensor, xa: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                     kv_cache: dict | None = None):
    """openai-whisper's MultiHeadAttention.forward for a decoder block's cross-attention: with a kv
    cache (decoding), its keys and values are projected and laid out per head once ([B, H, D, T]
    keys, [B, H, T, D] values, the scale folded into the keys) and kept in the cache, batch first
    like the cache's other entries; without one (word alignment) openai-whisper's own code runs."""
    if kv_cache is None or xa is None:
        return type(self).forward(self, x, xa, mask, kv_cache)
    n_head = self.n_head
    keys, values = (self, "keys"), (self, "values")
    if keys not in kv_cache:
        b, t, d = xa.shape
        scale = (d // n_head) ** -0.5
        with wide():                 # large ops inside the decoder's one thread (core.threads)
            kv_cache[keys] = (self.key(xa) * scale).view(b, t, n_head, -1).permute(0, 2, 3, 1).contiguous()
            kv_cache[values] = self.value(xa).view(b, t, n_head, -1).permute(0, 2, 1, 3).contiguous()
    q = self.query(x)
    b, n, d = q.shape
    q = q.view(b, n, n_head, -1).permute(0, 2, 1, 3)
    with wide():                     # reads all the audio states: memory-bound, 2.6x faster on 2 threads
        weights = torch.matmul(q, kv_cache[keys]).float().softmax(dim=-1).to(q.dtype)
        out = torch.matmul(weights, kv_cache[values])
    return self.out(out.permute(0, 2, 1, 3).reshape(b, n, d)), None


def _decoder_forward(self, x: torch.Tensor, xa: torch.Tensor, kv_cache: dict | None = None) -> torch.Tensor:
    """openai-whisper's TextDecoder.forward with the output projection done by `self.logits`."""
    offset = next(iter(kv_cache.values())).shape[1] if kv_cache else 0
    x = self.token_embedding(x) + self.positional_embedding[offset: offset + x.shape[-1]]
    x = x.to(xa.dtype)
    for block in self.blocks:
        x = block(x, xa, mask=self.mask, kv_cache=kv_cache)
    return self.logits(self.ln(x)).float()


class _Logits(torch.nn.Module):
    """The tied output projection, transposed and contiguous once (about 100 MB for base): read
    through a transposed view, it cost 20-40 % of each decoding step on a CPU."""

    def __init__(self, embedding: torch.Tensor):
        super().__init__()
        self.register_buffer("weight_t", embedding.detach().t().contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return torch.mm(x.reshape(b * t, d), self.weight_t).reshape(b, t, -1)


def _plain_linears(module: torch.nn.Module) -> None:
    """Swap whisper's Linear subclass for torch's own (what dynamic quantisation recognises)."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear) and type(child) is not torch.nn.Linear:
            plain = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain)
        else:
            _plain_linears(child)


def _int8_decoder(decoder) -> bool:
    """Dynamic int8 quantisation of the decoder's linear layers and its output projection (weights
    int8 per tensor, activations quantised on the fly). Decoding is memory-bound on a CPU, so
    this makes it about 1.5x faster; the encoder stays fp32. False if torch lacks it."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        return False
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # torch.ao.quantization warns that it will move to torchao
        _plain_linears(decoder.blocks)
        quantize_dynamic(decoder.blocks, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        weight = decoder.token_embedding.weight
        projection = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        projection.weight = torch.nn.Parameter(weight.detach().clone(), requires_grad=False)
        decoder.logits = quantize_dynamic(torch.nn.Sequential(projection), {torch.nn.Linear},
                                          dtype=torch.qint8)
    return True


def speed_up_decoder(model, int8: bool | None = None) -> str:
    """On a CPU: an int8 decoder (unless `int8` is False or $WORKBENCH_WHISPER_INT8=0), else an
    fp32 one with a contiguous output projection. Returns the decoder's precision ("int8",
    "fp32"); a GPU model is left as it is ("fp16" there)."""
    decoder = model.decoder
    if model.device.type != "cpu":
        return "fp16"
    if hasattr(decoder, "logits"):
        return decoder.precision
    if int8 is None:
        int8 = os.environ.get(INT8_ENV, "1").strip().lower() not in ("0", "false", "no")
    if int8 and _int8_decoder(decoder):
        decoder.precision = "int8"
    else:
        decoder.logits = _Logits(decoder.token_embedding.weight)
        decoder.precision = "fp32"
    decoder.forward = types.MethodType(_decoder_forward, decoder)
    _fast_cross_attention(decoder)
    return decoder.precision


def _fast_cross_attention(decoder) -> None:
    for block in decoder.blocks:
        if block.cross_attn is not None:
            block.cross_attn.forward = types.MethodType(_cross_attention, block.cross_attn)
