"""Import a MELD-format CSV to go on annotating: one session per Dialogue_ID, nothing valid dropped.

core.meld.read_meld_csv validates the file and keeps every non-empty row (a bad cell is emptied and
reported). Here the rows are grouped by Dialogue_ID (a row whose id is missing joins the dialogue
of the row above it) and ordered by Utterance_ID, file order on ties. Every problem is kept, one
line each, in the sessions it concerns and in what the user is shown.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from core.meld import MeldRow, RowProblem, read_meld_csv, repair_text

from .session import Session, from_meld_rows


@dataclass
class Imported:
    dialogues: list[tuple[int, list[MeldRow], list[int]]]   # (Dialogue_ID, rows, their CSV row numbers)
    problems: list[RowProblem] = field(default_factory=list)
    repaired: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return sum(len(rows) for _, rows, _ in self.dialogues)


def read(path: str | Path, fallback_dialogue: int = 0) -> Imported:
    """Read and group a MELD CSV; MeldFormatError (one line) if it is not one at all."""
    table = read_meld_csv(path)
    groups: dict[int, list[tuple[int, int, MeldRow]]] = {}
    notes, current, orphans = [], None, 0
    for n, row in enumerate(table.rows):
        if row.dialogue_id is None:
            target = current if current is not None else fallback_dialogue
            orphans += 1
        else:
            target = row.dialogue_id
        current = target
        groups.setdefault(target, []).append((row.utterance_id if row.utterance_id is not None else 10**9, n, row))
    dialogues = []
    for dialogue_id, items in groups.items():
        items.sort(key=lambda t: (t[0], t[1]))
        dialogues.append((dialogue_id, [r for _, _, r in items], [r.line for _, _, r in items]))
    if orphans:
        notes.append(f"{orphans} row(s) without a valid Dialogue_ID were kept with the rows above them")
    if table.repaired:
        where = _mojibake_rows(path)
        notes.append(f"{table.repaired} row(s) had garbled characters (mojibake) repaired"
                     + (f": row {', '.join(map(str, where[:20]))}{' …' if len(where) > 20 else ''}" if where else ""))
    return Imported(dialogues, list(table.problems), table.repaired, notes)


def _mojibake_rows(path: str | Path) -> list[int]:
    """Spreadsheet rows (header = 1) holding text that repair_text changes; [] if unsure."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return []
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error:
        return []
    return [n for n, record in enumerate(records[1:], start=2)
            if any(repair_text(cell) != cell for cell in record)]


def sessions_from(imported: Imported, csv_name: str, new_id) -> list[Session]:
    """One session per dialogue, titled after the CSV; each carries the problems of its rows."""
    out = []
    for dialogue_id, rows, csv_rows in imported.dialogues:
        title = f"{Path(csv_name).name} · dialogue {dialogue_id}" if len(imported.dialogues) > 1 else Path(csv_name).name
        session = from_meld_rows(rows, new_id(), title, dialogue_id)
        mine = set(csv_rows)
        session.problems = [str(p) for p in imported.problems if p.row in mine or p.row == 1] + imported.notes
        out.append(session)
    return out

