"""Issue 13 attacks on the public core functions the app, the CLI and training call.

Playlists and file lists that open other files, headers that lie about the duration, frames the
probe cannot size, uploads named .html, formula cells in every CSV the project writes, absurd ids
in a MELD CSV, cards with absurd shapes, colliding batch outputs, a full disk, zip bombs.
Every refusal must be one line, fit to show a user.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core import media
from core.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, load_checkpoint
from core.limits import LimitError, Limits
from core.meld import MeldRow, read_meld_csv, write_meld_csv
from core.model import EmotionModel, ModelConfig
from tests import attack_media as attack

ROOT = Path(__file__).resolve().parent.parent
# what core.csvsafe must neutralise (spelled out here, so the test does not trust the module)
FORMULA_CHARS = "=+-@\t\r\n\uff1d\uff0b\uff0d\uff20"
HEAD = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\r\n"


def row(sr: int, text: str, dialogue: object = 0, utterance: object = 0) -> str:
    return f"{sr},{text},Ann,joy,positive,{dialogue},{utterance},1,1,0:00:01.000,0:00:02.000\r\n"


def _size(folder: Path) -> int:
    """Bytes in the files under `folder` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)
    return text


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    secret = attack.tone(d / "other_session_source.ts", 2.0, "mp2")
    return {"secret": secret,
            "m3u8": attack.playlist(d / "list.m3u8", secret),
            "m3u8 named mp4": attack.playlist(d / "talk.mp4", secret),
            "ffconcat": attack.ffconcat(d / "list.ffconcat", secret),
            "ffconcat named wav": attack.ffconcat(d / "voice.wav", secret),
            "mkv": attack.mkv_claiming(d / "claims5.mkv", 30.0, 5.0),
            "mp3": attack.mp3_claiming(d / "claims5.mp3", 30.0, 5.0),
            "silent video": attack.mkv_claiming(d / "claims5_video.mkv", 30.0, 5.0, video=True),
            "honest": attack.tone(d / "honest.wav", 8.0)}


# ---------------------------------------------------------------- item 3: playlists and lists

PLAYLISTS = ["m3u8", "m3u8 named mp4", "ffconcat", "ffconcat named wav"]


@pytest.mark.parametrize("name", PLAYLISTS)
def test_playlists_are_refused_by_every_reader(name, hostile, tmp_path):
    path = hostile[name]
    calls = {"probe": lambda: media.probe(path),
             "load_audio": lambda: media.load_audio(path),
             "audio_seconds": lambda: media.audio_seconds(path),
             "read_frames": lambda: media.read_frames(path, [0.5]),
             "cut_clip": lambda: media.cut_clip(path, 0, 1, tmp_path / "clip.mp4"),
             "remux_to_temp": lambda: media.remux_to_temp(path),
             "Limits.check_media": lambda: Limits().check_media(path)}
    for what, call in calls.items():
        with pytest.raises(media.MediaError) as err:
            call()
        line = one_line(err.value)
        # named .mp4, ffmpeg picks its MP4 reader by the name, which finds no MP4: refused all the same
        expected = "not a readable" if name == "m3u8 named mp4" else "playlist or file list"
        assert expected in line, (what, line)
    assert not (tmp_path / "clip.mp4").exists()


def test_the_app_never_stages_a_playlist(hostile, tmp_path):
    from webapp.media_prep import stage
    with pytest.raises(media.MediaError, match="playlist"):
        stage(hostile["m3u8"], tmp_path / "media")
    assert _size(tmp_path / "media") == 0


def test_a_file_name_is_never_read_as_a_protocol(tmp_path):
    """`concat:a|b` or `subfile,...:x` as a *name* stays a local file name."""
    inner = attack.tone(tmp_path / "inner.wav", 1.0)
    odd = tmp_path / "concat:inner.wav|inner.wav"
    odd.write_bytes(inner.read_bytes())
    info = media.probe(odd)                       # the file itself, 1 s, not two concatenated
    assert info.container == "wav" and abs(info.duration - 1.0) < 0.05
    assert abs(len(media.load_audio(odd)) / media.SAMPLE_RATE - 1.0) < 0.05


def test_plain_media_still_pass(hostile):
    info = Limits(max_seconds=10).check_media(hostile["honest"])
    assert info.container == "wav" and abs(info.duration - 8.0) < 0.05
    assert Limits(max_seconds=8).check_media(hostile["honest"])      # right at the limit: fine


