"""The workbench behind a SageMaker endpoint: the four functions the PyTorch serving container calls.

    model_fn(model_dir)               the models, once per worker: the checkpoint in model_dir
                                      (card.json + model.safetensors, as sagemaker/train.py writes
                                      it), else the shipped one
    input_fn(body, content_type)      application/json {"video_path": "talk.mp4"}: a file in the
                                      input folder; video/* or audio/*: the file's own bytes;
                                      "neighbours": false in the JSON, or "; neighbours=false"
                                      after the media type, reads each line's words alone
    predict_fn(data, model)           core.pipeline.analyze: the app's analysis
    output_fn(prediction, accept)     application/json {"utterances": [{start, end, text, emotion,
                                      emotion_probs, sentiment, sentiment_probs, modalities}], ...}

What comes in is held to the app's limits (core.limits: WORKBENCH_MAX_UPLOAD_MB, _SECONDS, _PIXELS)
before any model sees it. `video_path` reads only inside the folder named by WORKBENCH_INPUT_DIR
(a mounted volume, say); without that variable it is refused, and a path that leads outside the
folder (`..`, an absolute path elsewhere, a symbolic link out) is refused too, so a caller cannot
read the server's other files. A bad request is one line with its HTTP status (400, 403, 404, 406,
413, 415); the toolkit adds its traceback below that line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

HERE = Path(__file__).resolve().parent
# In the container, code/ holds this file with core/ and assets/ beside it; in a checkout, the
# project is one folder up.
for _root in (HERE, HERE.parent):
    if (_root / "core").is_dir():
        if str(_root) not in sys.path:
            sys.path.insert(0, str(_root))
        break

from core.checkpoint import CARD_FILE  # noqa: E402
from core.labels import EMOTIONS, SENTIMENTS  # noqa: E402
from core.limits import Limits  # noqa: E402
from core.media import LimitError  # noqa: E402
from core.types import Analysis, UserError  # noqa: E402

INPUT_DIR_ENV = "WORKBENCH_INPUT_DIR"
JSON = "application/json"
MEDIA_TYPES = ("video/", "audio/")
MAX_JSON_BYTES = 64 * 1024

try:                    # in the serving container: the toolkit answers with this error's status
    from sagemaker_inference.errors import GenericInferenceToolkitError as _ToolkitError
except ImportError:     # here: the same shape
    class _ToolkitError(Exception):
        def __init__(self, status_code, message=None, phrase=None):
            super().__init__(status_code, message, phrase)
            self.status_code, self.message, self.phrase = status_code, message, phrase


class RequestError(_ToolkitError):
    """A request the endpoint refuses: one line for the caller, and an HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(status, message, HTTPStatus(status).phrase)

    def __str__(self) -> str:
        return self.message


@dataclass
class Request:
    """A media file ready for analysis."""

    path: Path
    name: str               # what the response calls it: the video_path given, or "request body"
    temporary: bool         # the body's bytes staged here: removed after the analysis
    dialogue: bool = True   # False: each utterance's words read alone (the app's unticked box)


def model_fn(model_dir: str):
    """Load Whisper, the text encoder, the face net and the checkpoint in `model_dir` (the shipped
    one when model_dir holds no card.json)."""
    from core.pipeline import load_models
    folder = Path(model_dir)
    return load_models(str(folder) if (folder / CARD_FILE).is_file() else None)


def input_fn(body, content_type: str) -> Request:
    """The media file a request names or carries, checked against the limits, and whether its
    lines are read with their neighbours (the default) or alone."""
    kind, *parameters = [part.strip() for part in (content_type or "").split(";")]
    kind = kind.lower()
    limits = Limits.from_env()
    if kind == JSON:
        data = _read_json(body)
        dialogue = _neighbours(data.get("neighbours", True))
        request = _from_path(data, limits)
        request.dialogue = dialogue
        return request
    if kind.startswith(MEDIA_TYPES):
        dialogue = _neighbours(_parameter(parameters, "neighbours", "true"))
        request = _from_bytes(body, limits)
        request.dialogue = dialogue
        return request
    raise RequestError(f"Content type {kind or 'none'} is not accepted: send {JSON} with "
                       '{"video_path": ...} or the video\'s bytes as video/*.', 415)


def predict_fn(data: Request, model) -> Analysis:
    """The pipeline's analysis of the file (a staged body is removed afterwards)."""
    from core.pipeline import analyze
    try:
        analysis = analyze(data.path, model, dialogue=data.dialogue)
    except UserError as err:        # unreadable media, a transcription that failed: the caller's file
        raise RequestError(str(err), 400) from None
    finally:
        if data.temporary:
            shutil.rmtree(data.path.parent, ignore_errors=True)
    analysis.source = analysis.media.path = data.name       # never a server path
    return analysis


