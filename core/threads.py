"""Run small-op PyTorch work on one CPU thread.

Whisper's decoding steps and the face net's batches of six 64x64 crops are hundreds of tiny ops.
On a CPU, a second intra-op thread only adds a hand-off at each one; on a busy 2-core machine
each hand-off waits for a time slice (about 8 ms), which made both stages 6-17x slower.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def one_cpu_thread(enabled: bool = True):
    """Inside the block torch uses one intra-op thread (when `enabled`); the old count comes back after."""
    before = torch.get_num_threads()
    if enabled:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if enabled:
            torch.set_num_threads(before)