# ---------------------------------------------------------------- item 5: the duration limit

@pytest.mark.parametrize("name", ["mkv", "mp3", "silent video"])
def test_a_header_that_lies_about_the_duration_is_caught_on_what_the_file_holds(name, hostile):
    path = hostile[name]
    assert media.probe(path).duration < 6                        # the lie: ~5 s
    with pytest.raises(LimitError) as err:
        Limits(max_seconds=10).check_media(path)
    line = one_line(err.value)
    assert "longer than 0:00:10 once decoded" in line and "--max-seconds" in line, line
    assert Limits(max_seconds=40).check_media(path)               # within a higher limit


def test_decoding_stops_at_the_limit(hostile):
    path = hostile["mkv"]
    assert abs(media.audio_seconds(path) - 30.0) < 0.1            # what it really holds
    with pytest.raises(LimitError, match="longer than 0:00:10"):
        media.load_audio(path, max_seconds=10)
    assert len(media.load_audio(path, max_seconds=31)) == pytest.approx(30 * 16000, abs=400)


def test_a_frame_too_wide_for_the_old_probe_is_refused(tmp_path):
    path = attack.wide_frame(tmp_path / "wide.mkv")
    info = media.probe(path)
    assert (info.width, info.height) == (200_000, 200)            # read, not 0x0
    with pytest.raises(LimitError) as err:
        Limits().check_media(path)
    assert "200000x200" in one_line(err.value)


def test_a_frame_of_unknown_size_is_refused(tmp_path):
    path = attack.unknown_size(tmp_path / "nosize.avi")
    info = media.probe(path)
    assert info.has_video and (info.width, info.height) == (0, 0)
    with pytest.raises(LimitError) as err:
        Limits().check_media(path)
    assert "frame size could not be read" in one_line(err.value)


# ---------------------------------------------------------------- item 2: staged names

def test_an_upload_named_html_is_staged_under_the_extension_ffmpeg_found(tmp_path):
    from webapp.media_prep import stage
    staged = stage(attack.wav_named_html(tmp_path / "x.html"), tmp_path / "media")
    names = sorted(p.name for p in (tmp_path / "media").iterdir())
    assert staged.source.name == "source_x.wav" and staged.playable.suffix == ".mp4", names
    assert not [n for n in names if n.lower().endswith((".html", ".htm", ".svg", ".js"))], names


@pytest.mark.parametrize("upload, expected", [("clip.txt", "source_clip.mkv"), ("a.b.html", "source_a_b.mkv")])
def test_the_user_extension_never_survives(upload, expected, tmp_path):
    from webapp.media_prep import stage
    src = attack.tone(tmp_path / "tone.mkv", 1.0, "flac")
    (tmp_path / upload).write_bytes(src.read_bytes())
    assert stage(tmp_path / upload, tmp_path / "media").source.name == expected


# ---------------------------------------------------------------- item 9: one formula-safe writer

def _dangerous(cell: str) -> bool:
    """Would a spreadsheet run this cell? (its first character after spaces starts a formula)"""
    first = cell.lstrip(" \u00a0\u3000")[:1]
    return bool(first) and first in FORMULA_CHARS


@pytest.mark.parametrize("text", attack.FORMULAS + attack.HARMLESS)
def test_csv_cells_are_neutralised_and_read_back_unchanged(text):
    from core import csvsafe
    out = io.StringIO()
    csvsafe.write_csv(out, ["text", "n"], [[text, 3]])
    cells = list(csv.reader(io.StringIO(out.getvalue(), newline="")))[1]
    assert not _dangerous(cells[0]), repr(cells[0])               # what a spreadsheet sees
    assert cells[1] == "3"                                        # numbers are left alone
    assert csvsafe.unescape_cell(cells[0]) == text                # lossless


def test_the_meld_export_round_trip_is_lossless_for_every_formula():
    rows = [MeldRow(t or "x", t, "joy", "positive", 3, i) for i, t in enumerate(attack.FORMULAS)]
    buffer = io.BytesIO()
    write_meld_csv(rows, buffer)
    raw = list(csv.reader(io.StringIO(buffer.getvalue().decode(), newline="")))
    for record in raw[1:]:
        assert not _dangerous(record[1]) and not _dangerous(record[2]), record
    back = read_meld_csv(io.BytesIO(buffer.getvalue()))
    assert [(r.utterance, r.speaker) for r in back.rows] == [(r.utterance, r.speaker) for r in rows]