def output_fn(prediction: Analysis, accept: str | None) -> tuple[str, str]:
    """(JSON body, content type): each utterance with its fused emotion and sentiment, their
    probabilities, and what each modality says on its own."""
    kinds = {a.split(";")[0].strip().lower() for a in (accept or JSON).split(",")}
    if not kinds & {JSON, "*/*", "application/*", ""}:
        raise RequestError(f"Only {JSON} responses are made (Accept: {accept}).", 406)
    return json.dumps(response(prediction)), JSON


def response(analysis: Analysis) -> dict:
    """The endpoint's answer as a dict (probabilities keyed by label)."""
    def labelled(probs, names):
        return {n: round(p, 6) for n, p in zip(names, probs)}

    utterances = []
    for p in analysis.utterances:
        u = p.utterance
        utterances.append({
            "index": p.index, "start": round(u.start, 3), "end": round(u.end, 3), "text": u.text,
            "emotion": p.emotion, "emotion_probs": labelled(p.emotion_probs, EMOTIONS),
            "sentiment": p.sentiment, "sentiment_probs": labelled(p.sentiment_probs, SENTIMENTS),
            "modalities": {o.modality: {"present": o.present, "emotion": o.emotion,
                                        "emotion_probs": labelled(o.emotion_probs, EMOTIONS),
                                        "sentiment": o.sentiment,
                                        "sentiment_probs": labelled(o.sentiment_probs, SENTIMENTS),
                                        "used_in_fusion": o.used_in_fusion, "fusion_share": o.fusion_share,
                                        "note": o.note}
                           for o in p.opinions},
            "error": p.error})
    return {"source": analysis.source, "duration": analysis.media.duration, "model": analysis.model,
            "message": analysis.message, "utterances": utterances}


# ---------------------------------------------------------------- reading requests

def _read_json(body) -> dict:
    raw = body.encode() if isinstance(body, str) else bytes(body or b"")
    if len(raw) > MAX_JSON_BYTES:
        raise RequestError(f"The JSON request is over {MAX_JSON_BYTES // 1024} KB.", 413)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RequestError('The request is not valid JSON: send {"video_path": "NAME"}.') from None
    if not isinstance(data, dict) or not isinstance(data.get("video_path"), str) or not data["video_path"].strip():
        raise RequestError('The JSON request needs "video_path": the name of a file in the input folder.')
    return data


def _parameter(parameters: list[str], name: str, default: str) -> str:
    """A media type parameter's value ("video/mp4; neighbours=false"), else the default."""
    for part in parameters:
        key, _, value = part.partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return default


def _neighbours(value) -> bool:
    """The "neighbours" option: true (read each line with the lines around it) or false (alone)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise RequestError('"neighbours" must be true or false (false reads each line\'s words alone).')


def input_folder() -> Path:
    """The one folder `video_path` may read from (WORKBENCH_INPUT_DIR), resolved."""
    folder = os.environ.get(INPUT_DIR_ENV, "").strip()
    if not folder:
        raise RequestError(f"video_path is switched off on this endpoint ({INPUT_DIR_ENV} is not set): "
                           "send the video's bytes as video/* instead.", 403)
    return Path(folder).resolve()


def _from_path(data: dict, limits: Limits) -> Request:
    given = data["video_path"]
    if "\0" in given:
        raise RequestError("video_path holds a NUL character.")
    root = input_folder()
    path = (root / given).resolve()             # follows `..` and symbolic links before the check
    if not path.is_relative_to(root):
        raise RequestError("video_path must name a file inside the input folder.", 403)
    if not path.is_file():
        raise RequestError(f"No such file in the input folder: {Path(given).name}.", 404)
    _check(path, limits)
    return Request(path, given, temporary=False)


def _from_bytes(body, limits: Limits) -> Request:
    raw = body.encode("latin-1") if isinstance(body, str) else body
    if not raw:
        raise RequestError("The request body is empty: send the video's bytes.")
    if limits.max_bytes is not None and len(raw) > limits.max_bytes:
        raise RequestError(f"The video is {len(raw) / 2**20:.1f} MB; the limit is {limits.max_upload_mb:g} MB "
                           "(WORKBENCH_MAX_UPLOAD_MB).", 413)
    folder = Path(tempfile.mkdtemp(prefix="request-"))
    path = folder / "request.media"             # ffmpeg reads what it is from the content
    try:
        path.write_bytes(raw)
        _check(path, limits)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Request(path, "request body", temporary=True)


def _check(path: Path, limits: Limits) -> None:
    from core.media import MediaError
    try:
        limits.check_media(path)
    except LimitError as err:
        raise RequestError(str(err), 413) from None
    except MediaError as err:
        raise RequestError(str(err), 400) from None
