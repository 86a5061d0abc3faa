"""The checkpoints the app can switch between: the shipped default (`assets/model`), the other
shipped ones (`assets/model-NAME`, listed as `shipped/NAME`), every checkpoint folder inside the
data folder's `models/`, and the one given with `--checkpoint`. Pure listing and card text; the
loading itself is ModelHolder.switch (service.py).

A checkpoint folder holds card.json + model.safetensors (core/checkpoint.py). A folder inside
`models/` that holds only one of them, or a card that cannot be read, is listed with its problem
so that a user who copied it in sees why it cannot be picked; other folders are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.checkpoint import (CARD_FILE, DEFAULT_CHECKPOINT, MODEL_FILE, PICKLE_SUFFIXES, CheckpointError,
                             ModelCard, read_card)
from core.types import error_line

SHIPPED = "shipped"
SHIPPED_MORE = "model-"        # assets/model-NAME: another shipped checkpoint, key "shipped/NAME"
GIVEN = "checkpoint"           # the key of a --checkpoint folder outside models/
MODELS_PREFIX = "models/"
MAX_LISTED = 200               # a models folder with more sub-folders is cut here (said in the listing)
METRIC_SPLITS = ("dev", "test")


@dataclass
class Entry:
    """One checkpoint folder as the picker lists it."""

    key: str                   # what the picker and /use_model take: "shipped", "shipped/NAME", "models/NAME", "checkpoint"
    folder: Path
    source: str                # "shipped", "models folder", "--checkpoint"
    card: ModelCard | None = None
    problem: str = ""          # why it cannot be used ("" when it can)

    @property
    def usable(self) -> bool:
        return self.card is not None and not self.problem

    @property
    def label(self) -> str:
        """The dropdown's text."""
        name = self.card.name if self.card else self.folder.name
        where = {SHIPPED: "shipped", GIVEN: "--checkpoint"}.get(self.key, self.key)
        if self.problem:
            return f"⚠ {where} · {self.folder.name}: cannot be used"
        trained = ", ".join(self.card.trained_modalities) or "untrained"
        return f"{name} · {where} · {trained}"

    def to_dict(self, current: bool = False) -> dict[str, Any]:
        """The API's view: key, label, problem and the card in short (no server paths)."""
        out = {"key": self.key, "label": self.label, "source": self.source, "current": current,
               "usable": self.usable, "problem": self.problem}
        if self.card is not None:
            out.update(card_facts(self.card))
        return out