def test_no_module_writes_csv_around_the_safe_writer():
    """Every CSV the project writes goes through core.csvsafe: no csv.writer or to_csv elsewhere."""
    offenders = []
    sources = list(ROOT.glob("*.py")) + [p for folder in ("core", "webapp", "train", "scripts", "tools")
                                         for p in (ROOT / folder).rglob("*.py")]
    assert len(sources) > 20
    for path in sources:
        text = path.read_text(encoding="utf-8")
        if path.name != "csvsafe.py" and any(w in text for w in ("csv.writer(", ".to_csv(", "csv.DictWriter(")):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


# ---------------------------------------------------------------- item 6 and 10: MELD rows

@pytest.mark.parametrize("bad", ["9223372036854775807", str(10**30), "1000000001", "-1", "1e9"])
def test_absurd_ids_are_a_row_problem_and_the_other_rows_stay(bad):
    text = HEAD + row(1, "good one", 0, 0) + row(2, "bad dialogue", bad, 1) + row(3, "bad utterance", 0, bad) \
        + row(4, "good two", 10**9, 2)
    table = read_meld_csv(io.BytesIO(text.encode()))
    assert [r.utterance for r in table.rows] == ["good one", "bad dialogue", "bad utterance", "good two"]
    assert table.rows[1].dialogue_id is None and table.rows[2].utterance_id is None
    assert table.rows[3].key == (10**9, 2)
    problems = {(p.row, p.column) for p in table.problems}
    assert problems == {(3, "Dialogue_ID"), (4, "Utterance_ID")}, table.problems


def test_a_128_kb_cell_rejects_only_its_row():
    text = HEAD + row(1, "before", 0, 0) + row(2, "x" * 131_072, 0, 1) + row(3, "after", 0, 2)
    table = read_meld_csv(io.BytesIO(text.encode()))
    assert [r.utterance for r in table.rows] == ["before", "after"]
    assert [(p.row, "131072 characters" in p.message) for p in table.problems] == [(3, True)]


def test_an_unclosed_quote_does_not_swallow_the_next_rows():
    text = HEAD + row(1, "before", 0, 0) + row(2, '"never closed', 0, 1) + row(3, "next", 0, 2) \
        + row(4, "last", 0, 3)
    table = read_meld_csv(io.BytesIO(text.encode()))
    assert [r.utterance for r in table.rows] == ["before", "next", "last"]
    assert len(table.problems) == 1 and table.problems[0].row == 3
    assert "unclosed quote" in table.problems[0].message


def test_a_quoted_cell_over_several_lines_is_still_one_row():
    text = HEAD + row(1, '"two\r\nlines"', 0, 0) + row(2, "next", 0, 1)
    table = read_meld_csv(io.BytesIO(text.encode()))
    assert [r.utterance for r in table.rows] == ["two\r\nlines", "next"] and table.ok


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_detected(codec):
    text = HEAD + row(1, "Café \u2019ok\u2019", 0, 0) + row(2, "two", 0, 1)
    table = read_meld_csv(io.BytesIO(text.encode(codec)))
    assert [r.utterance for r in table.rows] == ["Café \u2019ok\u2019", "two"] and table.ok


# ---------------------------------------------------------------- item 8: absurd card shapes

def test_the_parameter_count_is_the_model_s():
    from core.checkpoint import parameter_count
    for config in (ModelConfig(), ModelConfig(text_dim=768, hidden=64, fusion=32),
                   ModelConfig(modalities=("text",))):
        assert parameter_count(config) == sum(p.numel() for p in EmotionModel(config).parameters())


