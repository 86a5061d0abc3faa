"""Whisper's word alignment made faster on a CPU: its median filter without a sort, and its
dynamic time warping compiled once per machine, not once per process.

whisper.timing.find_alignment smooths the alignment heads' attention weights (heads x tokens x
1,500 frames per window) with a median filter of width 7 along time. On a CPU openai-whisper
sorts every 7-frame slice for it: 47 ms a window on 2 cores, a third of the word alignment. Here
the median is picked by an odd-even transposition network of elementwise minimum and maximum over
the 7 shifted copies (about 8 ms): the same values bit for bit, since min and max only choose
among them.

Then it warps tokens onto frames with openai-whisper's `dtw_cpu`, a numba function compiled with
`parallel=True` and no cache: every new process (each `python -m core analyze`, each batch worker,
the app's first analysis) spent 1.7-3.4 s compiling it before its first word time. `dtw_cpu`
below is the same recurrence (float32 costs, the same comparisons, so the same path: a test),
compiled without the parallel machinery and cached on disk by numba (`cache=True`): the first
process on a machine compiles it (about a second), the next ones load it.

`speed_up_alignment()` installs both once; other devices keep openai-whisper's own kernels.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F

_ORIGINAL = None                      # openai-whisper's median filter, once replaced
_ORIGINAL_DTW = None                  # and its dtw_cpu
DIAGONAL, UP, LEFT = 0, 1, 2          # the step that reached a cell (openai-whisper's trace codes)


def median_filter(x: torch.Tensor, width: int) -> torch.Tensor:
    """openai-whisper's median_filter (odd `width`, along the last dimension, reflect-padded), exact."""
    if x.is_cuda or width <= 1 or width % 2 == 0 or x.shape[-1] <= width // 2:
        if _ORIGINAL is None:                       # not installed: openai-whisper's own, as it is
            import whisper.timing as timing
            return timing.median_filter(x, width)
        return _ORIGINAL(x, width)
    pad = width // 2
    shape = x.shape
    flat = x.reshape(-1, 1, shape[-1]) if x.ndim != 3 else x
    padded = F.pad(flat, (pad, pad), mode="reflect")
    n = shape[-1]
    values = [padded[..., i:i + n] for i in range(width)]
    for round_ in range(width):                     # odd-even transposition sort: width rounds
        for i in range(round_ % 2, width - 1, 2):
            low, high = values[i], values[i + 1]
            values[i], values[i + 1] = torch.minimum(low, high), torch.maximum(low, high)
    return values[pad].reshape(shape)


def _dtw_cpu(x: np.ndarray) -> np.ndarray:
    """The cheapest monotonic path through the cost matrix x [tokens, frames] (float64), as
    openai-whisper's dtw_cpu: int64 [2, steps], token indices then frame indices, from (0, 0).
    Costs are kept in float32 as there; where two moves tie, the later in (diagonal, up, left) wins."""
    rows, cols = x.shape
    cost = np.full((rows + 1, cols + 1), np.inf, np.float32)
    came = np.full((rows + 1, cols + 1), -1, np.int8)
    cost[0, 0] = 0.0
    for j in range(1, cols + 1):
        for i in range(1, rows + 1):
            diagonal, up, left = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            if diagonal < up and diagonal < left:
                best, move = diagonal, DIAGONAL
            elif up < diagonal and up < left:
                best, move = up, UP
            else:
                best, move = left, LEFT
            cost[i, j] = x[i - 1, j - 1] + best
            came[i, j] = move
    came[0, :] = LEFT                               # along the edges there is one way back
    came[:, 0] = UP
    path = np.empty((2, rows + cols), np.int64)
    i, j, k = rows, cols, rows + cols
    while i > 0 or j > 0:
        k -= 1
        path[0, k], path[1, k] = i - 1, j - 1
        move = came[i, j]
        if move == DIAGONAL:
            i, j = i - 1, j - 1
        elif move == UP:
            i -= 1
        else:
            j -= 1
    return path[:, k:].copy()


try:                  # numba caches next to this file, else in the user's cache folder
    dtw_cpu = numba.jit(nopython=True, cache=True)(_dtw_cpu)
except RuntimeError:  # neither is writable (a read-only install): compiled once per process, as before
    dtw_cpu = numba.jit(nopython=True)(_dtw_cpu)


def speed_up_alignment() -> None:
    """Route whisper.timing's median filter and CPU time warping through this module's (once;
    idempotent), and compile (or load from numba's cache) the warping now, not at the first word."""
    global _ORIGINAL, _ORIGINAL_DTW
    import whisper.timing as timing
    if _ORIGINAL is None:
        _ORIGINAL, _ORIGINAL_DTW = timing.median_filter, timing.dtw_cpu
        timing.median_filter, timing.dtw_cpu = median_filter, dtw_cpu
        dtw_cpu(np.zeros((2, 3)))
