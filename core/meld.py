"""The MELD CSV format: read (validate, report row-level problems), write, clip names. Policies:

* Times are ``h:mm:ss,mmm``; MELD hours have one or two digits. The millisecond part is read as a
  decimal fraction of a second, so a short field is right-padded: ``"00:06:47,28"`` (MELD train
  Sr No. 4268, the only such field in train/dev) is 47.280 s, as ``strptime("%f")`` reads it.
  Neighbouring rows cannot tell 47.280 from 47.028 apart; the decimal reading is the standard one.
* The key of a row is (Dialogue_ID, Utterance_ID); ``Sr No.`` is not unique and is never a key.
* Nothing is silently dropped. A bad cell becomes a ``RowProblem`` and the row is kept with that
  field emptied (a bad label -> ``""``, a bad time or id -> ``None``). Duplicate keys keep both
  rows and flag the later one. Only rows that are entirely empty are skipped.
* ``RowProblem.row`` is the spreadsheet row number: the header is row 1, the first record row 2.
  It equals the file's line number when no field spans lines. Header problems use row 1.
* Text is repaired (``repair_text``) on read, and cells are escaped against spreadsheet formula
  injection on write (a leading ``'``, core.csvsafe), which the reader undoes, so a round trip is
  lossless.
* Ids (Dialogue_ID, Utterance_ID, Season, Episode, Sr No.) must be whole numbers in 0..MAX_ID;
  anything else (``9223372036854775807``, ``10**30``) is a row problem, never a crash later.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Union

from .csvsafe import csv_text, unescape_cell, write_csv
from .labels import EMOTIONS, SENTIMENTS, emotion_index, sentiment_index
from .types import UserError

COLUMNS = ("Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
           "Utterance_ID", "Season", "Episode", "StartTime", "EndTime")
ESSENTIAL_COLUMNS = ("Utterance", "Dialogue_ID", "Utterance_ID")
LABEL_COLUMNS = ("Emotion", "Sentiment")
MAX_ID = 10**9          # largest Dialogue_ID / Utterance_ID (and Season, Episode, Sr No.) read
MAX_CELL = 10_000       # characters in one cell (MELD's longest utterance has about 300)
# the csv module refuses fields over 128 KB for the whole file; cells are checked per row instead
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))

_TIME_RE = re.compile(r"(\d+):([0-5]\d):([0-5]\d)[,.](\d{1,3})")
_CLIP_RE = re.compile(r"dia(\d+)_utt(\d+)\.mp4", re.IGNORECASE)
_NAME_NOISE_RE = re.compile(r"[\s_.]")  # header names match ignoring case, spaces, "_" and "."
_INT_RE = re.compile(r"[+-]?\d+(\.0*)?")

# cp1252 character of each byte 0x80-0xFF ("" for the undefined 0x81, 0x8D, 0x8F, 0x90, 0x9D).
_CP1252 = {b: bytes([b]).decode("cp1252", errors="ignore") for b in range(0x80, 0x100)}
# Each character a cp1252 or latin-1 decode gives for a byte 0x80-0xFF, mapped back to the byte.
_MOJIBAKE_BYTE = {chr(b): b for b in _CP1252} | {c: b for b, c in _CP1252.items() if c}
_MOJIBAKE_RUN = re.compile("[" + "".join(re.escape(c) for c in _MOJIBAKE_BYTE) + "]{2,}")
# C1 controls (U+0080-U+009F) are cp1252 bytes decoded as latin-1; undefined ones are dropped.
_C1_TO_CP1252 = {b: _CP1252[b] or None for b in range(0x80, 0xA0)}
_C1_TO_CP1252_KEEP = {b: _CP1252[b] or chr(b) for b in range(0x80, 0xA0)}
# Lengths of the UTF-8 sequences repair_text decodes, by lead byte. 2-byte sequences only from
# Â/Ã (U+0080-U+00FF), so that e.g. "JOSÉ’S" (É’ = C9 92, valid UTF-8) stays as it is.
_UTF8_LEAD_SIZE = {0xC2: 2, 0xC3: 2, **dict.fromkeys(range(0xE0, 0xF0), 3),
                   **dict.fromkeys(range(0xF0, 0xF5), 4)}
_BY_CANONICAL = {_NAME_NOISE_RE.sub("", c).lower(): c for c in COLUMNS}


class MeldFormatError(UserError):
    """The input is not a MELD CSV at all (binary, unparseable, or lacking essential columns)."""


@dataclass
class MeldRow:
    """One utterance of a MELD CSV. Labels are lower-case ("" when absent or invalid)."""

    utterance: str
    speaker: str
    emotion: str
    sentiment: str
    dialogue_id: int | None
    utterance_id: int | None
    season: int | None = None
    episode: int | None = None
    start: float | None = None   # seconds
    end: float | None = None     # seconds
    sr_no: int | None = None
    line: int = field(default=0, compare=False)  # its record's row number in the file read (header = 1); 0: not read

    @property
    def key(self) -> tuple[int | None, int | None]:
        return (self.dialogue_id, self.utterance_id)


@dataclass
class RowProblem:
    """A bad cell: ``row`` is the spreadsheet row (header = 1); ``column`` "" = whole record."""

    row: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}{', ' + self.column if self.column else ''}: {self.message}"


@dataclass
class MeldTable:
    """What ``read_meld_csv`` found: every non-empty row, the problems, rows with repaired text."""

    rows: list[MeldRow] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    repaired: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def parse_time(text: str) -> float:
    """Seconds from ``h:mm:ss,mmm`` (any number of hour digits, ``,`` or ``.``, 1-3 fraction
    digits read as a decimal fraction: ``,28`` is 280 ms)."""
    match = _TIME_RE.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(f"bad time {text!r}: expected h:mm:ss,mmm such as 0:00:16,403")
    h, m, s, frac = match.groups()
    return round(int(h) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000, 3)


def format_time(seconds: float) -> str:
    """``h:mm:ss,mmm`` rounded to the millisecond, hours unpadded (``0:00:16,403``)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"bad time {seconds!r}: must be a finite number >= 0")
    total_ms = round(seconds * 1000)
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours}:{minutes:02d}:{secs:02d},{ms:03d}"