RSS_PROBE = """
import resource, sys
from core.checkpoint import CheckpointError, load_checkpoint
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_checkpoint(sys.argv[1])
    print("LOADED")
except CheckpointError as err:
    print("REFUSED", err)
print("GROWTH_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_card_with_absurd_shapes_is_refused_before_any_tensor(tmp_path):
    if not (DEFAULT_CHECKPOINT / "card.json").is_file():
        pytest.skip("no shipped checkpoint to copy the weights from")
    bad = attack.bad_card(tmp_path / "bad", DEFAULT_CHECKPOINT)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    line = one_line(err.value)
    assert "parameters" in line and "20,000,000" in line, line
    # in a fresh process: the refusal costs (almost) no memory; building the model took ~600 MB
    proc = subprocess.run([sys.executable, "-c", RSS_PROBE, str(bad)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    out = dict(ln.split(" ", 1) for ln in proc.stdout.splitlines() if " " in ln)
    assert "REFUSED" in out and "parameters" in out["REFUSED"], proc.stdout + proc.stderr
    assert int(out["GROWTH_KB"]) < 60 * 1024, out


# ---------------------------------------------------------------- item 10: batch outputs, full disk

def _analysis(source: str, text: str):
    from core.types import Analysis, MediaInfo, Utterance, UtterancePrediction
    pred = UtterancePrediction(0, Utterance(0.0, 1.0, text), [1 / 7] * 7, [0.2, 0.5, 0.3])
    return Analysis(source, MediaInfo(source, 1.0, False, True), [pred])


def test_batch_outputs_of_same_named_files_do_not_collide(tmp_path):
    from core.batch import write_outputs
    from core.batch import output_names
    files = [Path("v/talk.mp4"), Path("v/talk.wav"), Path("v/Talk.MOV"), Path("v/other.mp4")]
    names = output_names(files)
    assert names == {files[0]: "talk.mp4", files[1]: "talk.wav", files[2]: "Talk.MOV", files[3]: "other"}
    for f in files:
        write_outputs(_analysis(str(f), f"said in {f.name}"), tmp_path / names[f])
    for f in files:
        assert json.loads((tmp_path / f"{names[f]}.json").read_text())["source"] == str(f)
        assert f"said in {f.name}" in (tmp_path / f"{names[f]}.csv").read_text()


def test_a_full_disk_fails_the_write_in_one_line_without_the_path(tmp_path):
    from core.batch import write_outputs
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is needed to simulate a full disk")
    out = tmp_path / "secret-folder"
    out.mkdir()
    (out / "talk.json").symlink_to("/dev/full")                   # every write there: ENOSPC
    with pytest.raises(OSError) as err:
        write_outputs(_analysis("talk.wav", "hello"), out / "talk")
    from core.writes import os_error_line
    line = os_error_line(err.value)
    assert line == "Could not write talk.json: the disk is full.", line
    assert str(tmp_path) not in line


# ---------------------------------------------------------------- item 10: zip extraction

def test_a_zip_bomb_is_refused_before_anything_is_unpacked(tmp_path):
    from train.clips import ClipDataError, unpack_export
    bomb = attack.zip_bomb(tmp_path / "bomb.zip")
    assert bomb.stat().st_size < 400_000
    into = tmp_path / "into"
    with pytest.raises(ClipDataError) as err:
        unpack_export(bomb, into)
    assert "zip bomb" in one_line(err.value)
    assert _size(into) == 0


def test_members_adding_up_past_the_size_limit_are_refused(tmp_path):
    from train.clips import ClipDataError, unpack_export
    path = tmp_path / "big.zip"
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("e/e.csv", "Utterance,Dialogue_ID,Utterance_ID\nhi,0,0\n")
        for i in range(4):
            z.writestr(f"e/clips/dia0_utt{i}.mp4", rng.bytes(2**20))
    with pytest.raises(ClipDataError) as err:
        unpack_export(path, tmp_path / "into", max_bytes=2 * 2**20)
    assert "unpacks to 4 MB; the limit is 2 MB" in one_line(err.value)
    assert _size(tmp_path / "into") == 0


@pytest.mark.parametrize("name", ["../../evil/clips/dia0_utt0.mp4", "/abs/clips/dia0_utt0.mp4",
                                  "e/../../clips/dia0_utt1.mp4"])
def test_a_zip_member_outside_the_folder_is_refused(name, tmp_path):
    from train.clips import ClipDataError, unpack_export
    path = tmp_path / "escape.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("e/e.csv", "Utterance,Dialogue_ID,Utterance_ID\nhi,0,0\n")
        z.writestr(name, b"not a clip")
    with pytest.raises(ClipDataError) as err:
        unpack_export(path, tmp_path / "into")
    assert "outside its folder" in one_line(err.value)
    assert not (tmp_path / "evil").exists()
