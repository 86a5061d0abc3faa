"""What is wrong with a session's rows, named by the table's ids (row positions, from 0).

Three kinds: an *overlap* (an utterance starting before an earlier one ends) is a warning, shown on
the row and in the chart, and never blocks anything; a *pair* (an emotion and a sentiment MELD
never labels together, such as anger and positive: the model reads them apart, and an annotator
may change one and not the other) is a warning on the row; an *export problem* (no emotion or sentiment,
no start or end, an end not after its start, no words) keeps the session out of a MELD export,
since the retraining script would have to drop or reject that row. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.labels import EMOTIONS, SENTIMENTS, unusual_pair

from .session import NEW_TEXT, Session


@dataclass(frozen=True)
class RowIssue:
    position: int        # the table's id
    kind: str            # "overlap" or "pair" (warnings) or "export" (blocks an export)
    message: str         # short, e.g. "no emotion"

    def __str__(self) -> str:
        return f"utterance {self.position}: {self.message}"


def overlaps(session: Session) -> list[RowIssue]:
    """Each row that starts before an earlier row (in table order) has ended."""
    out, latest, latest_pos = [], None, None
    for i, r in enumerate(session.rows):
        if r.start is None or r.end is None:
            continue
        if latest is not None and r.start < latest - 1e-6:
            out.append(RowIssue(i, "overlap", f"starts at {r.start:.2f} s, before utterance {latest_pos} "
                                              f"ends ({latest:.2f} s)"))
        if latest is None or r.end > latest:
            latest, latest_pos = r.end, i
    return out


def label_pairs(session: Session) -> list[RowIssue]:
    """Each row whose emotion and sentiment MELD never pairs (core.labels.unusual_pair)."""
    out = []
    for i, r in enumerate(session.rows):
        note = unusual_pair(r.emotion, r.sentiment)
        if note:
            out.append(RowIssue(i, "pair", note))
    return out


def export_problems(session: Session) -> list[RowIssue]:
    """Rows a MELD export must not write as they are."""
    out = []
    for i, r in enumerate(session.rows):
        missing = [name for name, value, labels in (("emotion", r.emotion, EMOTIONS),
                                                    ("sentiment", r.sentiment, SENTIMENTS))
                   if value not in labels]
        missing += [name for name, value in (("start", r.start), ("end", r.end)) if value is None]
        if missing:
            out.append(RowIssue(i, "export", f"no {', no '.join(missing)}"))
        if r.start is not None and r.end is not None and r.end <= r.start:
            out.append(RowIssue(i, "export", f"ends ({r.end:.2f} s) before it starts ({r.start:.2f} s)"))
        if not r.text.strip() or r.text.strip() == NEW_TEXT:
            out.append(RowIssue(i, "export", "no words"))
    return out


def by_row(issues: list[RowIssue]) -> dict[int, list[RowIssue]]:
    out: dict[int, list[RowIssue]] = {}
    for issue in issues:
        out.setdefault(issue.position, []).append(issue)
    return out


def summary(issues: list[RowIssue], limit: int = 6) -> str:
    """One line naming the rows: "utterance 2: no emotion; utterance 5: no words; … (+3 more)"."""
    shown = "; ".join(str(i) for i in issues[:limit])
    return shown + (f"; … (+{len(issues) - limit} more)" if len(issues) > limit else "")
