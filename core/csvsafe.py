"""The one CSV writer of the project: every cell a spreadsheet would run as a formula is defused.

A spreadsheet runs a cell as a formula when it starts with ``= + - @``, also after a leading TAB,
CR or LF, after leading spaces, and in their full-width (``＝ ＋ － ＠``) or small (``﹦ ﹢ ﹣ ﹫``)
forms (OWASP "CSV injection"). Such a cell is written with a leading ``'``, which
``unescape_cell`` removes again; a cell that already starts with ``'`` before such a character
gets one more, so reading back always gives the text that was written (a lossless round trip).

Numbers are written as they are; only text cells are escaped. The MELD export (core.meld), the
batch command's NAME.csv (core.batch) and train.evaluate's predictions.csv all go through here.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import IO, Any, Iterable, Sequence, Union

FORMULA_CHARS = "=+-@\t\r\n\uff1d\uff0b\uff0d\uff20\ufe66\ufe62\ufe63\ufe6b"
LEADING_SPACES = " \u00a0\u3000"      # spaces a spreadsheet may skip before a formula
_SPACES = "[" + re.escape(LEADING_SPACES) + "]*"
_FORMULA = "[" + re.escape(FORMULA_CHARS) + "]"
_NEEDS_ESCAPE = re.compile("'*" + _SPACES + _FORMULA)
_ESCAPED = re.compile("'+" + _SPACES + _FORMULA)


def escape_cell(value: Any) -> Any:
    """`value` with a leading ``'`` if it is text a spreadsheet would run as a formula (or text
    that already looks escaped); anything else is returned unchanged."""
    if isinstance(value, str) and _NEEDS_ESCAPE.match(value):
        return "'" + value
    return value


def unescape_cell(text: str) -> str:
    """The text `escape_cell` was given: one leading ``'`` removed from an escaped cell."""
    return text[1:] if _ESCAPED.match(text) else text


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]], lineterminator: str = "\r\n") -> str:
    """The CSV of `header` and `rows` with every text cell escaped; ``None`` is an empty cell."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=lineterminator, quoting=csv.QUOTE_MINIMAL)
    writer.writerow([escape_cell(h) for h in header])
    for row in rows:
        writer.writerow(["" if v is None else escape_cell(v) for v in row])
    return buffer.getvalue()


def write_csv(target: Union[str, Path, IO], header: Sequence[str], rows: Iterable[Sequence[Any]],
              excel_bom: bool = False, lineterminator: str = "\r\n") -> None:
    """Write the formula-safe CSV as UTF-8 to a path or a text/binary buffer.

    ``excel_bom`` adds a UTF-8 BOM so that Excel does not decode the file as cp1252. An OSError
    (disk full, permission) is left to the caller, who names the file (core.writes.os_error_line).
    """
    data = ("\ufeff" if excel_bom else "") + csv_text(header, rows, lineterminator)
    if not hasattr(target, "write"):
        try:
            Path(target).write_bytes(data.encode("utf-8"))
        except OSError as err:          # a failed write (disk full) has no file name: give it one
            err.filename = err.filename or str(target)
            raise
    elif isinstance(target, io.TextIOBase):
        target.write(data)
    else:
        target.write(data.encode("utf-8"))