def _fix_run(run: str) -> str:
    """Decode UTF-8 sequences hidden in a run of cp1252/latin-1 characters; keep the rest."""
    data = bytes(_MOJIBAKE_BYTE[c] for c in run)
    out, i = [], 0
    while i < len(data):
        size = _UTF8_LEAD_SIZE.get(data[i], 1)
        try:
            char = data[i:i + size].decode("utf-8") if size > 1 else run[i]
        except UnicodeDecodeError:
            char, size = run[i], 1
        out.append(char)
        i += size
    return "".join(out)


def repair_text(text: str) -> str:
    """Undo cp1252/latin-1 mojibake (``â\\x80\\x99`` or ``â€™`` -> ’, ``Ã©`` -> é; up to
    three layers), then map C1 controls to their cp1252 character (U+0092 -> ’; undefined: gone).
    Correct text is left alone: a repair needs a whole UTF-8 byte sequence spelled in cp1252 or
    latin-1 characters (e.g. ``Ã`` + continuation), which natural text does not contain."""
    if text.isascii():
        return text
    for _ in range(3):
        fixed = _MOJIBAKE_RUN.sub(lambda m: _fix_run(m.group()), text)
        if fixed == text:
            break
        text = fixed
    return text.translate(_C1_TO_CP1252)


def _utf16_without_bom(data: bytes) -> str | None:
    """`data` decoded as UTF-16 LE or BE when it looks like it (ASCII-range text has a NUL in
    every other byte) and decodes cleanly to text without NULs; else None."""
    sample = data[:4096]
    if len(data) % 2 or len(sample) < 4:
        return None
    for codec, zeros in (("utf-16-le", sample[1::2]), ("utf-16-be", sample[0::2])):
        if zeros.count(0) >= 0.6 * len(zeros):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError:
                continue
            if "\x00" not in text:
                return text
    return None


