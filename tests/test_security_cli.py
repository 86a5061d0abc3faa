"""Issue 13 attacks on the command line: `python -m core analyze|batch`, `python -m train.train`,
`python -m train.evaluate`. Each refusal is one line on stderr (no traceback, no absolute path
where a path would say too much) and comes before any heavy work.

The last three tests load the real models in a subprocess (about 10-20 s each).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.checkpoint import DEFAULT_CHECKPOINT
from tests import attack_media as attack
from tests.test_cli_limits import error_line, heavy_imports, run_cli
from tests.test_security_core import _dangerous

ROOT = Path(__file__).resolve().parent.parent
# runs the CLI's main() after torch and the model code are imported, then prints how much the
# peak memory grew while it ran
RSS_PROBE = ("import resource, sys\nimport core.checkpoint, core.model, core.__main__ as cli\n"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "try:\n    rc = cli.main(sys.argv[1:])\n"
             "finally:\n    print('GROWTH_MB', (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
             "sys.exit(rc)\n")


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_MAX_")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def last_line(proc: subprocess.CompletedProcess) -> str:
    """The last line on stderr (a progress bar may come before it); never a traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [ln for ln in proc.stderr.replace("\r", "\n").splitlines() if ln.strip()][-1]


def no_path(text: str, *folders: Path) -> None:
    for folder in folders:
        assert str(folder) not in text, text


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-hostile")
    secret = attack.tone(d / "secret_source.ts", 2.0, "mp2")
    return {"dir": d, "secret": secret,
            "m3u8": attack.playlist(d / "list.m3u8", secret),
            "ffconcat": attack.ffconcat(d / "list.ffconcat", secret),
            "mkv": attack.mkv_claiming(d / "claims5.mkv", 30.0, 5.0),
            "mp3": attack.mp3_claiming(d / "claims5.mp3", 30.0, 5.0),
            "wide": attack.wide_frame(d / "wide.mkv"),
            "nosize": attack.unknown_size(d / "nosize.avi"),
            "tone": attack.tone(d / "tone.wav", 1.0)}


# ---------------------------------------------------------------- playlists, lying headers, frames

@pytest.mark.parametrize("name, needle", [("m3u8", "playlist or file list (hls)"),
                                          ("ffconcat", "playlist or file list (concat)"),
                                          ("mkv", "longer than 0:00:10 once decoded"),
                                          ("mp3", "longer than 0:00:10 once decoded"),
                                          ("wide", "200000x200"),
                                          ("nosize", "frame size could not be read")])
def test_analyze_refuses_in_one_line_before_loading_anything(name, needle, hostile):
    proc = run_cli("analyze", str(hostile[name]), "--max-seconds", "10")
    assert proc.returncode == 1
    assert needle in error_line(proc), proc.stderr
    assert heavy_imports(proc) == ""                  # no torch, no Whisper, no model


