"""MELD-format CSV -> text examples, each with its dialogue context.

Text only: one example per labelled row, holding the utterance, the context the app would build
for it (``core.text.build_context`` over the previous utterances of the same dialogue, in
Utterance_ID order, without speaker names, since Whisper gives none), and its label indices.
A dataset of clips (face, audio) belongs in its own module; it can reuse ``dialogue_order``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from core.text import build_context
from core.labels import EMOTIONS, SENTIMENTS
from core.meld import MeldRow, read_meld_csv


@dataclass
class TextExample:
    text: str
    context: str                 # "" for the first utterance of a dialogue or when turns == 0
    emotion: int                 # index in EMOTIONS
    sentiment: int               # index in SENTIMENTS
    dialogue_id: int | None = None
    utterance_id: int | None = None


@dataclass
class TextSplit:
    """The labelled examples of one CSV, in file order, and what was left out and why."""

    path: str
    examples: list[TextExample]
    rows: int                    # rows read from the file
    skipped: list[str] = field(default_factory=list)     # one line per row that is not an example
    problems: int = 0            # row-level problems core.meld reported
    repaired: int = 0            # rows whose text had mojibake repaired
    sha256: str = ""

    def label_counts(self) -> dict[str, dict[str, int]]:
        emo = Counter(EMOTIONS[e.emotion] for e in self.examples)
        sen = Counter(SENTIMENTS[e.sentiment] for e in self.examples)
        return {"emotion": {k: emo.get(k, 0) for k in EMOTIONS},
                "sentiment": {k: sen.get(k, 0) for k in SENTIMENTS}}

    def describe(self) -> dict:
        """What a model card records about the data it saw."""
        return {"csv": Path(self.path).name, "sha256": self.sha256, "rows": self.rows,
                "examples": len(self.examples), "skipped": len(self.skipped),
                "repaired_text": self.repaired, "labels": self.label_counts()}


def dialogue_order(rows: list[MeldRow]) -> list[list[int]]:
    """Row indices grouped by dialogue, each group in Utterance_ID order (file order on ties).

    Rows without a Dialogue_ID form a dialogue of their own (they get no context).
    """
    groups: dict[object, list[int]] = {}
    for i, row in enumerate(rows):
        key = row.dialogue_id if row.dialogue_id is not None else ("row", i)
        groups.setdefault(key, []).append(i)
    big = float("inf")
    return [sorted(idx, key=lambda i: (rows[i].utterance_id if rows[i].utterance_id is not None else big, i))
            for idx in groups.values()]


def contexts_for(rows: list[MeldRow], turns: int, ahead: int = 0) -> list[str]:
    """The context of every row as the app builds it: its dialogue's previous `turns` utterances
    (and the `ahead` that follow it, see core.text.build_context)."""
    out = [""] * len(rows)
    if turns <= 0 and ahead <= 0:
        return out
    for group in dialogue_order(rows):
        texts = [rows[i].utterance for i in group]
        for pos, i in enumerate(group):
            out[i] = build_context(texts, pos, turns, ahead)
    return out


def text_examples(rows: list[MeldRow], turns: int, ahead: int = 0) -> tuple[list[TextExample], list[str]]:
    """Labelled rows as examples (file order) and a note for each row left out.

    An unlabelled row is no example, but its words still count as context for the next rows.
    """
    contexts = contexts_for(rows, turns, ahead)
    examples, skipped = [], []
    for i, row in enumerate(rows):
        if row.emotion not in EMOTIONS or row.sentiment not in SENTIMENTS:
            skipped.append(f"record {i + 1} (dia{row.dialogue_id}_utt{row.utterance_id}): "
                           f"no valid emotion/sentiment label")
            continue
        if not row.utterance.strip():
            skipped.append(f"record {i + 1} (dia{row.dialogue_id}_utt{row.utterance_id}): empty utterance")
            continue
        examples.append(TextExample(row.utterance, contexts[i], EMOTIONS.index(row.emotion),
                                    SENTIMENTS.index(row.sentiment), row.dialogue_id, row.utterance_id))
    return examples, skipped


def load_text_split(path: str | Path, turns: int, limit: int | None = None, ahead: int = 0) -> TextSplit:
    """Read a MELD-format CSV (core.meld: validates, repairs mojibake) into text examples.

    `limit` keeps the first `limit` examples (for quick runs); contexts still come from the
    whole file.
    """
    table = read_meld_csv(path)
    examples, skipped = text_examples(table.rows, turns, ahead)
    if limit is not None:
        examples = examples[:limit]
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return TextSplit(str(path), examples, len(table.rows), skipped, len(table.problems),
                     table.repaired, digest)
