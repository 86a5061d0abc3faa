"""Resumable training: after every epoch the loop's whole state goes to one file; --resume reads it.

The file holds tensors and plain values only (everything else as JSON text) and is read back with
torch.load(weights_only=True), so nothing in it is ever unpickled as code. It holds the fusion
model and the trainable encoder tensors, the optimiser and schedule, the weight average, the
best epoch's weights so far, the history, and the random states (batch order and dropout), so a
run stopped after epoch k and resumed ends with the same weights as one that never stopped.

With --save-every N it is also written every N steps inside an epoch: the state then says how far
into the epoch it is ("partial": steps done and their summed loss) and keeps the batch-order random
state from before that epoch, so the resumed run draws the same batches and skips those done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "resume.pt"
# arguments that may differ between the stopped run and its resumption
FREE_ARGS = ("resume", "stop_after", "threads", "quiet", "no_final_eval", "tb", "out", "save_every",
             "keep_states", "states_dir", "device")


class ResumeError(ValueError):
    """The saved state cannot continue this run; the message says why in one line."""


def check_args(saved: dict, now: dict) -> None:
    """Refuse to resume with different training arguments (only FREE_ARGS may change)."""
    diff = sorted(k for k in set(saved) | set(now) if k not in FREE_ARGS and saved.get(k) != now.get(k))
    if diff:
        k = diff[0]
        raise ResumeError(f"--resume: the saved run had --{k.replace('_', '-')} {saved.get(k)!r}, "
                          f"this one {now.get(k)!r}; resume with the same arguments")


def save(path: str | Path, epoch: int, args: dict, model, trainable: dict, optimizer, schedule,
         average, rng: np.random.Generator, result, best: dict, partial: dict | None = None) -> None:
    """Write the state after `epoch` atomically (temp file + rename). Inside epoch + 1: `partial`
    holds {"step", "loss_sum", "rng"} (steps done, their summed loss, the batch-order state the
    epoch started from)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "epoch": epoch, "args": json.dumps(args, sort_keys=True, default=str),
        "model": model.state_dict(), "trainable": {n: p.detach() for n, p in trainable.items()},
        "optimizer": optimizer.state_dict(), "schedule": json.dumps(schedule.state_dict(), default=_plain),
        "average": ({"shadow": average.shadow, "updates": average.updates} if average is not None else {}),
        "rng": json.dumps(partial["rng"] if partial else rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "partial": json.dumps({k: v for k, v in partial.items() if k != "rng"} if partial else None),
        "result": json.dumps({"best_epoch": result.best_epoch, "history": result.history, "scores": result.scores,
                              "epoch_seconds": result.epoch_seconds, "steps": result.steps}, default=_plain),
        "best_key": list(best["key"]) if best["key"] is not None else None,
        "best_model": best.get("model", {}), "best_tuned": best.get("tuned", {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def saved_args(path: str | Path) -> dict:
    """The training arguments the state at `path` was saved with."""
    return json.loads(_load(path)["args"])


def restore(path: str | Path, model, trainable: dict, optimizer, schedule, average,
            rng: np.random.Generator, result, best: dict) -> tuple[int, dict | None]:
    """Put the saved state back into the live objects; returns the epoch to start with and, when
    the state was saved inside it, {"step", "loss_sum"} (else None)."""
    state = _load(path)
    model.load_state_dict(state["model"])
    with torch.no_grad():
        for n, p in trainable.items():
            if n not in state["trainable"]:
                raise ResumeError(f"--resume: the saved run has no tensor {n}")
            p.copy_(state["trainable"][n])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(json.loads(state["schedule"]))
    if average is not None:
        if not state["average"]:
            raise ResumeError("--resume: the saved run kept no weight average")
        for n, t in state["average"]["shadow"].items():
            average.shadow[n].copy_(t)
        average.updates = int(state["average"]["updates"])
    rng.bit_generator.state = json.loads(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    saved = json.loads(state["result"])
    result.best_epoch, result.history, result.scores = saved["best_epoch"], saved["history"], saved["scores"]
    result.epoch_seconds, result.steps = saved["epoch_seconds"], saved["steps"]
    best["key"] = tuple(state["best_key"]) if state["best_key"] is not None else None
    if state["best_model"]:
        best["model"], best["tuned"] = state["best_model"], state["best_tuned"]
    partial = json.loads(state["partial"]) if "partial" in state else None
    return int(state["epoch"]) + 1, partial


def _load(path: str | Path) -> dict:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ResumeError(f"--resume: no saved state at {path} (a run saves one after each epoch)") from None
    except Exception as err:
        raise ResumeError(f"--resume: {path} is not a readable training state "
                          f"({str(err).splitlines()[0][:120] if str(err) else type(err).__name__})") from None


def _plain(value):
    """JSON for numpy scalars and arrays in scores and schedule states."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")
