"""Time one epoch of the clip training loop on cached features: `python -m train.bench_epoch`.

Builds ROWS synthetic rows with the real shapes (a 384-d text vector, a 135-d face vector, a
1,024-d voice feature, MELD-like labels, a face in 80 % and voiced audio in 90 % of the rows), then
runs one epoch of train.loop.train_epoch (text, face and audio all trained, frozen text) on
`--threads` threads. The target is TARGET_SECONDS for 10,000 rows on 2 threads. Prints wall and
CPU seconds (on a machine shared with other work the wall time grows, the CPU time of one thread
much less); the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from core.encoders import AUDIO_DIM, FACE_DIM
from core.model import EmotionModel

from . import loop as fit

ROWS = 10_000
TARGET_SECONDS = 30.0
MELD_EMOTION_SHARE = (0.11, 0.03, 0.03, 0.17, 0.47, 0.07, 0.12)   # MELD train, EMOTIONS order


def synthetic(rows: int, rng: np.random.Generator) -> fit.Inputs:
    """Random features of the real shapes and dtypes."""
    emotion = rng.choice(len(MELD_EMOTION_SHARE), rows, p=np.array(MELD_EMOTION_SHARE) / sum(MELD_EMOTION_SHARE))
    sentiment = np.array([(1 if e in (4, 6) else 2 if e == 3 else 0) for e in emotion])
    face = rng.standard_normal((rows, FACE_DIM), dtype=np.float32)
    voice = rng.standard_normal((rows, AUDIO_DIM), dtype=np.float32)
    return fit.Inputs(torch.from_numpy(rng.standard_normal((rows, 384), dtype=np.float32)), None,
                      torch.from_numpy(face), torch.from_numpy(rng.random(rows) < 0.8),
                      torch.from_numpy(voice), torch.from_numpy(rng.random(rows) < 0.9),
                      torch.from_numpy(emotion).long(), torch.from_numpy(sentiment).long())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m train.bench_epoch", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=ROWS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    data = synthetic(args.rows, rng)
    build = time.perf_counter() - t0
    use = set(fit.TRAINABLE)
    model = EmotionModel()
    loss_fn = fit.Loss(data.emotion.tolist(), data.sentiment.tolist(), 0.5, 0.0, 0.5)
    optimizer, schedule = fit.make_optimizer(model, {}, 1e-3, 1e-4, 0.01,
                                             fit.steps_for(args.rows, args.batch_size, 1), 0.06)
    batches = fit.shuffled_batches(args.rows, args.batch_size, rng)
    cpu0 = time.process_time()
    t1 = time.perf_counter()
    loss = fit.train_epoch(model, data, fit.TextSide(), use, loss_fn, optimizer, schedule, batches,
                           desc="one epoch (synthetic cached features)", quiet=args.quiet)
    seconds = time.perf_counter() - t1
    cpu = time.process_time() - cpu0
    result = {"rows": args.rows, "batch_size": args.batch_size, "threads": args.threads,
              "epoch_seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
              "rows_per_second": round(args.rows / seconds),
              "target_seconds": TARGET_SECONDS if args.rows == ROWS else None,
              "within_target": seconds <= TARGET_SECONDS if args.rows == ROWS else None,
              "build_seconds": round(build, 1), "loss": round(loss, 3), "torch": torch.__version__,
              "machine": platform.machine()}
    print(f"one epoch of {args.rows} cached rows on {args.threads} threads: {seconds:.1f} s wall, "
          f"{cpu:.1f} s CPU ({args.rows / seconds:.0f} rows/s; target {TARGET_SECONDS:.0f} s for {ROWS}; "
          f"a busy machine inflates the wall time, the CPU time much less)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
