"""Run small-op PyTorch work on one CPU thread, and its few large ops on the threads it had.

Whisper's decoding steps and the face net's batches of six 64x64 crops are hundreds of tiny ops.
On a CPU, a second intra-op thread only adds a hand-off at each one; on a busy 2-core machine
each hand-off waits for a time slice (about 8 ms), which made both stages 6-17x slower.
A decoding step's cross-attention is not tiny: it reads every window's 1,500 audio states (9 MB
in fp32 for 3 windows, per layer), and on 2 threads it runs 2.6x faster than on one (0.29 against
0.75 ms here: memory-bound, and one thread cannot keep enough reads in flight). `wide()` gives
such a block back the threads the enclosing one_cpu_thread took away.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch

_outer = threading.local()      # per thread: the counts one_cpu_thread found (innermost last)


@contextmanager
def one_cpu_thread(enabled: bool = True):
    """Inside the block torch uses one intra-op thread (when `enabled`); the old count comes back after."""
    before = torch.get_num_threads()
    stack = _outer.__dict__.setdefault("counts", [])
    if enabled:
        torch.set_num_threads(1)
        stack.append(before)
    try:
        yield
    finally:
        if enabled:
            stack.pop()
            torch.set_num_threads(before)


@contextmanager
def wide(most: int = 2):
    """Inside one_cpu_thread: the block runs on up to `most` of the threads that one_cpu_thread
    found (never more than the caller allowed: a batch worker set to one thread stays on one).
    Elsewhere it changes nothing."""
    stack = getattr(_outer, "counts", None)
    now = torch.get_num_threads()
    threads = min(most, stack[-1]) if stack else now
    if threads > now:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads > now:
            torch.set_num_threads(now)
