"""The SageMaker contract, run here without AWS: sagemaker/inference.py's four functions over a real
talking video, what it refuses (limits, paths outside the input folder, bad requests), and
sagemaker/train.py with SM_* pointing at temporary folders, whose checkpoint the app then loads.

The serving container is not here: `serve` below calls the functions the way sagemaker-inference
1.10.1's Transformer.transform does (JSON bodies decoded to str, a (body, content type) tuple
answer, an error's status_code as the HTTP status). The toolkit itself is not installed: it
pulls boto3.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests import mediagen

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "fixtures" / "train_tiny.csv"


def _load(name: str):
    """sagemaker/NAME.py by its path (the folder has no __init__.py, so that it never shadows the
    `sagemaker` SDK package)."""
    spec = importlib.util.spec_from_file_location(f"sm_{name}", ROOT / "sagemaker" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module             # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


inference = _load("inference")
entry = _load("train")


def serve(model, body: bytes, content_type: str, accept: str = "application/json") -> tuple[int, str, str]:
    """(status, body, content type) as the serving toolkit answers a request."""
    if content_type in ("application/json", "text/csv"):
        body = body.decode("utf-8")
    try:
        data = inference.input_fn(body, content_type)
        prediction = inference.predict_fn(data, model)
        answer, kind = inference.output_fn(prediction, accept)
    except Exception as err:
        return getattr(err, "status_code", 500), str(err), "text/plain"
    return 200, answer, kind


def one_line(text: str) -> bool:
    return "\n" not in text.strip() and 0 < len(text) < 400


# ---------------------------------------------------------------- serving

def test_the_endpoint_analyses_a_videos_bytes_and_a_path_in_the_input_folder(talking_video, models, tmp_path,
                                                                            monkeypatch):
    from core.labels import EMOTIONS, SENTIMENTS
    status, body, kind = serve(models, talking_video.read_bytes(), "video/mp4")
    assert status == 200 and kind == "application/json", body
    answer = json.loads(body)
    utterances = answer["utterances"]
    assert len(utterances) == 3 and "door" in utterances[0]["text"].lower()
    assert answer["source"] == "request body"                   # never the staged file's path
    for u in utterances:
        assert 0 <= u["start"] < u["end"] <= answer["duration"] + 0.5
        assert list(u["emotion_probs"]) == list(EMOTIONS) and list(u["sentiment_probs"]) == list(SENTIMENTS)
        assert abs(sum(u["emotion_probs"].values()) - 1) < 1e-3
        assert u["emotion"] == max(u["emotion_probs"], key=u["emotion_probs"].get)
        assert u["sentiment"] in SENTIMENTS
        assert {"text", "face", "audio"} <= set(u["modalities"])
        assert u["modalities"]["text"]["present"] and u["modalities"]["text"]["emotion"] in EMOTIONS
    assert utterances[0]["modalities"]["face"]["present"]          # the astronaut's face is seen
    assert utterances[0]["modalities"]["face"]["emotion"] == "joy"  # and she smiles

    inputs = tmp_path / "inputs"
    (inputs / "day1").mkdir(parents=True)
    shutil.copy(talking_video, inputs / "day1" / "talk.mp4")
    monkeypatch.setenv(inference.INPUT_DIR_ENV, str(inputs))
    status, body, _ = serve(models, json.dumps({"video_path": "day1/talk.mp4"}).encode(), "application/json",
                            accept="application/json, */*")
    assert status == 200, body
    by_path = json.loads(body)
    assert by_path["source"] == "day1/talk.mp4"
    assert [u["text"] for u in by_path["utterances"]] == [u["text"] for u in utterances]
    assert [u["emotion"] for u in by_path["utterances"]] == [u["emotion"] for u in utterances]
    assert (inputs / "day1" / "talk.mp4").is_file()               # a caller's file is never removed


def test_the_endpoint_reads_each_line_alone_when_asked(talking_video, models, tmp_path, monkeypatch):
    """"neighbours": false in the JSON, or "; neighbours=false" after the media type, reads each
    utterance's words alone (the app's unticked box); anything but true or false is refused."""
    from core.pipeline import WORDS_ALONE
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(talking_video, inputs / "talk.mp4")
    monkeypatch.setenv(inference.INPUT_DIR_ENV, str(inputs))
    for body, kind in ((json.dumps({"video_path": "talk.mp4", "neighbours": False}).encode(), "application/json"),
                       (talking_video.read_bytes(), "video/mp4; neighbours=false")):
        status, answer, _ = serve(models, body, kind)
        assert status == 200, answer
        answer = json.loads(answer)
        assert answer["model"]["words"] == "each utterance alone"
        assert all(u["modalities"]["text"]["note"] == WORDS_ALONE for u in answer["utterances"])
    status, answer, _ = serve(models, json.dumps({"video_path": "talk.mp4", "neighbours": True}).encode(),
                              "application/json")
    assert status == 200 and "words" not in json.loads(answer)["model"]
    for body, kind in ((json.dumps({"video_path": "talk.mp4", "neighbours": "no"}).encode(), "application/json"),
                       (talking_video.read_bytes(), "video/mp4; neighbours=0")):
        status, line, _ = serve(models, body, kind)
        assert status == 400 and '"neighbours" must be true or false' in line and one_line(line), line
    assert not list(Path(tempfile.gettempdir()).glob("request-*/request.media"))   # nothing left staged


def test_a_staged_body_is_removed_after_the_analysis(talking_video, models):
    data = inference.input_fn(talking_video.read_bytes(), "video/mp4")
    assert data.temporary and data.path.is_file()
    inference.predict_fn(data, models)
    assert not data.path.exists() and not data.path.parent.exists()


def test_video_path_reads_only_inside_the_input_folder(tmp_path, monkeypatch):
    inputs, outside = tmp_path / "inputs", tmp_path / "private"
    inputs.mkdir(), outside.mkdir()
    secret = outside / "secret.mp4"
    mediagen.tone_clip(secret, 440.0)
    (inputs / "link.mp4").symlink_to(secret)                      # a link that leads out

    def ask(path):
        with pytest.raises(inference.RequestError) as err:
            inference.input_fn(json.dumps({"video_path": path}), "application/json")
        assert one_line(str(err.value)), str(err.value)
        return err.value.status_code, str(err.value)

    monkeypatch.delenv(inference.INPUT_DIR_ENV, raising=False)
    status, line = ask("talk.mp4")
    assert status == 403 and inference.INPUT_DIR_ENV in line       # off unless an input folder is set
    monkeypatch.setenv(inference.INPUT_DIR_ENV, str(inputs))
    for attempt in ("../private/secret.mp4", str(secret), "link.mp4", "/etc/passwd", "../../../../etc/passwd"):
        status, line = ask(attempt)
        assert status == 403 and line == "video_path must name a file inside the input folder.", attempt
    assert ask("missing.mp4") == (404, "No such file in the input folder: missing.mp4.")
    assert ask("a\0b")[0] == 400
    shutil.copy(secret, inputs / "tone.mp4")                       # inside: accepted, checked, not copied
    data = inference.input_fn(json.dumps({"video_path": "tone.mp4"}), "application/json")
    assert data.path == (inputs / "tone.mp4").resolve() and not data.temporary


def test_bad_requests_get_one_line_and_a_status(tmp_path, monkeypatch, talking_video):
    def refused(body, content_type, status, words):
        with pytest.raises(inference.RequestError) as err:
            inference.input_fn(body, content_type)
        line = str(err.value)
        assert err.value.status_code == status and words in line and one_line(line), (status, line)

    monkeypatch.setenv(inference.INPUT_DIR_ENV, str(tmp_path))
    refused(b"", "video/mp4", 400, "empty")
    refused(b"This is not a video at all.\n" * 20, "video/mp4", 400, "not a readable video or audio file")
    refused(b"<html></html>", "text/html", 415, "is not accepted")
    refused("{not json", "application/json", 400, "not valid JSON")
    refused(json.dumps(["talk.mp4"]), "application/json", 400, '"video_path"')
    refused(json.dumps({"video_path": 3}), "application/json", 400, '"video_path"')
    refused("x" * (inference.MAX_JSON_BYTES + 1), "application/json", 413, "KB")
    monkeypatch.setenv("WORKBENCH_MAX_UPLOAD_MB", "0.01")          # the app's limits apply
    refused(talking_video.read_bytes(), "video/mp4", 413, "the limit is 0.01 MB")
    monkeypatch.setenv("WORKBENCH_MAX_UPLOAD_MB", "500")
    monkeypatch.setenv("WORKBENCH_MAX_SECONDS", "2")
    refused(talking_video.read_bytes(), "video/mp4; codecs=avc1", 413, "the limit is 0:00:02")
    shutil.copy(talking_video, tmp_path / "long.mp4")
    refused(json.dumps({"video_path": "long.mp4"}), "application/json", 413, "the limit is 0:00:02")
    assert not list(Path(tempfile.gettempdir()).glob("request-*/request.media"))   # nothing left staged
    with pytest.raises(inference.RequestError) as err:
        inference.output_fn(None, "text/csv")
    assert err.value.status_code == 406 and one_line(str(err.value))


# ---------------------------------------------------------------- training

def _sagemaker_env(tmp_path: Path, validation: bool = True) -> dict[str, str]:
    env = {"SM_CHANNEL_TRAIN": str(tmp_path / "input" / "data" / "train"),
           "SM_MODEL_DIR": str(tmp_path / "model"),
           "SM_OUTPUT_DATA_DIR": str(tmp_path / "output" / "data"),
           "SM_OUTPUT_DIR": str(tmp_path / "output"), "SM_NUM_CPUS": "1"}
    Path(env["SM_CHANNEL_TRAIN"]).mkdir(parents=True)
    shutil.copy(TINY, Path(env["SM_CHANNEL_TRAIN"]) / "train_sent_emo.csv")
    if validation:
        env["SM_CHANNEL_VALIDATION"] = str(tmp_path / "input" / "data" / "validation")
        Path(env["SM_CHANNEL_VALIDATION"]).mkdir(parents=True)
        shutil.copy(TINY, Path(env["SM_CHANNEL_VALIDATION"]) / "dev_sent_emo.csv")
    return env


def test_the_training_entry_honours_sagemakers_environment_and_the_app_loads_its_checkpoint(tmp_path):
    env = _sagemaker_env(tmp_path)
    # hyperparameters as SageMaker passes them: --name value, underscores, switches as True/False
    proc = subprocess.run([sys.executable, str(ROOT / "sagemaker" / "train.py"), "--epochs", "2",
                           "--tune_layers", "1", "--batch_size", "14", "--context_turns", "2",
                           "--name", "sagemaker-tiny", "--quiet", "True", "--no_final_eval", "False"],
                          cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model_dir = Path(env["SM_MODEL_DIR"])
    assert (model_dir / "card.json").is_file()
    assert any((Path(env["SM_OUTPUT_DATA_DIR"]) / "tensorboard").glob("events.*"))
    from core.pipeline import load_models
    models = load_models(model_dir)
    card = models.card
    assert card.name == "sagemaker-tiny" and card.trained_modalities == ["text"]
    assert card.text_encoder["context_turns"] == 2 and card.text_encoder["tuned_layers"] == [5]
    assert card.metrics["dev"]["rows"] == 28                      # the validation channel chose the epoch
    served = inference.model_fn(str(model_dir))                   # and the endpoint serves it
    assert served.card.name == "sagemaker-tiny" and served.weights_digest == models.weights_digest


def test_the_training_entry_fails_in_one_line(tmp_path):
    switches = {"quiet", "no-final-eval"}
    env = _sagemaker_env(tmp_path, validation=False)
    assert entry.command_line(env, ["--epochs", "3", "--quiet", "true"], switches) == [
        "--train", str(Path(env["SM_CHANNEL_TRAIN"]) / "train_sent_emo.csv"), "--out", env["SM_MODEL_DIR"],
        "--tb", str(Path(env["SM_OUTPUT_DATA_DIR"]) / "tensorboard"), "--threads", "1",
        "--epochs", "3", "--quiet"]
    assert entry.main(["--out", "/elsewhere"], env) == 1
    assert (Path(env["SM_OUTPUT_DIR"]) / "failure").read_text() == (
        "error: --out is set from the channels and SM_MODEL_DIR, not a hyperparameter.\n")
    assert entry.main([], {k: v for k, v in env.items() if k != "SM_CHANNEL_TRAIN"}) == 1
    assert "SM_CHANNEL_TRAIN is not set" in (Path(env["SM_OUTPUT_DIR"]) / "failure").read_text()
    shutil.copy(TINY, Path(env["SM_CHANNEL_TRAIN"]) / "more.csv")
    assert entry.main([], env) == 1
    assert "must hold one MELD-format CSV or one export zip (found: more.csv, train_sent_emo.csv)" in \
        (Path(env["SM_OUTPUT_DIR"]) / "failure").read_text()
    with pytest.raises(entry.EntryError, match="is a switch"):
        entry.hyperparameters(["--quiet", "maybe"], switches)


def test_the_training_entry_reads_clips_and_export_zips_from_the_channels(tmp_path):
    env = _sagemaker_env(tmp_path)
    train, dev = Path(env["SM_CHANNEL_TRAIN"]), Path(env["SM_CHANNEL_VALIDATION"])
    (train / "clips").mkdir()
    (train / "clips" / "dia0_utt0.mp4").write_bytes(b"a clip")      # clips beside the CSV: the clip path
    argv = entry.command_line(env, ["--modalities=text,audio"], set())
    assert argv[argv.index("--clips") + 1] == str(train) and "--dev-clips" not in argv
    assert argv[argv.index("--dev") + 1] == str(dev / "dev_sent_emo.csv")
    assert argv[-2:] == ["--modalities", "text,audio"]
    export = tmp_path / "export"
    export.mkdir()
    (export / "talk_dia0.zip").write_bytes(b"PK")                    # the app's export zip
    argv = entry.command_line({**env, "SM_CHANNEL_TRAIN": str(export)}, [], set())
    assert argv[:2] == ["--train", str(export / "talk_dia0.zip")] and "--clips" not in argv
