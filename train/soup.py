"""Average several text runs trained from one checkpoint into one model (a "model soup").

    python -m train.soup --from runs/a runs/b runs/c --out runs/soup --dev ../shared/data/meld/dev_sent_emo.csv

Runs that start from the same checkpoint and differ only in their seed end in nearby weights, and
their average usually scores at least as well as the runs themselves (Wortsman et al., "Model
soups", ICML 2022), at one model's cost. Here:

- the fusion model's tensors (text projection, fusion layer, heads) are averaged, except the voice
  branch, which is taken from the first run (a trained voice must be the same in every run);
- each LoRA-adapted layer's update is averaged exactly (mean of B_i @ A_i, in float32) and stored
  again as one low-rank pair from its singular value decomposition, at the rank that holds the
  update exactly (singular values under SVD_TOLERANCE of the largest dropped), or at --max-rank
  where that is less, so that text_encoder.safetensors stays under the 10 MB a Space accepts
  without Git LFS; what the cut loses is printed and kept in the card (`data.soup`);
- other tuned text tensors are averaged.

The card is the first run's, with data.soup saying what was averaged; with --dev the written files
are scored again (train.evaluate) and the card's metrics.dev are those scores.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

import torch

from core import checkpoint as ck
from core.lora import A_SUFFIX, B_SUFFIX, is_lora

from .evaluate import save_and_score

SVD_TOLERANCE = 1e-4        # singular values below this share of the largest hold nothing
SIZE_LIMIT_MB = 9.5         # text_encoder.safetensors in fp16, below a Space's 10 MB limit


def mean_update(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The mean of the runs' updates B_i @ A_i for one layer, in float32."""
    return sum(b.float() @ a.float() for a, b in pairs) / len(pairs)


