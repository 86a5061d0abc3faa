"""Hardening, part 1: a corpus of malformed inputs (media, MELD CSVs, checkpoints, Whisper files,
cache entries) and the limits.

Each input is generated here (nothing is committed). Every one must give a clear one-line message
(or, where the input is odd but usable, a plain result), and a session saved before must stay
exactly as it was. The library and the workbench service are called directly (fast); the server
side of the same inputs, and API payloads, are in test_hardening_server.py.
"""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.checkpoint import (CARD_FILE, MODEL_FILE, TEXT_FILE, CheckpointError, load_checkpoint,
                             save_checkpoint, untrained)
from core.limits import LimitError, Limits
from core.media import MediaError
from core.model import ModelConfig
from tests import mediagen
from core.types import UserError
from webapp.service import ModelHolder, Workbench

SR = 16000


def one_line(message: str) -> str:
    assert message and "\n" not in message and "Traceback" not in message, message
    assert len(message) <= 300, message
    return message


# ====================================================================== the media corpus

def _wav(path: Path, samples: np.ndarray | None = None, *, fmt: int = 1, rate: int = SR,
         channels: int = 1, bits: int = 16, claimed_bytes: int | None = None) -> Path:
    """A WAV written byte by byte, so its header can say what it likes."""
    data = b"" if samples is None else samples.tobytes()
    size = len(data) if claimed_bytes is None else claimed_bytes
    block = channels * bits // 8
    header = (b"RIFF" + struct.pack("<I", (36 + size) & 0xFFFFFFFF) + b"WAVE" + b"fmt " +
              struct.pack("<IHHIIHH", 16, fmt, channels, rate, rate * block, block, bits) +
              b"data" + struct.pack("<I", size & 0xFFFFFFFF))
    path.write_bytes(header + data)
    return path


def _short_video(d: Path) -> Path:
    out = d / "short.mp4"
    if not out.is_file():
        mediagen.testsrc_video(out, seconds=2, silent=True, size="160x120")
    return out


def _png(path: Path) -> Path:
    from PIL import Image
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path, format="PNG")
    return path


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.txt", "not a video " * 100)
    return path


def _three_hours(path: Path) -> Path:
    # lavfi sources are endless: -t is an output option, after every input
    mediagen.ffmpeg("-f", "lavfi", "-i", "color=c=black:s=16x16:r=1", "-t", "10800",
                    "-c:v", "libx264", "-preset", "ultrafast", str(path))
    return path


def _huge_frame(path: Path) -> Path:
    mediagen.ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=8000x8000:r=1", "-frames:v", "1",
                    "-c:v", "mjpeg", str(path))
    return path


def _subtitles_only(path: Path) -> Path:
    srt = path.with_suffix(".srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    mediagen.ffmpeg("-i", str(srt), "-c:s", "srt", str(path))
    return path


def _truncated_webm(path: Path) -> Path:
    full = path.with_name("full.webm")
    mediagen.ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", "1",
                    "-c:v", "libvpx-vp9", "-deadline", "realtime", str(full))
    path.write_bytes(full.read_bytes()[:300])
    return path


rng = np.random.default_rng(0)

