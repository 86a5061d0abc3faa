"""`python -m core batch DIR --out OUT --engine ray`: Ray actors write what the local engine writes,
a second run skips what is done with the same models, failures are named; without Ray, one line.

The Ray tests start a real local Ray (2 CPUs here) on two short generated talking clips and a
text file named .mp4, and shut it down after. They skip when Ray is not installed
(`pip install -r requirements-ray.txt`; `bash scripts/setup.sh --test` installs it, so CI runs them).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import mediagen

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ["Kids are talking by the door.", "I am so happy to see you again."]
TOLERANCE = 1e-5        # probabilities from actors with other thread counts: same to float rounding


def _ray_installed() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


needs_ray = pytest.mark.skipif(not _ray_installed(),
                               reason="Ray is not installed (pip install -r requirements-ray.txt)")


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)


def result_lines(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """{'ok   a.mp4': message, ...} from the batch's report."""
    return dict(ln.split(": ", 1) for ln in proc.stdout.splitlines() if ln[:4] in ("ok  ", "ERR ", "done", "SKIP"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two one-sentence talking clips and a text file named broken.mp4."""
    if not mediagen.have_espeak():
        pytest.fail("espeak-ng is required for the speech tests: apt-get install espeak-ng")
    work = tmp_path_factory.mktemp("ray_media")
    folder = work / "videos"
    folder.mkdir()
    for i, sentence in enumerate(SENTENCES):
        wav, _ = mediagen.speech_with_pauses([sentence], work / f"s{i}.wav", pause=0.5, lead=0.3)
        mediagen.talking_video(wav, folder / f"clip{i}.mp4", size="320x180")
    mediagen.text_file_named(folder / "broken.mp4")
    return folder


def _same_analysis(a: dict, b: dict) -> None:
    """Equal but for timings, with probabilities equal to float rounding."""
    def walk(x, y, where):
        if isinstance(x, dict):
            assert set(x) == set(y), where
            for k in x:
                if k != "timings":
                    walk(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, list):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{where}[{i}]")
        elif isinstance(x, float):
            assert abs(x - y) <= TOLERANCE, (where, x, y)
        else:
            assert x == y, (where, x, y)
    walk(a, b, "")


# ---------------------------------------------------------------- with Ray

@needs_ray
def test_ray_batch_writes_what_local_writes_names_failures_and_resumes(clips, tmp_path, monkeypatch):
    import ray
    from core.batch import analyze_folder, output_names, read_stamp
    out_ray, out_local = tmp_path / "ray", tmp_path / "local"
    items = analyze_folder(clips, out_ray, jobs=2, engine="ray", progress=False)
    assert not ray.is_initialized()             # the engine shut down the Ray it started
    by_name = {Path(i.source).name: i for i in items}
    assert set(by_name) == {"clip0.mp4", "clip1.mp4", "broken.mp4"}
    assert not by_name["broken.mp4"].ok and "not a readable video" in by_name["broken.mp4"].message
    for name in ("clip0", "clip1"):
        item = by_name[f"{name}.mp4"]
        assert item.ok and item.message == "1 utterances" and item.output == name, item
        assert ":" in item.worker                                   # host:pid of the actor that did it
    assert len({by_name[f"clip{i}.mp4"].worker for i in range(2)} - {""}) <= 2
    spoken = [json.loads((out_ray / f"clip{i}.json").read_text())["utterances"][0]["utterance"]["text"]
              for i in range(2)]
    assert "door" in spoken[0].lower() and "happy" in spoken[1].lower()

    # the local engine, with an empty analysis cache so that it really analyses: the same outputs
    monkeypatch.setenv("WORKBENCH_ANALYSIS_CACHE", str(tmp_path / "fresh_cache"))
    local = {Path(i.source).name: i for i in analyze_folder(clips, out_local, jobs=1, progress=False)}
    assert [local[n].ok for n in sorted(local)] == [by_name[n].ok for n in sorted(by_name)]
    for name in ("clip0", "clip1"):
        _same_analysis(json.loads((out_local / f"{name}.json").read_text()),
                       json.loads((out_ray / f"{name}.json").read_text()))
        ray_rows = list(csv.reader((out_ray / f"{name}.csv").open()))
        local_rows = list(csv.reader((out_local / f"{name}.csv").open()))
        assert ray_rows[0] == local_rows[0] and len(ray_rows) == len(local_rows) == 2
        assert ray_rows[1][3:5] == local_rows[1][3:5] and ray_rows[1][6] == local_rows[1][6]   # text, labels
    names = output_names(sorted(clips.glob("*.mp4")))
    stamps = [read_stamp(out_ray / names[f]) for f in sorted(clips.glob("clip*.mp4"))]
    assert all(s is not None and len(s["sha256"]) == 64 for s in stamps)

    # a second run through the command line (its own Ray): nothing analysed again, failure named
    proc = run_cli("batch", str(clips), "--out", str(out_ray), "--engine", "ray",
                   WORKBENCH_ANALYSIS_CACHE=str(tmp_path / "empty_cache"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = result_lines(proc)
    assert lines["done clip0.mp4"] == "already analysed with these models -> clip0.json, clip0.csv"
    assert lines["done clip1.mp4"] == "already analysed with these models -> clip1.json, clip1.csv"
    assert lines["ERR  broken.mp4"].startswith("This file is not a readable video")
    assert "0 analysed, 1 failed, 0 skipped (over a limit), 2 already done" in proc.stdout
    assert not (tmp_path / "empty_cache").exists()              # no analysis ran


def test_only_the_same_file_with_the_same_models_counts_as_done(clips, tmp_path):
    """The resume decision itself, on real stamped outputs: another model signature or other file
    content means analyse again. (A stand-in engine answers the signature: loading other models
    for real is what the test above does.)"""
    from core.batch import already_done, output_names, write_outputs
    from core.types import Analysis, MediaInfo
    from core.cache import file_digest
    files = sorted(clips.glob("clip*.mp4"))
    names = output_names(files)
    signature = {"checkpoint": "a", "weights": "1234", "whisper": "base", "language": "en"}
    for f in files:
        write_outputs(Analysis(str(f), MediaInfo(str(f), 1.0, True, True)), tmp_path / names[f],
                      {"sha256": file_digest(f), "models": signature})

    class Answers:      # the engine's one question: which models do your workers hold?
        def __init__(self, sig):
            self.sig, self.asked = sig, 0

        def signature(self):
            self.asked += 1
            return self.sig

    done, rest = already_done(files, names, tmp_path, Answers(signature))
    assert [Path(d.source).name for d in done] == ["clip0.mp4", "clip1.mp4"] and rest == []
    done, rest = already_done(files, names, tmp_path, Answers({**signature, "weights": "5678"}))
    assert done == [] and rest == files
    changed = tmp_path / "changed"
    changed.mkdir()
    copies = [changed / f.name for f in files]
    for f, c in zip(files, copies):
        c.write_bytes(f.read_bytes())
    copies[1].write_bytes(copies[1].read_bytes() + b"\0")          # other content, same name
    done, rest = already_done(copies, output_names(copies), tmp_path, Answers(signature))
    assert [Path(d.source).name for d in done] == ["clip0.mp4"] and rest == [copies[1]]
    (tmp_path / "clip0.csv").unlink()                               # half an output is not done
    nothing = Answers(signature)
    done, rest = already_done(files[:1], names, tmp_path, nothing)
    assert done == [] and nothing.asked == 0                        # no stamp: no worker is asked


class DiesOnCrashFiles:
    """Stands in for BatchWorker (no models: what is tested is Ray's side): its process dies
    on a file named crash*, and answers "fine" for the others ("fine, alone" when the engine
    asked for each line's words alone)."""

    def __init__(self, checkpoint=None, threads=0, dialogue=True):
        self.name = f"here:{os.getpid()}"
        self.dialogue = dialogue

    def signature(self):
        return {"stand-in": True}

    def run(self, path):
        from core.batch import Outcome
        if Path(path).name.startswith("crash"):
            os._exit(1)                         # as an out-of-memory kill would
        return Outcome(path, None, "fine" if self.dialogue else "fine, alone", worker=self.name)


class CannotStart(DiesOnCrashFiles):
    def __init__(self, checkpoint=None, threads=0, dialogue=True):
        raise RuntimeError("no driver for this GPU")


@needs_ray
def test_a_worker_that_dies_fails_only_its_file_and_one_that_cannot_start_fails_each_by_name(monkeypatch):
    import ray
    from core import ray_engine
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the actors cannot import this file
    files = ["/videos/a.mp4", "/videos/crash.mp4", "/videos/b.mp4"]
    monkeypatch.setattr(ray_engine, "BatchWorker", DiesOnCrashFiles)
    got = _messages(ray_engine.RayEngine(1, None, len(files)), files)
    assert got["a.mp4"] == got["b.mp4"] == "fine"               # the replacement actor went on
    assert got["crash.mp4"].startswith("The Ray worker stopped while analysing it: "), got
    assert "\n" not in got["crash.mp4"]
    alone = _messages(ray_engine.RayEngine(1, None, 2, dialogue=False), files[::2])   # --alone reaches the actors
    assert alone == {"a.mp4": "fine, alone", "b.mp4": "fine, alone"}

    monkeypatch.setattr(ray_engine, "BatchWorker", CannotStart)
    got = _messages(ray_engine.RayEngine(1, None, len(files)), files)
    assert not ray.is_initialized()
    assert set(got) == {"a.mp4", "crash.mp4", "b.mp4"}
    for message in got.values():
        assert message == "No Ray worker could analyse it: it could not start: RuntimeError: no driver for this GPU"
        assert "\n" not in message


# ---------------------------------------------------------------- the plan: GPUs when present

def test_actors_ask_for_a_gpu_each_when_the_cluster_has_gpus():
    # Pure arithmetic over the resources Ray reports; there is no GPU here to run on.
    from core.ray_engine import plan
    assert plan({"CPU": 32.0, "GPU": 4.0}, None, 100) == (4, {"num_gpus": 1.0, "num_cpus": 1.0})
    assert plan({"CPU": 32.0, "GPU": 4.0}, None, 100, gpus_per_job=0.5) == (8, {"num_gpus": 0.5, "num_cpus": 1.0})
    assert plan({"CPU": 32.0, "GPU": 4.0}, None, 3) == (3, {"num_gpus": 1.0, "num_cpus": 1.0})
    assert plan({"CPU": 32.0, "GPU": 4.0}, None, 100, gpus_per_job=0)[1]["num_gpus"] == 0
    assert plan({"CPU": 16.0}, None, 100) == (8, {"num_cpus": 2.0, "num_gpus": 0})
    assert plan({"CPU": 2.0}, 2, 3) == (2, {"num_cpus": 1.0, "num_gpus": 0})
    assert plan({"CPU": 2.0}, None, 3) == (1, {"num_cpus": 2.0, "num_gpus": 0})
    from core.ray_engine import RayUnavailable
    with pytest.raises(RayUnavailable, match="ask for 4 CPU cores, and the cluster has 2"):
        plan({"CPU": 2.0}, None, 3, cpus_per_job=4)             # it would wait for ever: said at once


# ---------------------------------------------------------------- without Ray

def test_without_ray_the_ray_engine_says_how_to_install_it_in_one_line(clips, tmp_path):
    # Ray is hidden from this one process (sys.modules['ray'] = None makes `import ray` fail).
    code = ("import sys; sys.modules['ray'] = None\nimport core.__main__ as cli\n"
            "sys.exit(cli.main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "batch", str(clips), "--out", str(tmp_path / "out"),
                           "--engine", "ray"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: --engine ray needs Ray, which is not installed: "
                                   "pip install -r requirements-ray.txt (or use --engine local).")
    assert not (tmp_path / "out").exists()


def test_ray_flags_without_the_ray_engine_are_refused(clips, tmp_path):
    proc = run_cli("batch", str(clips), "--out", str(tmp_path / "out"), "--address", "auto")
    assert proc.returncode == 2 and "--address, --cpus-per-job and --gpus-per-job are for --engine ray" in proc.stderr


def _messages(engine, files: list[str]) -> dict[str, str]:
    """Each file's outcome (by name) from one run of `engine`, which is closed after."""
    try:
        return {Path(o.path).name: o.message for o in engine.run(files)}
    finally:
        engine.close()