def _factors(update: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """SVD of an update, and the rank that holds it up to SVD_TOLERANCE."""
    u, s, vh = torch.linalg.svd(update, full_matrices=False)
    held = int((s > s[0] * SVD_TOLERANCE).sum()) if s.numel() and s[0] > 0 else 0
    return u, s, vh, max(1, held)


def low_rank(update: torch.Tensor, max_rank: int, factors=None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A [r, in], B [out, r], relative Frobenius error) with B @ A closest to `update` at rank r:
    the rank that holds it up to SVD_TOLERANCE, at most max_rank."""
    u, s, vh, held = factors or _factors(update)
    r = max(1, min(held, max_rank))
    root = s[:r].sqrt()
    a, b = root[:, None] * vh[:r], u[:, :r] * root[None, :]
    error = float(s[r:].square().sum().sqrt() / s.square().sum().sqrt().clamp(min=1e-30))
    return a.contiguous(), b.contiguous(), error


def soup_text_state(states: list[dict[str, torch.Tensor]], max_rank: int = 0) -> tuple[dict[str, torch.Tensor], dict]:
    """The averaged text-encoder tensors, and a report (rank kept, largest and overall cut error,
    size). max_rank 0: the largest rank whose file (fp16) fits SIZE_LIMIT_MB."""
    keys = set(states[0])
    if any(set(s) != keys for s in states[1:]):
        raise ck.CheckpointError("the runs tuned different text-encoder tensors; only runs of one recipe can be averaged")
    out = {k: sum(s[k].float() for s in states) / len(states) for k in sorted(keys) if not is_lora(k)}
    updates = {}
    for name in sorted(k for k in keys if k.endswith(A_SUFFIX)):
        layer = name[: -len(A_SUFFIX)]
        update = mean_update([(s[name], s[layer + B_SUFFIX]) for s in states])
        updates[layer] = (update, _factors(update))

    plain = sum(t.numel() for t in out.values())

    def megabytes(r: int) -> float:             # fp16 bytes of the plain tensors and every pair at rank r
        return (plain + sum(min(r, f[3]) * sum(u.shape) for u, f in updates.values())) * 2 / 1e6

    if max_rank <= 0:
        max_rank = max((f[3] for _, f in updates.values()), default=1)
        while max_rank > 1 and megabytes(max_rank) > SIZE_LIMIT_MB:
            max_rank -= 1
    errors, ranks, kept, total = [], [], 0.0, 0.0
    for layer, (update, factors) in updates.items():
        a, b, error = low_rank(update, max_rank, factors)
        out[layer + A_SUFFIX], out[layer + B_SUFFIX] = a, b
        errors.append(error)
        ranks.append(a.shape[0])
        norm = float(update.square().sum())
        total, kept = total + norm, kept + norm * (1 - error ** 2)
    report = {"lora_rank": max(ranks, default=0),
              "largest_relative_error": round(max(errors, default=0.0), 6),
              "relative_error": round((max(total - kept, 0.0) / total) ** 0.5, 6) if total else 0.0,
              "text_megabytes_fp16": round(megabytes(max_rank), 2)}
    return out, report


def soup(runs: list[ck.Checkpoint], max_rank: int = 0) -> tuple[ck.Checkpoint, dict]:
    """One checkpoint averaging `runs` (same shapes, same voice). max_rank 0: the largest rank whose
    text file fits SIZE_LIMIT_MB."""
    if len(runs) < 2:
        raise ck.CheckpointError("a soup needs at least two runs")
    first = runs[0]
    states = [r.model.state_dict() for r in runs]
    if any(set(s) != set(states[0]) or any(s[k].shape != v.shape for k, v in states[0].items()) for s in states[1:]):
        raise ck.CheckpointError("the runs' fusion models differ in shape")
    if any(r.card.text_encoder.get("name") != first.card.text_encoder.get("name") for r in runs):
        raise ck.CheckpointError("the runs read the words with different text encoders")
    heard = any("audio" in r.card.trained_modalities for r in runs)   # else the voice branch is untrained
    merged = {}
    for k, v in states[0].items():
        if k.startswith(ck.VOICE_PREFIXES) or not v.is_floating_point():
            if heard and any(not torch.equal(s[k], v) for s in states[1:]):
                raise ck.CheckpointError(f"the runs' voice branches differ ({k}); soup text runs, then train.swap_text")
            merged[k] = v.clone()
        else:
            merged[k] = sum(s[k] for s in states) / len(states)
    model = copy.deepcopy(first.model)
    model.load_state_dict(merged)
    text, report = soup_text_state([r.text_state for r in runs], max_rank)
    card = copy.deepcopy(first.card)
    card.created = ""
    if "lora" in card.text_encoder and report["lora_rank"]:
        card.text_encoder["lora"] = {**card.text_encoder["lora"], "rank": report["lora_rank"]}
    report["runs"] = len(runs)
    return ck.Checkpoint(model.eval(), card, text), report


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m train.soup", description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="runs", nargs="+", required=True, help="checkpoint folders to average")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--max-rank", type=int, default=0,
                   help=f"LoRA rank to store at most (default: the largest that keeps the file under {SIZE_LIMIT_MB} MB)")
    p.add_argument("--dev", default=None, help="MELD-format CSV to score the written files on")
    args = p.parse_args(argv)
    try:
        runs = [ck.load_checkpoint(r) for r in args.runs]
        result, report = soup(runs, args.max_rank)
        seeds = [((r.card.data.get("training") or {}).get("args") or {}).get("seed") for r in runs]
        result.card.data["soup"] = {"from": [r.card.name for r in runs], "folders": list(args.runs), "seeds": seeds,
                                    **report,
                                    "how": "uniform mean of the runs' fusion weights and of each layer's LoRA "
                                           "update (B @ A), stored again by SVD (train.soup)"}
        card = result.card
        card.metrics = {k: v for k, v in card.metrics.items() if k not in ("dev_during_training", "best_epoch")}
        summary = {"out": args.out, **report, **save_and_score(args.out, result.model, card, result.text_state, args.dev)}
        print(f"averaged {len(runs)} runs: LoRA rank {report['lora_rank']}, text file "
              f"{report['text_megabytes_fp16']} MB, update lost to the cut {100 * report['relative_error']:.3f} %",
              file=sys.stderr)
    except ck.CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
