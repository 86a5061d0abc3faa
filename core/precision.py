"""Whether this CPU computes bfloat16 natively, asked once.

The text encoder (core.text.text_precision) and, when asked, Whisper's encoder
(core.whisper_batch.encoder_precision) run in bfloat16 only where the CPU has it in hardware
(AVX512-BF16, AMX): elsewhere bfloat16 is emulated and slower than fp32.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """True where oneDNN reports native bfloat16 on this CPU; False where it does not, or where
    this torch build cannot say (the query is a private torch API)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