def scan(models_dir: Path, given: str | Path | None = None) -> list[Entry]:
    """Shipped checkpoints first (the default, then the others by name), then the folders of
    `models_dir` by name, then `given` if elsewhere."""
    entries: list[Entry] = []
    if (DEFAULT_CHECKPOINT / CARD_FILE).is_file():
        entries.append(_entry(SHIPPED, DEFAULT_CHECKPOINT, "shipped"))
    for folder in sorted(DEFAULT_CHECKPOINT.parent.glob(SHIPPED_MORE + "*")):
        if (folder / CARD_FILE).is_file():
            entries.append(_entry(f"{SHIPPED}/{folder.name[len(SHIPPED_MORE):]}", folder, "shipped"))
    if models_dir.is_dir():
        folders = sorted((p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.name.lower())
        for folder in folders[:MAX_LISTED]:
            if _looks_like_checkpoint(folder):
                entries.append(_entry(MODELS_PREFIX + folder.name, folder, "models folder"))
    if given:
        folder = Path(given).expanduser().resolve()
        if not any(_same(folder, e.folder) for e in entries):
            entries.append(_entry(GIVEN, folder, "--checkpoint"))
    return entries


def find(entries: list[Entry], key: str) -> Entry | None:
    return next((e for e in entries if e.key == str(key or "").strip()), None)


def current_key(entries: list[Entry], folder: Path | None, card: dict | None) -> str | None:
    """The entry the loaded model came from: by folder, else by the card's name and date."""
    if folder is not None:
        for e in entries:
            if _same(folder, e.folder):
                return e.key
    if card:
        for e in entries:
            if e.usable and e.card.name == card.get("name") and e.card.created == card.get("created"):
                return e.key
    return None


def card_facts(card: ModelCard) -> dict[str, Any]:
    """What the picker shows of a card, as plain data."""
    rows = {split: _rows(card.data.get(split)) for split in ("train", "dev", "test")}
    metrics = {}
    for split in METRIC_SPLITS:
        m = card.metrics.get(split)
        if isinstance(m, dict):
            kept = {k: m[k] for k in ("emotion_weighted_f1", "sentiment_weighted_f1") if _is_num(m.get(k))}
            if kept:
                metrics[split] = kept
    voice = card.data.get("voice") if isinstance(card.data.get("voice"), dict) else {}
    gate = voice.get("familiarity") if isinstance(voice.get("familiarity"), dict) else {}
    voice_gate = ({"full": float(gate["full"]), "none": float(gate["none"])}
                  if _is_num(gate.get("full")) and _is_num(gate.get("none")) else None)
    return {"name": card.name, "trained_modalities": list(card.trained_modalities), "voice_gate": voice_gate,
            "text_encoder": str(card.text_encoder.get("name", "")),
            "context_turns": _int(card.text_encoder.get("context_turns")),
            "context_ahead": _int(card.text_encoder.get("context_ahead")),
            "rows": {k: v for k, v in rows.items() if v is not None}, "metrics": metrics,
            "created": card.created, "notes": card.notes}


def card_markdown(entry: Entry | None, current: bool = False) -> str:
    """The card in readable form for the page."""
    if entry is None:
        return "*No checkpoint selected.*"
    where = {"shipped": f"shipped with the app (`assets/{entry.folder.name}`)", "--checkpoint": "given with `--checkpoint`"}
    place = where.get(entry.source, f"`{entry.key}` in the data folder")
    if entry.problem:
        return f"#### ⚠ {entry.folder.name}\n{place}  \n**Cannot be used:** {entry.problem}"
    f = card_facts(entry.card)
    trained = ", ".join(f["trained_modalities"]) or "nothing (untrained: predictions are not meaningful)"
    lines = [f"#### {f['name']}" + (" · *in use*" if current else ""), place, "",
             f"- **Trained on:** {trained}"]
    context = " + ".join(p for p in (f"{f['context_turns']} previous" if f["context_turns"] else "",
                                     f"{f['context_ahead']} following" if f["context_ahead"] else "") if p)
    if f["text_encoder"]:
        lines.append(f"- **Text encoder:** {f['text_encoder']}" + (f", {context} utterances as context" if context else ""))
    if f["voice_gate"]:
        lines.append(f"- **Voice:** counted fully up to familiarity distance {f['voice_gate']['full']:.2f}, "
                     f"not at all from {f['voice_gate']['none']:.2f} (a voice unlike those it learned from counts less)")
    if f["rows"]:
        lines.append("- **Data:** " + " · ".join(f"{split} {n:,} rows" for split, n in f["rows"].items()))
    if not f["metrics"]:
        lines.append("- **Metrics:** none recorded")
    for split, m in f["metrics"].items():
        parts = [f"{label} {m[k]:.2f}" for k, label in (("emotion_weighted_f1", "emotion"),
                                                         ("sentiment_weighted_f1", "sentiment")) if k in m]
        lines.append(f"- **{split.capitalize()} weighted F1:** {' · '.join(parts)}")
    if f["created"]:
        lines.append(f"- **Created:** {f['created'].replace('T', ' ')}")
    if f["notes"]:
        lines += ["", f"*{_one_paragraph(f['notes'])}*"]
    return "\n".join(lines)


# ---------------------------------------------------------------- helpers

def _entry(key: str, folder: Path, source: str) -> Entry:
    try:
        card = read_card(folder)
    except (CheckpointError, OSError) as err:
        return Entry(key, folder, source, None, error_line(err, 240).replace(str(folder), folder.name))
    if not (folder / MODEL_FILE).is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = f" (found {', '.join(pickles)}: pickled weights are refused)" if pickles else ""
        return Entry(key, folder, source, card, f"{MODEL_FILE} is missing{hint}")
    return Entry(key, folder, source, card)


def _looks_like_checkpoint(folder: Path) -> bool:
    try:
        return any((folder / name).exists() for name in (CARD_FILE, MODEL_FILE)) or \
            any(p.suffix in PICKLE_SUFFIXES for p in folder.iterdir())
    except OSError:
        return False


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _rows(split: Any) -> int | None:
    if isinstance(split, dict):
        for name in ("rows", "examples"):
            if isinstance(split.get(name), int) and not isinstance(split.get(name), bool):
                return split[name]
    return None


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(value: Any) -> int:
    return int(value) if _is_num(value) else 0


def _one_paragraph(text: str, limit: int = 600) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


