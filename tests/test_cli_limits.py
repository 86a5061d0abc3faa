"""The command line applies the app's limits: `python -m core analyze` and `python -m core batch`.

An over-limit file is refused in one line before torch, Whisper or any model is even imported;
`analyze` then exits non-zero, `batch` skips the file, names it, and analyses the others.
Limits come from --max-mb / --max-upload-mb, --max-seconds, else the WORKBENCH_MAX_* variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import mediagen

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "whisper", "transformers")
# runs the CLI's main() and then says which heavy packages it had imported by the end
PROBE = ("import sys, core.__main__ as cli\n"
         "try:\n    rc = cli.main(sys.argv[1:])\n"
         "finally:\n    print('HEAVY:' + ','.join(sorted({m.split('.')[0] for m in sys.modules} & set(%r))))\n"
         "sys.exit(rc)\n" % (HEAVY,))


def run_cli(*args: str, probe: bool = True, **env: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_MAX_")}, **env}
    cmd = [sys.executable, "-c", PROBE, *args] if probe else [sys.executable, "-m", "core", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def heavy_imports(proc: subprocess.CompletedProcess) -> str:
    return [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY:")][-1][len("HEAVY:"):]


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A 3-s silent test-pattern video (a few kB), a 1-s video with no audio, and a text file."""
    d = tmp_path_factory.mktemp("cli-media")
    return {"long": mediagen.testsrc_video(d / "long.mp4", seconds=3, silent=True, size="160x120"),
            "short": mediagen.testsrc_video(d / "short.mp4", seconds=1, size="160x120"),
            "broken": mediagen.text_file_named(d / "broken.mp4")}


# ---------------------------------------------------------------- analyze

@pytest.mark.parametrize("how", ["flag", "env"])
def test_analyze_refuses_a_too_long_file_before_loading_anything(how, media):
    limit = {"flag": dict(args=("--max-seconds", "2")), "env": dict(env={"WORKBENCH_MAX_SECONDS": "2"})}[how]
    proc = run_cli("analyze", str(media["long"]), *limit.get("args", ()), **limit.get("env", {}))
    assert proc.returncode == 1
    line = error_line(proc)
    assert line.startswith("error: The file lasts 0:00:03; the limit is 0:00:02"), line
    assert "--max-seconds" in line and "WORKBENCH_MAX_SECONDS" in line
    assert heavy_imports(proc) == ""                  # no torch, no Whisper, no model


@pytest.mark.parametrize("args, env", [(("--max-mb", "0.001"), {}), (("--max-upload-mb", "0.001"), {}),
                                       ((), {"WORKBENCH_MAX_UPLOAD_MB": "0.001"})])
def test_analyze_refuses_a_too_big_file(args, env, media):
    proc = run_cli("analyze", str(media["long"]), *args, **env)
    assert proc.returncode == 1
    line = error_line(proc)
    assert "MB; the limit is 0.001 MB" in line and "WORKBENCH_MAX_UPLOAD_MB" in line, line
    assert heavy_imports(proc) == ""


def test_analyze_refuses_too_many_pixels_from_the_environment(media):
    proc = run_cli("analyze", str(media["long"]), WORKBENCH_MAX_PIXELS=str(100 * 100))
    assert proc.returncode == 1 and "160x120" in error_line(proc) and heavy_imports(proc) == ""


def test_analyze_names_an_unreadable_or_missing_file_in_one_line(media, tmp_path):
    for path, words in ((media["broken"], "not a readable"), (tmp_path / "nowhere.mp4", "not found")):
        proc = run_cli("analyze", str(path))
        assert proc.returncode == 1 and words in error_line(proc).lower() and heavy_imports(proc) == ""


@pytest.mark.parametrize("args, env, words", [(("--max-seconds", "-1"), {}, "must not be negative"),
                                              ((), {"WORKBENCH_MAX_SECONDS": "soon"}, "WORKBENCH_MAX_SECONDS"),
                                              (("--max-mb", "lots"), {}, "invalid float")])
def test_a_bad_limit_is_a_usage_error(args, env, words, media):
    proc = run_cli("analyze", str(media["long"]), *args, **env)
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr


def test_zero_switches_a_limit_off(media):
    from core.limits import Limits
    assert Limits.from_env(max_seconds=0, max_upload_mb=0).check_media(media["long"]).duration > 2.9


# ---------------------------------------------------------------- batch

def test_batch_skips_an_over_limit_file_by_name_and_goes_on(media, tmp_path):
    folder, out = tmp_path / "videos", tmp_path / "out"
    folder.mkdir()
    for name in ("long", "short", "broken"):
        (folder / f"{name}.mp4").write_bytes(media[name].read_bytes())
    proc = run_cli("batch", str(folder), "--out", str(out), "--max-seconds", "2", probe=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    skipped = [ln for ln in lines if ln.startswith("SKIP")]
    assert skipped == [next(ln for ln in lines if "long.mp4" in ln)]
    assert "the limit is 0:00:02" in skipped[0] and "--max-seconds" in skipped[0]
    assert any(ln.startswith("ERR") and "broken.mp4" in ln for ln in lines)
    assert any(ln.startswith("ok") and "short.mp4" in ln and "No speech" in ln for ln in lines)
    assert "1 analysed, 1 failed, 1 skipped" in proc.stdout
    assert json.loads((out / "short.json").read_text())["utterances"] == []
    assert not (out / "long.json").exists() and not (out / "long.csv").exists()


def test_batch_with_every_file_over_the_limit_loads_no_model(media, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "long.mp4").write_bytes(media["long"].read_bytes())
    proc = run_cli("batch", str(folder), "--out", str(tmp_path / "out"), WORKBENCH_MAX_SECONDS="1")
    assert proc.returncode == 1
    assert "SKIP long.mp4: The file lasts 0:00:03" in proc.stdout and "0 analysed" in proc.stdout
    assert heavy_imports(proc) == ""


def test_batch_item_for_an_over_limit_file(media):
    from core.batch import check_files
    from core.limits import Limits
    keep, refused = check_files([media["long"], media["short"], media["broken"]], Limits(max_seconds=2))
    assert keep == [media["short"]]
    assert [(Path(r.source).name, r.ok, r.skipped) for r in refused] == [("long.mp4", False, True),
                                                                         ("broken.mp4", False, False)]