def test_batch_refuses_playlists_and_lying_headers_by_name(hostile, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name, as_name in (("m3u8", "talk.mp4"), ("ffconcat", "voice.wav"), ("mkv", "long.mkv"),
                          ("mp3", "long.mp3")):
        (folder / as_name).write_bytes(hostile[name].read_bytes())
    proc = run_cli("batch", str(folder), "--out", str(tmp_path / "out"), "--max-seconds", "10")
    lines = dict(ln.split(": ", 1) for ln in proc.stdout.splitlines() if ln[:4] in ("ERR ", "SKIP"))
    assert set(lines) == {"ERR  talk.mp4", "ERR  voice.wav", "SKIP long.mkv", "SKIP long.mp3"}, proc.stdout
    assert "playlist or file list (concat)" in lines["ERR  voice.wav"]
    assert "once decoded" in lines["SKIP long.mkv"] and "once decoded" in lines["SKIP long.mp3"]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert heavy_imports(proc) == ""
    assert not list((tmp_path / "out").glob("*.json"))


# ---------------------------------------------------------------- absurd checkpoint cards

def test_analyze_refuses_an_absurd_card_without_allocating(hostile, tmp_path):
    if not (DEFAULT_CHECKPOINT / "card.json").is_file():
        pytest.skip("no shipped checkpoint to copy the weights from")
    bad = attack.bad_card(tmp_path / "bad", DEFAULT_CHECKPOINT)
    proc = run("-c", RSS_PROBE, "analyze", str(hostile["tone"]), "--checkpoint", str(bad))
    assert proc.returncode == 1
    line = error_line(proc)
    assert "parameters" in line and "limit is 20,000,000" in line, line
    growth = int(proc.stdout.split("GROWTH_MB")[-1])
    assert growth < 100, f"peak memory grew {growth} MB while refusing the card"   # building it: ~550 MB


# ---------------------------------------------------------------- zip bombs

def test_train_refuses_a_zip_bomb_in_one_line(tmp_path):
    bomb = attack.zip_bomb(tmp_path / "bomb.zip")
    proc = run("-m", "train.train", "--train", str(bomb), "--out", str(tmp_path / "model"), timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "zip bomb" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "model").exists()


# ---------------------------------------------------------------- formula cells, full disk (models)

FORMULA_CSV = ("Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
               + "".join(f'{i},"{t.replace(chr(34), chr(34) * 2)}",Ann,joy,positive,0,{i}\n'
                         for i, t in enumerate(["=1+1", " =cmd|' /C calc'!A0", "\uff1dSUM(A1)", "@SUM(A1)",
                                                "-2+3", "+A1", "\t=1", "plain words"])))


def test_evaluate_writes_formula_safe_predictions_and_fails_a_full_disk_in_one_line(tmp_path):
    if not (DEFAULT_CHECKPOINT / "card.json").is_file():
        pytest.skip("no shipped checkpoint")
    data = tmp_path / "formulas.csv"
    data.write_text(FORMULA_CSV, encoding="utf-8")
    out = tmp_path / "eval"
    proc = run("-m", "train.evaluate", "--csv", str(data), "--out", str(out), "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        records = list(csv.reader(f))
    cells = [c for r in records for c in r]
    assert [c for c in cells if _dangerous(c)] == []
    from core.csvsafe import unescape_cell
    texts = [unescape_cell(r[records[0].index("Utterance")]) for r in records[1:]]
    assert texts == ["=1+1", " =cmd|' /C calc'!A0", "\uff1dSUM(A1)", "@SUM(A1)", "-2+3", "+A1", "\t=1",
                     "plain words"]
    if not os.path.exists("/dev/full"):
        return
    full = tmp_path / "full"
    full.mkdir()
    (full / "metrics.json").symlink_to("/dev/full")          # the first file written: ENOSPC
    proc = run("-m", "train.evaluate", "--csv", str(data), "--out", str(full), "--threads", "1")
    assert proc.returncode == 2
    line = last_line(proc)
    assert line.startswith("error: Could not write ") and line.endswith(": the disk is full."), line
    no_path(proc.stderr, tmp_path)


def test_batch_keeps_same_named_results_apart_and_a_full_disk_fails_one_file(hostile, tmp_path):
    folder, out = tmp_path / "videos", tmp_path / "out"
    folder.mkdir(), out.mkdir()
    (folder / "talk.wav").write_bytes(hostile["tone"].read_bytes())
    attack.tone(folder / "talk.mp4", 1.0, "aac")
    attack.tone(folder / "full.wav", 1.0)
    (out / "full.json").symlink_to("/dev/full")                # this output meets a full disk
    proc = run("-m", "core", "batch", str(folder), "--out", str(out))
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = dict(ln.split(": ", 1) for ln in proc.stdout.splitlines() if ln[:4] in ("ok  ", "ERR "))
    assert lines["ERR  full.wav"] == "Could not write full.json: the disk is full.", proc.stdout
    assert lines["ok   talk.mp4"].endswith("-> talk.mp4.json, talk.mp4.csv")
    assert lines["ok   talk.wav"].endswith("-> talk.wav.json, talk.wav.csv")
    import json
    sources = {p.name: Path(json.loads(p.read_text())["source"]).name for p in out.glob("talk*.json")}
    assert sources == {"talk.mp4.json": "talk.mp4", "talk.wav.json": "talk.wav"}
    assert (out / "talk.mp4.csv").is_file() and (out / "talk.wav.csv").is_file()
    assert not (out / "full.csv").exists()
    no_path(lines["ERR  full.wav"], tmp_path)


def test_analyze_json_on_a_full_disk_is_one_line(hostile, tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is needed to simulate a full disk")
    target = tmp_path / "result.json"
    target.symlink_to("/dev/full")
    proc = run("-m", "core", "analyze", str(hostile["tone"]), "--json", str(target))
    assert proc.returncode == 1
    assert last_line(proc) == "error: Could not write result.json: the disk is full."
    no_path(proc.stderr, tmp_path)
