"""Classification metrics as pure functions (no scikit-learn), and a confusion-matrix PNG.

Conventions (the same as scikit-learn's defaults, so figures compare with published ones):
* ``weighted_f1`` is the mean of the per-class F1 scores weighted by each class's support
  (its count among the true labels); it is the figure MELD papers report.
* A class that is never predicted and never true has precision, recall and F1 of 0; it has no
  weight in the weighted mean anyway.
* ``report`` gives percentages (0-100), rounded to two decimals; the other functions give
  fractions (0-1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> list[list[int]]:
    """cm[t][p] = how many items of true class t were predicted as p."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    cm = [[0] * n_classes for _ in range(n_classes)]
    for t, p in zip(y_true, y_pred):
        cm[t][p] += 1
    return cm


def per_class_prf(cm: list[list[int]]) -> list[tuple[float, float, float, int]]:
    """(precision, recall, F1, support) of each class, from a confusion matrix."""
    n = len(cm)
    out = []
    for c in range(n):
        tp = cm[c][c]
        predicted = sum(cm[t][c] for t in range(n))
        support = sum(cm[c])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append((precision, recall, f1, support))
    return out


def per_class_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> list[float]:
    return [f1 for _, _, f1, _ in per_class_prf(confusion_matrix(y_true, y_pred, n_classes))]


def weighted_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Per-class F1 averaged with each class's support as its weight."""
    stats = per_class_prf(confusion_matrix(y_true, y_pred, n_classes))
    total = sum(s for _, _, _, s in stats)
    return sum(f1 * s for _, _, f1, s in stats) / total if total else 0.0


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Unweighted mean of the per-class F1 over the classes present in y_true or y_pred."""
    stats = per_class_prf(confusion_matrix(y_true, y_pred, n_classes))
    seen = set(y_true) | set(y_pred)
    return sum(stats[c][2] for c in seen) / len(seen) if seen else 0.0


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    return sum(int(t == p) for t, p in zip(y_true, y_pred)) / len(y_true) if y_true else 0.0


def report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Everything about one task, in percentages: weighted/macro F1, accuracy, per class, matrix."""
    n = len(labels)
    cm = confusion_matrix(y_true, y_pred, n)
    stats = per_class_prf(cm)
    pct = lambda x: round(100.0 * x, 2)   # noqa: E731
    return {
        "weighted_f1": pct(weighted_f1(y_true, y_pred, n)),
        "macro_f1": pct(macro_f1(y_true, y_pred, n)),
        "accuracy": pct(accuracy(y_true, y_pred)),
        "per_class": {label: {"precision": pct(p), "recall": pct(r), "f1": pct(f), "support": s}
                      for label, (p, r, f, s) in zip(labels, stats)},
        "confusion": cm,
        "labels": list(labels),
        "rows": len(y_true),
    }


def format_report(name: str, rep: dict) -> str:
    """A fixed-width text table of a report()."""
    lines = [f"{name}: weighted F1 {rep['weighted_f1']:.2f}  accuracy {rep['accuracy']:.2f}  "
             f"macro F1 {rep['macro_f1']:.2f}  ({rep['rows']} rows)",
             f"  {'class':<10} {'F1':>6} {'prec':>6} {'recall':>6} {'support':>8}"]
    for label, s in rep["per_class"].items():
        lines.append(f"  {label:<10} {s['f1']:>6.2f} {s['precision']:>6.2f} {s['recall']:>6.2f} {s['support']:>8}")
    return "\n".join(lines)


# ---------------------------------------------------------------- picture

def render_confusion_png(cm: list[list[int]], labels: Sequence[str], path: str | Path,
                         title: str = "") -> Path:
    """Draw a confusion matrix (rows: true, columns: predicted) as a PNG with Pillow.

    Each cell shows its count; its shade is the share of its row (recall), so rare classes are
    as readable as frequent ones.
    """
    from PIL import Image, ImageDraw, ImageFont

    n = len(labels)
    cell, left, top, pad = 64, 110, 90, 20
    width, height = left + n * cell + pad, top + n * cell + 50

    def font(size: int):
        try:
            return ImageFont.load_default(size=size)
        except TypeError:                      # Pillow < 10.1: bitmap font only
            return ImageFont.load_default()

    small, big = font(13), font(16)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((pad, 12), title, fill="black", font=big)
    draw.text((left + n * cell / 2, top - 48), "predicted", fill="black", font=small, anchor="mm")
    draw.text((pad, top + n * cell + 30), "rows: true label; shade: share of the row", fill="gray",
              font=small)
    for i, label in enumerate(labels):
        draw.text((left - 8, top + i * cell + cell / 2), label, fill="black", font=small, anchor="rm")
        draw.text((left + i * cell + cell / 2, top - 18), label[:8], fill="black", font=small, anchor="mm")
    for t in range(n):
        total = sum(cm[t]) or 1
        for p in range(n):
            share = cm[t][p] / total
            shade = int(255 - 200 * share)
            colour = (shade, shade, 255) if t == p else (255, shade, shade)
            x0, y0 = left + p * cell, top + t * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(200, 200, 200))
            ink = "white" if share > 0.6 else "black"
            draw.text((x0 + cell / 2, y0 + cell / 2), str(cm[t][p]), fill=ink, font=small, anchor="mm")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