def _decode(data: bytes) -> str:
    """Text of a CSV file: UTF-16 (BOM or, detected, without), UTF-8 (BOM optional), else cp1252."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data:
        if (text := _utf16_without_bom(data)) is not None:
            return text
        raise MeldFormatError("not a CSV file: binary data (NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:   # cp1252, with its 5 undefined bytes kept as latin-1
        return data.decode("latin-1").translate(_C1_TO_CP1252_KEEP)


def _non_negative_int(raw: str) -> int:
    if not _INT_RE.fullmatch(raw) or len(raw) > 40 or int(raw.split(".")[0]) < 0:
        raise ValueError(f"not a non-negative integer: {raw[:40]!r}")
    value = int(raw.split(".")[0])
    if value > MAX_ID:
        raise ValueError(f"{raw[:40]} is out of range: ids go from 0 to {MAX_ID}")
    return value


def _parse_cells(cells: dict[str, str], row: int, present: dict[str, int],
                 require_labels: bool, problems: list[RowProblem]) -> MeldRow:
    """One MeldRow from its (unescaped) cells; each bad or missing cell becomes a problem."""
    def value(column: str, parse, required: bool = True):
        raw = cells[column].strip()
        if not raw:
            if required and column in present:
                problems.append(RowProblem(row, column, "missing value"))
            return None
        try:
            return parse(raw)
        except ValueError as exc:
            problems.append(RowProblem(row, column, str(exc)))
            return None

    utterance, speaker = repair_text(cells["Utterance"]), repair_text(cells["Speaker"])
    if not utterance.strip():
        problems.append(RowProblem(row, "Utterance", "empty utterance"))
    meld_row = MeldRow(
        utterance=utterance,
        speaker=speaker,
        emotion=value("Emotion", lambda x: EMOTIONS[emotion_index(x)], require_labels) or "",
        sentiment=value("Sentiment", lambda x: SENTIMENTS[sentiment_index(x)],
                        require_labels) or "",
        dialogue_id=value("Dialogue_ID", _non_negative_int),
        utterance_id=value("Utterance_ID", _non_negative_int),
        season=value("Season", _non_negative_int, False),
        episode=value("Episode", _non_negative_int, False),
        start=value("StartTime", parse_time),
        end=value("EndTime", parse_time),
        sr_no=value("Sr No.", _non_negative_int, False),
    )
    if None not in (meld_row.start, meld_row.end) and meld_row.end < meld_row.start:
        problems.append(RowProblem(row, "EndTime", "EndTime is before StartTime"))
    return meld_row


class _Lines:
    """The lines of a text, fed to csv.reader one at a time; `pos` can be moved back."""

    def __init__(self, text: str):
        self.lines, self.pos = io.StringIO(text, newline="").readlines(), 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.lines):
            raise StopIteration
        self.pos += 1
        return self.lines[self.pos - 1]


def _records(text: str) -> list[list[str] | str]:
    """CSV records as lists of strings; ragged rows keep their own length.

    A record that cannot be taken comes back as the reason (a str) and reading goes on: one with
    a cell longer than MAX_CELL, or one that spans lines and has the wrong number of fields (an
    unclosed quote, which would otherwise swallow every row after it): then only its first line
    is given up, and the next line is read as the next record.

    The stdlib reader, not pandas: pandas' python engine silently skips a record with a quoting
    error (its ``on_bad_lines`` callback is not called for those), and its C engine cannot report
    ragged rows. Here every record comes back, so every problem gets its row number.
    """
    first_line = text.split("\n", 1)[0]
    delimiter = next((c for c in ",\t;" if c in first_line), ",")
    feed = _Lines(text)
    reader = csv.reader(feed, delimiter=delimiter)
    records: list[list[str] | str] = []
    while True:
        start = feed.pos
        try:
            record = next(reader)
        except StopIteration:
            return records
        except csv.Error as exc:
            raise MeldFormatError(f"not a valid CSV file: line {start + 1}: {exc}") from None
        longest = max((len(cell) for cell in record), default=0)
        if longest > MAX_CELL and not records:
            raise MeldFormatError(f"not a MELD CSV: a header cell of {longest} characters")
        if longest > MAX_CELL:
            records.append(f"a cell of {longest} characters (the limit is {MAX_CELL}); "
                           "the row is left out")
        elif records and feed.pos - start > 1 and len(record) != len(records[0]):
            records.append(f"an unclosed quote: {len(record)} fields over {feed.pos - start} lines, "
                           f"expected {len(records[0])}; the row is left out, the next line is read on")
            feed.pos = start + 1
        else:
            records.append(record)


def read_meld_csv(path_or_buffer: Union[str, Path, IO], require_labels: bool = True) -> MeldTable:
    """Read and validate a MELD CSV (UTF-8 with or without BOM, cp1252, or UTF-16).

    Missing columns and cells, unknown labels (matched case-insensitively, stored lower-case), bad
    times, bad ids, wrong field counts and duplicate keys become ``RowProblem``s; rows are kept.
    ``require_labels=False`` accepts empty labels. Empty Sr No./Season/Episode cells are fine.
    Raises ``MeldFormatError`` if it is not a CSV or lacks Utterance, Dialogue_ID, Utterance_ID.
    """
    if hasattr(path_or_buffer, "read"):
        data = path_or_buffer.read()
    else:
        data = Path(path_or_buffer).read_bytes()
    data = data.encode("utf-8") if isinstance(data, str) else data
    records = _records(_decode(data))
    if not records:
        raise MeldFormatError("not a MELD CSV: the file is empty")
    header = [h.strip() for h in records[0]]
    index: dict[str, int] = {}
    problems: list[RowProblem] = []
    for i, name in enumerate(header):
        column = _BY_CANONICAL.get(_NAME_NOISE_RE.sub("", name).lower())
        if column in index:
            problems.append(RowProblem(1, column, "duplicate column; the first one is used"))
        elif column:
            index[column] = i
    missing = [c for c in ESSENTIAL_COLUMNS if c not in index]
    if missing:
        shown = ",".join(header)[:60]
        raise MeldFormatError(f"not a MELD CSV: missing column(s) {', '.join(missing)} "
                              f"(header starts {shown!r})")
    for column in COLUMNS:
        if column not in index and (require_labels or column not in LABEL_COLUMNS):
            problems.append(RowProblem(1, column, "missing column"))

    table = MeldTable(problems=problems)
    first_seen: dict[tuple[int, int], int] = {}
    for row, record in enumerate(records[1:], start=2):
        if isinstance(record, str):          # a record the reader gave up (see _records)
            problems.append(RowProblem(row, "", record))
            continue
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            unclosed = len(record) < len(header) and "\n" in record[-1]
            problems.append(RowProblem(row, "", f"{len(record)} fields, expected {len(header)}"
                                       + (" (an unclosed quote?)" if unclosed else "")))
        padded = record + [""] * len(header)
        cells = {c: padded[index[c]] if c in index else "" for c in COLUMNS}
        cells = {c: unescape_cell(v) for c, v in cells.items()}
        meld_row = _parse_cells(cells, row, index, require_labels, problems)
        meld_row.line = row
        if (meld_row.utterance, meld_row.speaker) != (cells["Utterance"], cells["Speaker"]):
            table.repaired += 1
        key = meld_row.key
        if None not in key and (first := first_seen.setdefault(key, row)) != row:
            problems.append(RowProblem(row, "Utterance_ID", f"duplicate key (Dialogue_ID, "
                                       f"Utterance_ID) = {key}, first at row {first}"))
        table.rows.append(meld_row)
    return table


def meld_csv_text(rows: Iterable[MeldRow]) -> str:
    """The MELD CSV for ``rows``: COLUMNS order, CRLF, times formatted, text cells escaped
    (core.csvsafe). ``Sr No.`` falls back to the 1-based position; ``None`` is an empty cell."""
    return csv_text(COLUMNS, _records_of(rows))


def write_meld_csv(rows: Iterable[MeldRow], path: Union[str, Path, IO],
                   excel_bom: bool = False) -> None:
    """Write ``rows`` as UTF-8 MELD CSV to a path or a text/binary buffer (core.csvsafe.write_csv).
    ``excel_bom`` adds a UTF-8 BOM so that Excel does not decode the file as cp1252."""
    write_csv(path, COLUMNS, _records_of(rows), excel_bom=excel_bom)


def _records_of(rows: Iterable[MeldRow]) -> list[list]:
    def num(v: int | None) -> str:
        return "" if v is None else str(int(v))

    def tm(v: float | None) -> str:
        return "" if v is None else format_time(v)

    return [[num(r.sr_no if r.sr_no is not None else i), r.utterance, r.speaker, r.emotion,
             r.sentiment, num(r.dialogue_id), num(r.utterance_id), num(r.season), num(r.episode),
             tm(r.start), tm(r.end)] for i, r in enumerate(rows, start=1)]


def clip_name(dialogue_id: int, utterance_id: int) -> str:
    """``dia{D}_utt{U}.mp4``, the clip name of the original MELD release."""
    if int(dialogue_id) < 0 or int(utterance_id) < 0:
        raise ValueError(f"ids must be >= 0, got ({dialogue_id}, {utterance_id})")
    return f"dia{int(dialogue_id)}_utt{int(utterance_id)}.mp4"


def parse_clip_name(name: str | Path) -> tuple[int, int]:
    """(Dialogue_ID, Utterance_ID) from a clip file name or path; ValueError otherwise."""
    match = _CLIP_RE.fullmatch(Path(name).name)
    if match is None:
        raise ValueError(f"not a MELD clip name: {str(name)!r} (expected dia<D>_utt<U>.mp4)")
    return int(match.group(1)), int(match.group(2))


def label_counts(rows: Iterable[MeldRow]) -> dict[str, dict[str, int]]:
    """Counts per label, in label order, zeros included; empty labels are not counted."""
    rows = list(rows)
    emotions, sentiments = Counter(r.emotion for r in rows), Counter(r.sentiment for r in rows)
    return {"emotion": {e: emotions[e] for e in EMOTIONS},
            "sentiment": {s: sentiments[s] for s in SENTIMENTS}}