# name -> (builder(folder) -> path, expected: "error" | "limit" | "ok", words the message must hold)
MEDIA = {
    "empty": (lambda d: mediagen.empty_file(d / "empty.mp4"), "error", "empty"),
    "missing": (lambda d: d / "no_such_file.mp4", "error", "not found"),
    "directory": (lambda d: (d / "folder.mp4").mkdir(exist_ok=True) or d / "folder.mp4", "error", "not found"),
    "text named mp4": (lambda d: mediagen.text_file_named(d / "notes.mp4"), "error", "not a readable"),
    "truncated mp4": (lambda d: mediagen.truncated_copy(_short_video(d), d / "cut.mp4", keep=0.3),
                      "error", "not a readable"),
    "random bytes": (lambda d: (d / "noise.mp4").write_bytes(rng.bytes(20000)) and d / "noise.mp4",
                     "error", "not a readable"),
    "zip named mov": (lambda d: _zip(d / "archive.mov"), "error", "not a readable"),
    "ftyp then garbage": (lambda d: (d / "fake.mp4").write_bytes(b"\0\0\0\x18ftypisom" + rng.bytes(5000))
                          and d / "fake.mp4", "error", "not a readable"),
    "truncated webm": (lambda d: _truncated_webm(d / "cut.webm"), "error", ""),
    "subtitles only": (lambda d: _subtitles_only(d / "subs.mkv"), "error", "no video or audio stream"),
    "wav with 0 channels": (lambda d: _wav(d / "nochan.wav", np.zeros(SR, np.int16), channels=0),
                            "error", "readable"),
    "huge resolution": (lambda d: _huge_frame(d / "huge.mkv"), "limit", "8000x8000"),
    "three hours long": (lambda d: _three_hours(d / "long.mp4"), "limit", "3:00:00"),
    # a header claiming 18 h over 1 s of samples: ffmpeg believes the file, not the header
    "header claims 18 h": (lambda d: _wav(d / "claims.wav", np.zeros(SR, np.int16), claimed_bytes=2**31),
                           "ok", ""),
    "zero-length audio": (lambda d: _wav(d / "zero.wav"), "ok", ""),
    "NaN audio": (lambda d: _wav(d / "nan.wav", np.full(SR, np.nan, np.float32), fmt=3, bits=32), "ok", ""),
    "infinite audio": (lambda d: _wav(d / "inf.wav", np.tile(np.float32([np.inf, -np.inf]), SR // 2),
                                      fmt=3, bits=32), "ok", ""),
    "png named mp4": (lambda d: _png(d / "picture.mp4"), "ok", ""),
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A workbench (models loaded only if a test needs them) with one session already saved."""
    from tests.test_webapp import make_session
    from webapp.session import set_field
    wb = Workbench(ModelHolder(), tmp_path_factory.mktemp("hardening-data"))
    saved = wb.store.create(make_session())
    saved, _ = wb.store.update(saved.id, lambda s: (set_field(s, 0, "emotion", "anger"), ""))
    return wb, saved.id, saved.to_dict()


@pytest.fixture
def untouched(bench):
    """After the test: the saved session is exactly as it was, and no half-made session folder lies about."""
    wb, sid, before = bench
    yield
    assert wb.store.load(sid).to_dict() == before
    folders = {p.name for p in (wb.root / "sessions").iterdir()} if (wb.root / "sessions").is_dir() else set()
    assert folders <= {s["id"] for s in wb.store.list()}


@pytest.fixture(scope="module")
def media_corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-media")
    return d


@pytest.mark.parametrize("name", list(MEDIA))
def test_bad_media(name, bench, media_corpus, untouched, request):
    wb, _, _ = bench
    build, expected, needle = MEDIA[name]
    path = build(media_corpus)
    if expected == "ok":
        if wb.holder._models is None:
            wb.holder = ModelHolder(models=request.getfixturevalue("models"))
        session = wb.analyze(path)
        assert session.rows == [] or all(r.text for r in session.rows)
        assert wb.store.load(session.id).id == session.id
        return
    with pytest.raises(LimitError if expected == "limit" else MediaError) as err:
        wb.analyze(path)
    assert isinstance(err.value, (UserError, OSError))
    assert needle.lower() in one_line(str(err.value)).lower()


# ====================================================================== limits

def test_limits_from_env_and_overrides(monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_UPLOAD_MB", "12.5")
    monkeypatch.setenv("WORKBENCH_MAX_SECONDS", "90")
    limits = Limits.from_env(max_seconds=None)
    assert (limits.max_upload_mb, limits.max_seconds) == (12.5, 90)
    assert limits.gradio_max_file_size() == int(12.5 * 2**20)
    assert Limits.from_env(max_upload_mb=0).gradio_max_file_size() is None      # 0 = no limit
    monkeypatch.setenv("WORKBENCH_MAX_SECONDS", "soon")
    with pytest.raises(ValueError, match="WORKBENCH_MAX_SECONDS"):
        Limits.from_env()


def test_over_the_limits_is_refused_before_any_heavy_work(bench, media_corpus, monkeypatch, untouched):
    wb, _, _ = bench
    video = _short_video(media_corpus)                               # 2 s, a few kB
    calls = []
    monkeypatch.setattr(wb.holder, "get", lambda: calls.append("models") or pytest.fail("models loaded"))
    import webapp.media_prep as media_prep
    monkeypatch.setattr(media_prep, "stage", lambda *a, **k: pytest.fail("file copied"))
    monkeypatch.setattr(wb, "limits", Limits(max_upload_mb=video.stat().st_size / 2**20 / 2))
    with pytest.raises(LimitError, match="MB") as err:
        wb.analyze(video)
    one_line(str(err.value))
    monkeypatch.setattr(wb, "limits", Limits(max_seconds=1.5))
    with pytest.raises(LimitError, match="0:00:02") as err:
        wb.analyze(video)
    assert "WORKBENCH_MAX_SECONDS" in one_line(str(err.value)) and not calls


def test_limits_apply_to_imports(bench, media_corpus, monkeypatch, untouched, tmp_path):
    wb, _, _ = bench
    csv = tmp_path / "rows.csv"
    csv.write_text("Utterance,Dialogue_ID,Utterance_ID,Emotion,Sentiment\n"
                   + "".join(f"hi,1,{i},joy,positive\n" for i in range(30)), encoding="utf-8")
    monkeypatch.setattr(wb, "limits", Limits(max_csv_rows=20))
    with pytest.raises(LimitError, match="30 rows") as err:
        wb.import_csv(csv)
    one_line(str(err.value))
    monkeypatch.setattr(wb, "limits", Limits(max_upload_mb=0.0001))
    with pytest.raises(LimitError, match="CSV file"):
        wb.import_csv(csv)
    monkeypatch.setattr(wb, "limits", Limits(max_seconds=1))
    with pytest.raises(LimitError):
        wb.import_csv(csv, _short_video(media_corpus))


# ====================================================================== the CSV corpus

HEAD = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
GOOD = '1,Hello there,Ann,joy,positive,3,0,1,1,"0:00:01,000","0:00:02,000"\n'

# name -> (file bytes, expected "error" | "ok", words in the error or in the problems)
CSVS = {
    "empty file": (b"", "error", "empty"),
    "header only": (HEAD.encode(), "error", "no utterances"),
    "missing essential columns": (b"Text,Who\nhello,Ann\n", "error", "missing column"),
    "missing label and time columns": (b"Utterance,Dialogue_ID,Utterance_ID\nhi,1,0\n", "ok", "missing column"),
    "unknown labels": ((HEAD + '1,Hi,Ann,ecstatic,great,3,0,1,1,"0:00:01,000","0:00:02,000"\n').encode(),
                       "ok", "ecstatic"),
    "bad times": ((HEAD + '1,Hi,Ann,joy,positive,3,0,1,1,"yesterday","0:99:02,000"\n').encode(), "ok", "time"),
    "end before start": ((HEAD + '1,Hi,Ann,joy,positive,3,0,1,1,"0:00:05,000","0:00:02,000"\n').encode(),
                         "ok", "before StartTime"),
    "negative and huge ids": ((HEAD + '1,Hi,Ann,joy,positive,-3,0,1,1,,\n'
                               '2,Yo,Bob,joy,positive,3,99999999999999999999999,1,1,,\n').encode(),
                              "ok", "Dialogue_ID"),
    "utf-16 with BOM": ((HEAD + GOOD).encode("utf-16"), "ok", ""),
    "utf-16 without BOM": ((HEAD + GOOD).encode("utf-16-le"), "ok", ""),      # detected (issue 13)
    "cp1252": ((HEAD + '1,Caf\xe9 \u2019ok\u2019,Ann,joy,positive,3,0,1,1,,\n').encode("cp1252"), "ok", ""),
    "binary (png)": (b"\x89PNG\r\n\x1a\n" + bytes(200), "error", "binary"),
    "formula cells": ((HEAD + '1,"=HYPERLINK(""http://evil"")",@SUM(A1),joy,positive,3,0,1,1,,\n'
                       '2,+cmd|calc,-2,joy,positive,3,1,1,1,,\n').encode(), "ok", ""),
    # only the row with the enormous cell is left out (issue 13), the next one is kept
    "enormous cell": ((HEAD + '1,"' + "x" * 300_000 + '",Ann,joy,positive,3,0,1,1,,\n' + GOOD).encode(), "ok",
                      "characters"),
    "enormous row of columns": ((HEAD.rstrip("\n") + "," * 50_000 + "\n" + GOOD).encode(), "ok", ""),
    "unclosed quote": ((HEAD + '1,"Hi there,Ann,joy,positive,3,0,1,1,,\n').encode(), "ok", "unclosed"),
    "too many rows": ((HEAD + "".join(f"{i},Hi,Ann,joy,positive,{i},0,1,1,,\n" for i in range(25001))).encode(),
                      "error", "WORKBENCH_MAX_CSV_ROWS"),
}


@pytest.mark.parametrize("name", list(CSVS))
def test_bad_csv(name, bench, untouched, tmp_path):
    wb, _, _ = bench
    data, expected, needle = CSVS[name]
    path = tmp_path / "input.csv"
    path.write_bytes(data)
    if expected == "error":
        with pytest.raises((UserError, OSError)) as err:
            sessions, _ = wb.import_csv(path)
            if not sessions:
                raise MediaError("The CSV holds no utterances.")   # what the page and API say
        assert needle.lower() in one_line(str(err.value)).lower()
        return
    sessions, imported = wb.import_csv(path)
    assert sessions and all(wb.store.load(s.id).rows for s in sessions)
    problems = [str(p) for p in imported.problems] + imported.notes
    for p in problems:
        one_line(p)
    assert needle.lower() in " ".join(problems).lower()
    from webapp.service import ExportRefused
    try:
        exported = wb.export_csv(sessions[0].id, None).read_text(encoding="utf-8")
    except ExportRefused as err:                 # rows without a label or a time: named, not written
        assert "utterance" in one_line(str(err)) and "Not exported" in str(err)
        return
    for line in exported.splitlines()[1:]:                       # formula-safe: no cell starts a formula
        import csv as _csv
        for cell in next(_csv.reader([line])):
            assert not cell[:1] in ("=", "+", "-", "@", "\t", "\r") or cell[:1] == "-" and cell[1:].isdigit()


# ====================================================================== the checkpoint corpus

class Boom:
    """Unpickling this would create a file: proof that nothing was unpickled."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _ckpt(folder: Path) -> Path:
    save_checkpoint(folder, untrained().model, untrained().card)
    return folder


def _edit_card(folder: Path, change) -> Path:
    card = json.loads((folder / CARD_FILE).read_text())
    (folder / CARD_FILE).write_text(json.dumps(change(card)))
    return folder


def _pickle_to(path: Path, marker: Path) -> None:
    Boom.marker = str(marker)
    path.write_bytes(pickle.dumps(Boom()))


def _wrong_shapes(folder: Path) -> Path:
    from core.model import EmotionModel
    from safetensors.torch import save_file
    _ckpt(folder)
    other = EmotionModel(ModelConfig(hidden=64))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(folder / MODEL_FILE))
    return folder


CHECKPOINTS = {
    "missing folder": (lambda d, m: d / "nowhere", "does not exist"),
    "empty folder": (lambda d, m: d, "card.json is missing"),
    "card not json": (lambda d, m: (_ckpt(d) / CARD_FILE).write_text("{not json") and d, "not a valid card"),
    "card is a list": (lambda d, m: _edit_card(_ckpt(d), lambda c: [c]), "JSON object"),
    "card labels differ": (lambda d, m: _edit_card(_ckpt(d), lambda c: {**c, "emotions": c["emotions"][::-1]}),
                           "labels"),
    "card model not a dict": (lambda d, m: _edit_card(_ckpt(d), lambda c: {**c, "model": 7}), "not an object"),
    "card video encoder not a dict": (lambda d, m: _edit_card(_ckpt(d), lambda c: {**c, "video_encoder": "r3d"}),
                                      "video_encoder is not an object"),
    "card absurd width": (lambda d, m: _edit_card(_ckpt(d), lambda c: {**c, "model": {**c["model"],
                                                                                       "fusion": 10**9}}),
                          "model.fusion"),
    "card unknown modality": (lambda d, m: _edit_card(_ckpt(d), lambda c: {**c, "model": {
        **c["model"], "modalities": ["smell"]}}), "smell"),
    "weights missing": (lambda d, m: (_ckpt(d) / MODEL_FILE).unlink() or d, "model.safetensors is missing"),
    "only a pickle (.pt)": (lambda d, m: (_ckpt(d) / MODEL_FILE).unlink() or _pickle_to(d / "model.pt", m) or d,
                            "pickled weights are refused"),
    "pickle named safetensors": (lambda d, m: _pickle_to(_ckpt(d) / MODEL_FILE, m) or d, "weights"),
    "pickle as text encoder": (lambda d, m: _pickle_to(_ckpt(d) / TEXT_FILE, m) or d, "weights"),
    "wrong shapes": (lambda d, m: _wrong_shapes(d), "size mismatch"),
    "truncated weights": (lambda d, m: (_ckpt(d) / MODEL_FILE).write_bytes(
        (d / MODEL_FILE).read_bytes()[:1000]) and d, "weights"),
    "empty weights": (lambda d, m: (_ckpt(d) / MODEL_FILE).write_bytes(b"") or d, "weights"),
}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_bad_checkpoint(name, tmp_path, monkeypatch):
    import torch
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle.loads called"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    folder, marker = tmp_path / "ckpt", tmp_path / "UNPICKLED"
    folder.mkdir()
    build, needle = CHECKPOINTS[name]
    path = build(folder, marker)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert needle.lower() in one_line(str(err.value)).lower()
    assert not marker.exists()


def test_a_bad_checkpoint_is_one_line_in_the_app(tmp_path, untouched, bench, media_corpus):
    from webapp.service import ModelError
    folder = tmp_path / "ckpt"
    folder.mkdir()
    wb = Workbench(ModelHolder(str(folder)), tmp_path / "data")
    with pytest.raises(ModelError) as err:
        wb.analyze(_short_video(media_corpus))
    assert "card.json is missing" in one_line(str(err.value))
    assert wb.store.list() == [] and not any((wb.root / "sessions").glob("*")) \
        if (wb.root / "sessions").exists() else True


@pytest.mark.parametrize("content", ["pickle", "text", "empty"])
def test_a_bad_whisper_file_is_refused_without_unpickling(content, tmp_path):
    """`--whisper my.pt`: tensors only (torch.load with weights_only=True); a pickle that would run code
    is refused in one line and runs nothing."""
    from core.transcribe import TranscriptionError, load_whisper
    path, marker = tmp_path / "whisper.pt", tmp_path / "UNPICKLED"
    if content == "pickle":
        _pickle_to(path, marker)
    else:
        path.write_bytes(b"not a checkpoint" if content == "text" else b"")
    with pytest.raises(TranscriptionError) as err:
        load_whisper(str(path), device="cpu")
    assert "whisper.pt" in one_line(str(err.value)) and not marker.exists()


# ====================================================================== caches and outputs

@pytest.mark.parametrize("blob", ["", "{not json", "null", "[]", '"text"', '{"utterances": [5]}', "{}",
                                  '{"source": "x", "media": 3}'])
def test_a_damaged_analysis_cache_entry_is_a_miss(blob, tmp_path, monkeypatch):
    from core import cache
    monkeypatch.setenv(cache.ANALYSIS_CACHE_ENV, str(tmp_path))
    key = cache.cache_key("0" * 64, {"models": "test"})
    (tmp_path / f"{key}.json").write_text(blob, encoding="utf-8")
    assert cache.load(key) is None                  # analysed again instead of failing for ever


def test_batch_csv_cells_are_formula_safe(tmp_path):
    import pandas as pd
    from core.batch import write_outputs
    from core.types import Analysis, MediaInfo, Utterance, UtterancePrediction
    texts = ["=HYPERLINK(\"http://evil\")", "@SUM(A1)", "+cmd|' /C calc'!A0", "-2+3", "plain words"]
    preds = [UtterancePrediction(i, Utterance(i, i + 0.5, t), [1 / 7] * 7, [0.2, 0.5, 0.3],
                                 error="=1+1" if i == 0 else "") for i, t in enumerate(texts)]
    write_outputs(Analysis("x.mp4", MediaInfo("x.mp4", 5.0, True, True), preds), tmp_path / "x")
    table = pd.read_csv(tmp_path / "x.csv", keep_default_na=False)
    for cell in list(table["text"]) + list(table["error"]):
        assert cell[:1] not in ("=", "+", "-", "@"), cell
    assert table["text"].tolist()[-1] == "plain words" and table["text"].tolist()[0] == "'" + texts[0]


def test_whisper_clips_never_end_past_the_last_audio_frame():
    """openai-whisper's loop never ended when a clip's end, rounded to 10 ms, passed the last mel frame
    (speech running to the end of the file): the server hung on such clips."""
    from core.transcribe import SAMPLE_RATE, _clips
    for n_samples in range(34_800, 36_000, 7):               # about 2.2 s, every 10-ms rounding case
        duration = n_samples / SAMPLE_RATE
        clips = _clips([(0.3, duration - 0.05)], duration)  # speech up to the end
        last_frame = n_samples // 160                         # whisper's content frames
        assert all(round(t * 100) <= last_frame for t in clips), (n_samples, clips)
        assert clips[-1] >= duration - 0.011


# ====================================================================== names and logins

@pytest.mark.parametrize("name", ["../../etc/passwd", "..\\..\\boot.ini", "/abs/path/v.mp4", "a/../../x.mp4",
                                  "\x00evil.mp4", "....mp4", "con.mp4\n.sh", "é" * 300 + ".mp4"])
def test_uploaded_names_cannot_escape_the_data_folder(name, tmp_path):
    from webapp import paths
    safe = paths.safe_filename(name)
    assert "/" not in safe and "\\" not in safe and safe not in ("", ".", "..") and "\x00" not in safe
    target = paths.inside(tmp_path, "sessions", safe)
    assert tmp_path in target.parents


def test_auth_parsing(tmp_path):
    from webapp.guards import LoginBrake
    from webapp.ui import parse_auth
    assert parse_auth("ann:secret") == {"ann": "secret"}
    assert parse_auth("ann:se:cret, bob:pw") == {"ann": "se:cret", "bob": "pw"}
    logins = tmp_path / "logins.txt"
    logins.write_text("# annotators\nann:one\nbob:two,three\n")
    assert parse_auth(f"@{logins}") == {"ann": "one", "bob": "two,three"}
    for bad in ("ann", ":pw", "ann:", "", "@/no/such/file"):
        with pytest.raises(ValueError) as err:
            parse_auth(bad)
        assert "pw" not in str(err.value) or bad.startswith("@")
    check = LoginBrake({"ann": "secret"})
    assert check("ann", "secret") and not check("ann", "Secret") and not check("bob", "secret")
