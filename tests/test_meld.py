"""MELD CSV format: times, mojibake repair, reading (real splits and malformed files), writing."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from core.labels import EMOTIONS, SENTIMENTS
from core.meld import (COLUMNS, MeldFormatError, MeldRow, clip_name, format_time, label_counts,
                       parse_clip_name, parse_time, read_meld_csv, repair_text, write_meld_csv)

MELD_DIR = Path(__file__).resolve().parents[2] / "shared/data/meld"
# Counted by hand: `wc -l` gives 9990 / 1110 CRLF lines, one of them the header, and no field
# spans lines (Python's csv module agrees).
SPLITS = {"train": ("train_sent_emo.csv", 9989), "dev": ("dev_sent_emo.csv", 1109)}
MOJIBAKE = re.compile("[\u0080-\u009f]|â\u0080|â€|Ã[\u0080-\u00bf]")
HEADER = ",".join(f'"{c}"' if " " in c else c for c in COLUMNS)


def split_path(name: str) -> Path:
    path = MELD_DIR / SPLITS[name][0]
    if not path.exists():
        pytest.skip(f"MELD {name} CSV not found at {path} (shared/ must sit beside the repo)")
    return path


def test_columns():
    assert COLUMNS == ("Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
                       "Utterance_ID", "Season", "Episode", "StartTime", "EndTime")


@pytest.mark.parametrize("text, seconds, canonical", [
    ("0:00:16,403", 16.403, "0:00:16,403"),
    ("00:16:16,059", 976.059, "0:16:16,059"),      # two-digit hours, as in most MELD fields
    ("0:12:32,632", 752.632, "0:12:32,632"),       # one-digit hours
    ("10:00:00,000", 36000.0, "10:00:00,000"),
    ("00:06:47,28", 407.28, "0:06:47,280"),        # train Sr No. 4268: 2-digit ms = 280 ms
    ("0:00:03,12", 3.12, "0:00:03,120"),
    ("0:00:03,5", 3.5, "0:00:03,500"),
    (" 0:00:01.250 ", 1.25, "0:00:01,250"),
])
def test_parse_and_format_time(text, seconds, canonical):
    assert parse_time(text) == pytest.approx(seconds, abs=1e-9)
    assert format_time(parse_time(text)) == canonical
    assert parse_time(canonical) == pytest.approx(seconds, abs=1e-9)


def test_format_time_rounds_to_ms():
    assert format_time(0) == "0:00:00,000"
    assert format_time(16.4034) == "0:00:16,403"
    assert format_time(59.9996) == "0:01:00,000"
    assert format_time(3599.9999) == "1:00:00,000"
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            format_time(bad)


@pytest.mark.parametrize("bad", ["12:xx", "", "0:00:16", "0:60:00,000", "0:00:61,000",
                                 "0:00:16,4031", "a:00:16,403", "0:0:16,403", "-0:00:01,000"])
def test_parse_time_rejects_garbage(bad):
    with pytest.raises(ValueError, match="bad time"):
        parse_time(bad)


def test_repair_text_fixes_mojibake():
    assert repair_text("donâ\x80\x99t") == "don’t"            # UTF-8 read as latin-1
    assert repair_text("donâ€™t") == "don’t"                  # UTF-8 read as cp1252
    assert repair_text("cafÃ©") == "café"
    assert repair_text("â€œHi!â€\x9d") == "“Hi!”"             # 0x9D is undefined in cp1252
    assert repair_text("don\x92t\x85 \x97 yes") == "don’t… — yes"   # C1 controls as cp1252
    assert repair_text("ðŸ˜€ ok") == "😀 ok"
    assert repair_text("donÃ¢â‚¬â„¢t") == "don’t"             # mangled twice
    assert repair_text("bad\x81byte") == "badbyte"              # C1 with no cp1252 meaning


@pytest.mark.parametrize("good", ["don’t… — “quoted” ‘x’ – fine", "café, señor, naïve, Ó",
                                  "JOSÉ’S CAFÉ", "Ü’", "€5 © 2020 ™", "😀 emoji", "plain ASCII",
                                  "a\u00a0b", "Ärger über Öl", "日本語", ""])
def test_repair_text_leaves_correct_text_alone(good):
    assert repair_text(good) == good


def test_repair_text_restores_real_data_read_as_latin1():
    """Decoding the real CSV as latin-1 mangles every non-ASCII row; repair must undo all."""
    path = split_path("dev")
    wrong = list(csv.reader(path.open(encoding="latin-1", newline="")))
    right = list(csv.reader(path.open(encoding="utf-8", newline="")))
    mangled = [(w, r) for w, r in zip(wrong, right) if w != r]
    assert len(mangled) == 308                    # rows with non-ASCII text (data README)
    for w, r in mangled:
        assert [repair_text(cell) for cell in w] == r


@pytest.mark.parametrize("split", ["train", "dev"])
def test_read_real_split(split):
    table = read_meld_csv(split_path(split))
    assert len(table.rows) == SPLITS[split][1]
    assert table.problems == []
    assert table.repaired == 0                    # the current MELD CSVs are clean UTF-8
    keys = [r.key for r in table.rows]
    assert len(set(keys)) == len(keys)
    for r in table.rows:
        assert r.emotion in EMOTIONS and r.sentiment in SENTIMENTS
        assert not MOJIBAKE.search(r.utterance), r
        assert not MOJIBAKE.search(r.speaker), r
        assert r.start is not None and r.end is not None and r.end >= r.start
    counts = label_counts(table.rows)
    assert sum(counts["emotion"].values()) == sum(counts["sentiment"].values()) == len(table.rows)
    if split == "train":
        assert counts["emotion"] == {"anger": 1109, "disgust": 271, "fear": 268, "joy": 1743,
                                     "neutral": 4710, "sadness": 683, "surprise": 1205}
        assert counts["sentiment"] == {"negative": 2945, "neutral": 4710, "positive": 2334}
        short = [r for r in table.rows if r.sr_no == 4268]
        assert len(short) == 1 and short[0].end == pytest.approx(407.28)
        assert short[0].key == (437, 2)
    else:
        assert counts["emotion"]["neutral"] == 470 and counts["sentiment"]["negative"] == 406


def test_read_old_style_c1_mojibake(tmp_path):
    """Older MELD revisions used C1 controls for cp1252 punctuation; they are repaired."""
    text = (HEADER + "\r\n1,I don\x92t know\x85,Richard\x92s Date,Neutral,NEUTRAL,3,0,1,2,"
            '"0:00:01,000","0:00:02,000"\r\n2,Plain,Joey,joy,positive,3,1,1,2,'
            '"0:00:02,000","0:00:03,000"\r\n')
    path = tmp_path / "old.csv"
    path.write_bytes(text.encode("utf-8"))
    table = read_meld_csv(path)
    assert table.problems == []
    assert table.repaired == 1
    assert table.rows[0].utterance == "I don’t know…"
    assert table.rows[0].speaker == "Richard’s Date"
    assert (table.rows[0].emotion, table.rows[0].sentiment) == ("neutral", "neutral")


def tricky_rows() -> list[MeldRow]:
    texts = ['He said "hi", then left.', "a, b, c", "line one\nline two", "crlf\r\ninside",
             "party 🎉😀", "café déjà vu", "=cmd|' /C calc'!A0", "+1 for that", "-leg?",
             "@home", "\tindented", "'=already quoted", "'plain apostrophe", "   ", "don’t…"]
    return [MeldRow(utterance=t, speaker=["Joey", "Dr. Ramoray", "=HYPERLINK()"][i % 3],
                    emotion=EMOTIONS[i % 7], sentiment=SENTIMENTS[i % 3], dialogue_id=i // 4,
                    utterance_id=i % 4, season=1 + i % 10, episode=i, start=i * 1.5 + 0.0126,
                    end=i * 1.5 + 1.2344, sr_no=i + 1)
            for i, t in enumerate(texts)]


def test_write_read_round_trip(tmp_path):
    rows = tricky_rows()
    path = tmp_path / "out.csv"
    write_meld_csv(rows, path)
    raw = path.read_bytes()
    assert raw.startswith(b"Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,"
                          b"Season,Episode,StartTime,EndTime\r\n")
    raw.decode("utf-8")                           # valid UTF-8, no BOM
    assert not raw.startswith(b"\xef\xbb\xbf")
    cells = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert all(len(r) == len(COLUMNS) for r in cells)
    by_text = {r[1]: r for r in cells[1:]}
    assert "'=cmd|' /C calc'!A0" in by_text       # formula neutralised with a leading '
    assert by_text["'=cmd|' /C calc'!A0"][2] == "Joey"
    assert {"'+1 for that", "'-leg?", "'@home", "'\tindented", "''=already quoted",
            "'plain apostrophe"} <= set(by_text)
    assert all(not r[1].startswith(("=", "+", "-", "@")) for r in cells[1:])
    assert cells[1][0] == "1" and cells[1][5:9] == ["0", "0", "1", "0"]   # plain integers
    assert cells[1][9:] == ["0:00:00,013", "0:00:01,234"]

    table = read_meld_csv(path)
    assert table.problems == [RowProblemLike(15, "Utterance", "empty utterance")]
    assert table.repaired == 0
    assert len(table.rows) == len(rows)
    for got, want in zip(table.rows, rows):
        assert got.utterance == want.utterance and got.speaker == want.speaker
        assert (got.emotion, got.sentiment) == (want.emotion, want.sentiment)
        assert (got.dialogue_id, got.utterance_id, got.season, got.episode, got.sr_no) == \
            (want.dialogue_id, want.utterance_id, want.season, want.episode, want.sr_no)
        assert format_time(got.start) == format_time(want.start)
        assert format_time(got.end) == format_time(want.end)
        assert got.start == pytest.approx(want.start, abs=5e-4)

    # a second round trip is byte-identical
    again = tmp_path / "again.csv"
    write_meld_csv(table.rows, again)
    assert again.read_bytes() == raw


class RowProblemLike:
    """Compares equal to a RowProblem with this row and column whose message contains text."""

    def __init__(self, row: int, column: str, text: str = ""):
        self.row, self.column, self.text = row, column, text

    def __eq__(self, other) -> bool:
        return (other.row, other.column) == (self.row, self.column) and self.text in other.message

    def __repr__(self) -> str:
        return f"RowProblemLike({self.row}, {self.column!r}, {self.text!r})"


def test_write_to_buffers_and_none_fields():
    rows = [MeldRow("Hi", "", "", "", 7, 3)]
    text_buf, byte_buf = io.StringIO(), io.BytesIO()
    write_meld_csv(rows, text_buf)
    write_meld_csv(rows, byte_buf, excel_bom=True)
    assert text_buf.getvalue().splitlines()[1] == "1,Hi,,,,7,3,,,,"
    assert byte_buf.getvalue() == b"\xef\xbb\xbf" + text_buf.getvalue().encode("utf-8")
    table = read_meld_csv(io.BytesIO(byte_buf.getvalue()), require_labels=False)
    assert table.rows == [MeldRow("Hi", "", "", "", 7, 3, sr_no=1)]
    problems = {(p.column, p.message) for p in table.problems}
    assert problems == {("StartTime", "missing value"), ("EndTime", "missing value")}


MALFORMED = (
    "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,"
    "StartTime\r\n"                                                              # row 1
    '1,Fine row.,Ross,neutral,neutral,0,0,1,1,"0:00:01,000"\r\n'                  # row 2
    '2,Happy label.,Ross,happy,positive,0,1,1,1,"0:00:02,000"\r\n'                # row 3
    "3,Bad time.,Rachel,JOY,Positive,0,2,1,1,12:xx\r\n"                           # row 4
    '4,"Same key, again.",Monica,anger,negative,0,1,1,1,"0:00:04,000"\r\n'        # row 5
    '5,Bad id.,Joey,sadness,negative,zero,3,1,1,"0:00:05,000"\r\n'                # row 6
    "\r\n"                                                                        # row 7: blank
    '6,Too many.,Joey,fear,negative,0,4,1,1,"0:00:06,000",extra\r\n'              # row 8
    '7,Ok again.,Chandler,disgust,negative,1,0,,,"0:00:07,000"\r\n'               # row 9
)


def test_malformed_csv_lists_each_problem_and_keeps_rows(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(MALFORMED, encoding="utf-8", newline="")
    table = read_meld_csv(path)
    assert table.problems == [
        RowProblemLike(1, "EndTime", "missing column"),
        RowProblemLike(3, "Emotion", "unknown emotion 'happy'"),
        RowProblemLike(4, "StartTime", "bad time '12:xx'"),
        RowProblemLike(5, "Utterance_ID", "duplicate key"),
        RowProblemLike(6, "Dialogue_ID", "not a non-negative integer: 'zero'"),
        RowProblemLike(8, "", "11 fields, expected 10"),
    ]
    assert "first at row 3" in table.problems[3].message
    assert [r.utterance for r in table.rows] == ["Fine row.", "Happy label.", "Bad time.",
                                                 "Same key, again.", "Bad id.", "Too many.",
                                                 "Ok again."]
    fine, happy, bad_time, dup, bad_id, too_many, ok = table.rows
    assert (happy.emotion, happy.sentiment) == ("", "positive")
    assert (bad_time.emotion, bad_time.sentiment, bad_time.start) == ("joy", "positive", None)
    assert dup.key == (0, 1) and dup.emotion == "anger"
    assert bad_id.dialogue_id is None and bad_id.utterance_id == 3
    assert too_many.start == 6.0 and too_many.end is None
    assert (ok.season, ok.episode, ok.start) == (None, None, 7.0)
    assert all(r.end is None for r in table.rows)
    assert str(table.problems[1]) == ("row 3, Emotion: unknown emotion 'happy'; expected one of "
                                      + ", ".join(EMOTIONS))


def test_labels_optional_and_missing():
    text = ("Utterance,Dialogue_ID,Utterance_ID\r\nHello,0,0\r\n")
    table = read_meld_csv(io.StringIO(text), require_labels=False)
    assert [p.column for p in table.problems] == ["Sr No.", "Speaker", "Season", "Episode",
                                                  "StartTime", "EndTime"]
    assert table.rows == [MeldRow("Hello", "", "", "", 0, 0)]
    strict = read_meld_csv(io.StringIO(text))
    assert {"Emotion", "Sentiment"} <= {p.column for p in strict.problems}
    empty_label = HEADER + '\r\n1,Hi,A,,neutral,0,0,1,1,"0:00:01,000","0:00:02,000"\r\n'
    assert [(p.row, p.column) for p in read_meld_csv(io.StringIO(empty_label)).problems] == \
        [(2, "Emotion")]
    assert read_meld_csv(io.StringIO(empty_label), require_labels=False).problems == []


def test_end_before_start_is_a_problem():
    text = HEADER + '\r\n1,Hi,A,joy,positive,0,0,1,1,"0:00:05,000","0:00:04,000"\r\n'
    table = read_meld_csv(io.StringIO(text))
    assert table.problems == [RowProblemLike(2, "EndTime", "before StartTime")]
    assert (table.rows[0].start, table.rows[0].end) == (5.0, 4.0)


def test_cp1252_file(tmp_path):
    text = (HEADER + '\r\n1,"I don’t know… café — “yes”",Phoebe,surprise,negative,2,0,1,1,'
            '"0:00:01,000","0:00:02,500"\r\n')
    path = tmp_path / "cp1252.csv"
    path.write_bytes(text.encode("cp1252"))
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")
    table = read_meld_csv(path)
    assert table.problems == []
    assert table.rows[0].utterance == "I don’t know… café — “yes”"
    assert table.repaired == 0


def test_utf8_bom_file(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + '\r\n1,Voilà,A,joy,positive,0,0,1,1,'
                                        '"0:00:01,000","0:00:02,000"\r\n').encode("utf-8"))
    table = read_meld_csv(path)
    assert table.problems == [] and table.rows[0].utterance == "Voilà"


@pytest.mark.parametrize("data", [
    bytes(range(256)) * 4,                                  # binary with NULs
    b"\x89PNG\r\n\x1a\n" + bytes([0x80, 0xFF, 0x10]) * 50,  # binary-looking, no NUL
    b"just some words\r\nand more words\r\n",
    b"",
])
def test_not_a_csv_raises_one_line_error(tmp_path, data):
    path = tmp_path / "file.csv"
    path.write_bytes(data)
    with pytest.raises(MeldFormatError) as info:
        read_meld_csv(path)
    message = str(info.value)
    assert message and "\n" not in message and "\r" not in message
    assert len(message) < 200


def test_missing_essential_columns_message():
    with pytest.raises(MeldFormatError, match="missing column.*Dialogue_ID, Utterance_ID"):
        read_meld_csv(io.StringIO("Utterance,Speaker\r\nHi,Joey\r\n"))


def test_header_names_are_matched_leniently():
    text = "utterance,dialogue id,UTTERANCE_ID,emotion,sentiment\r\nHi,4,2,Joy,positive\r\n"
    table = read_meld_csv(io.StringIO(text))
    assert table.rows[0].key == (4, 2) and table.rows[0].emotion == "joy"


def test_clip_names():
    assert clip_name(125, 3) == "dia125_utt3.mp4"
    assert parse_clip_name("dia125_utt3.mp4") == (125, 3)
    assert parse_clip_name(Path("/data/train_splits/dia0_utt10.mp4")) == (0, 10)
    for d, u in [(0, 0), (1038, 23)]:
        assert parse_clip_name(clip_name(d, u)) == (d, u)
    for bad in ["dia1_utt.mp4", "dia1_utt2.wav", "final_videos_testdia101_utt0.mp4", "x",
                "dia-1_utt2.mp4", "dia1_utt2.mp4.bak"]:
        with pytest.raises(ValueError):
            parse_clip_name(bad)
    with pytest.raises(ValueError):
        clip_name(-1, 0)


def test_label_counts_ignores_empty_labels():
    rows = [MeldRow("a", "", "joy", "positive", 0, 0), MeldRow("b", "", "", "", 0, 1),
            MeldRow("c", "", "joy", "neutral", 0, 2)]
    counts = label_counts(rows)
    assert list(counts["emotion"]) == list(EMOTIONS)
    assert counts["emotion"]["joy"] == 2 and sum(counts["emotion"].values()) == 2
    assert counts["sentiment"] == {"negative": 0, "neutral": 1, "positive": 1}


def test_unclosed_quote_is_reported_not_dropped():
    text = "Utterance,Dialogue_ID,Utterance_ID\r\nok,0,0\r\n\"unclosed,0,1\r\nnext,0,2\r\n"
    table = read_meld_csv(io.StringIO(text), require_labels=False)
    assert [r.utterance for r in table.rows][0] == "ok" and len(table.rows) == 2
    assert RowProblemLike(3, "", "unclosed quote") in table.problems


def test_utf16_and_mixed_encoding_files():
    text = "Utterance,Dialogue_ID,Utterance_ID,Emotion,Sentiment\r\nVoilà’s,0,0,joy,positive\r\n"
    table = read_meld_csv(io.BytesIO(text.encode("utf-16")))
    assert table.rows[0].utterance == "Voilà’s"
    assert all(p.row == 1 for p in table.problems)       # only the absent optional columns
    # UTF-8 with one stray cp1252 byte: read as cp1252, the UTF-8 part is then repaired.
    mixed = text.encode("utf-8") + b"caf\xe9,0,1,joy,positive\r\n"
    table = read_meld_csv(io.BytesIO(mixed))
    assert [r.utterance for r in table.rows] == ["Voilà’s", "café"]
    assert table.repaired == 1 and all(p.row == 1 for p in table.problems)
