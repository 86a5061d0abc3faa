"""Hardening, part 2: the running server under abuse, load and crashes.

* bad API payloads and over-limit uploads get one-line errors; the server keeps serving and a session
  saved before is untouched;
* 8 gradio_client sessions at once each analyse (real Whisper, face and model) and correct; none sees
  another's annotations;
* `python app.py` killed with SIGKILL in the middle of annotating, restarted (with a login this time):
  every acknowledged correction is there.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.labels import EMOTIONS, SENTIMENTS
from core.limits import Limits
from tests import mediagen
from tests.serving import free_port, start_app, stop_app
from webapp import owners

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hardening-test-token-0123456789"


def one_line(message: str) -> str:
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


# ====================================================================== one in-process server

@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    from tests.test_webapp import make_session
    from webapp.service import ModelHolder, Workbench
    from webapp.session import set_field
    from webapp.ui import build_app, launch_kwargs
    wb = Workbench(ModelHolder(models=models), tmp_path_factory.mktemp("server-data"),
                   Limits(max_upload_mb=1, max_seconds=60))
    saved = wb.store.create(make_session(), owners.for_token(TOKEN))
    saved, _ = wb.store.update(saved.id, lambda s: (set_field(s, 1, "speaker", "Ann"), ""))
    demo = build_app(wb)
    demo.queue().launch(prevent_thread_lock=True, server_port=free_port(), quiet=True, **launch_kwargs(wb))
    yield demo, wb, saved.id, saved.to_dict()
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client
    return Client(server[0].local_url, verbose=False, headers={owners.TOKEN_HEADER: TOKEN})


@pytest.fixture
def untouched(server, client):
    """After the test: the server still answers and the session saved before is exactly as it was."""
    yield
    _, wb, sid, before = server
    assert wb.store.load(sid).to_dict() == before
    assert sid in [s["id"] for s in client.predict(api_name="/sessions")]


def _file_data(path: str) -> dict:
    """A FileData that names a server path directly instead of uploading it."""
    return {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": Path(path).name}


# name -> (api_name, args given the saved session id, words the error must hold)
PAYLOADS = {
    "session id with ../": ("/edit", lambda sid: ("../../etc/passwd", 0, "emotion", "joy"), "not a session id"),
    "unknown session": ("/edit", lambda sid: ("0123456789abcdef", 0, "emotion", "joy"), "no session"),
    "empty session id": ("/session", lambda sid: ("",), "not a session id"),
    "field not editable": ("/edit", lambda sid: (sid, 0, "__class__", "x"), "cannot be edited"),
    "row out of range": ("/edit", lambda sid: (sid, 999, "emotion", "joy"), "no utterance"),
    "negative row": ("/edit", lambda sid: (sid, -1, "emotion", "joy"), "no utterance"),
    "formula as label": ("/edit", lambda sid: (sid, 0, "emotion", "=cmd|' /C calc'!A0"), "not an emotion"),
    "NaN time": ("/edit", lambda sid: (sid, 0, "start", "NaN"), "not a time"),
    "huge time": ("/edit", lambda sid: (sid, 0, "end", "1e308"), "days"),
    "endless text as time": ("/edit", lambda sid: (sid, 0, "end", "9" * 100_000 + "x"), "not a time"),
    "split outside": ("/split", lambda sid: (sid, 0, "77"), "not inside"),
    "merge the last": ("/merge", lambda sid: (sid, 2), ""),
    "undo unknown": ("/undo", lambda sid: ("fedcba9876543210",), "no session"),
    "export unknown": ("/export", lambda sid: ("fedcba9876543210",), "no session"),
    "analyze nothing": ("/analyze", lambda sid: (None,), "no file"),
    "analyze a server path": ("/analyze", lambda sid: (_file_data("/etc/passwd"),), ""),
    "import nothing": ("/import_meld", lambda sid: (None, None), "no csv"),
}


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_bad_api_payloads(name, server, client, untouched):
    from gradio_client.exceptions import AppError
    _, wb, sid, _ = server
    api_name, args, needle = PAYLOADS[name]
    n_sessions = len(wb.store.list())
    with pytest.raises(Exception) as err:
        client.predict(*args(sid), api_name=api_name)
    if isinstance(err.value, AppError):
        assert needle.lower() in one_line(str(err.value)).lower()
    else:          # refused by Gradio itself before our code (e.g. a path that was never uploaded)
        assert api_name == "/analyze" and needle == "", repr(err.value)
    assert len(wb.store.list()) == n_sessions


@pytest.mark.parametrize("kind", ["png as csv", "too long", "too big"])
def test_bad_files_through_the_server(kind, server, client, untouched, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    if kind == "png as csv":
        path = tmp_path / "table.csv"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
        call, needle = (handle_file(str(path)), None), "binary"
    elif kind == "too long":                                # 90 s of 1 fps 16x16 video, over max_seconds=60
        path = tmp_path / "long.mp4"
        mediagen.ffmpeg("-f", "lavfi", "-i", "color=c=black:s=16x16:r=1", "-t", "90", "-c:v", "libx264",
                        "-preset", "ultrafast", str(path))
        call, needle = (handle_file(str(path)),), "WORKBENCH_MAX_SECONDS"
    else:                                                   # 1.5 MB, over max_upload_mb=1
        path = tmp_path / "big.mp4"
        path.write_bytes(os.urandom(1_500_000))
        call, needle = (handle_file(str(path)),), ""
    api_name = "/import_meld" if len(call) == 2 else "/analyze"
    with pytest.raises(Exception) as err:
        client.predict(*call, api_name=api_name)
    message = str(err.value)
    if kind == "too big":                                   # Gradio refuses the upload itself
        assert "size" in message.lower() or "413" in message or "large" in message.lower(), message
    else:
        assert isinstance(err.value, AppError) and needle.lower() in one_line(message).lower()


# ====================================================================== 8 sessions at once

# one clip per client, two short spoken sentences each: (sentence, a word Whisper must hear in it)
CLIENT_SPEECH = [(("Kids are talking by the door.", "door"), ("Bring me a cup of tea.", "tea")),
                 (("My sister plays the piano.", "piano"), ("The soup is hot.", "soup")),
                 (("Please close the window.", "window"), ("The train leaves at noon.", "train")),
                 (("I really love this new song.", "song"), ("Feed the cat.", "cat")),
                 (("Where did you put my keys?", "keys"), ("The garden needs water.", "garden")),
                 (("That was a terrible movie.", "movie"), ("Our teacher wrote a letter.", "letter")),
                 (("We are going to the beach.", "beach"), ("The doctor will call you.", "doctor")),
                 (("My brother bought a red car.", "brother"), ("The bus is late again.", "bus"))]
EIGHT_CLIENTS_TIMEOUT = 900     # seconds for the whole test: a hang fails here instead of blocking CI


@pytest.fixture(scope="module")
def eight_clips(tmp_path_factory):
    """Eight short talking videos (a still face under two spoken sentences), each with other words."""
    if not mediagen.have_espeak():
        pytest.fail("espeak-ng is required for the speech tests: apt-get install espeak-ng")
    folder = tmp_path_factory.mktemp("eight")
    face = mediagen.face_image(folder / "face.png")
    clips = []
    for k, speech in enumerate(CLIENT_SPEECH):
        wav, _ = mediagen.speech_with_pauses([s for s, _ in speech], folder / f"speech{k}.wav",
                                             pause=1.2, lead=0.3)
        clips.append(mediagen.talking_video(wav, folder / f"talk{k}.mp4", image=face, size="320x180"))
    return clips


def _server_stacks() -> str:
    """Where the server's threads are (for a failure message when a call does not come back)."""
    import traceback
    where = []
    for frame in sys._current_frames().values():
        stack = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_stack(frame)
                 if "/core/" in f.filename or "/webapp/" in f.filename or "/whisper/" in f.filename]
        if stack:
            where.append(" <- ".join(reversed(stack[-6:])))
    return "\n".join(where) or "(no thread in core/, webapp/ or whisper/)"


def test_eight_clients_at_once(server, eight_clips):
    """Eight gradio_client sessions analyse (real Whisper, face and model, one analysis at a time on the
    server) and correct at once; each reads back exactly its own work and nothing of the others'."""
    from gradio_client import Client, handle_file
    url, wb = server[0].local_url, server[1]
    deadline = time.monotonic() + EIGHT_CLIENTS_TIMEOUT

    def call(client, *args, api_name):
        return client.submit(*args, api_name=api_name).result(timeout=max(1.0, deadline - time.monotonic()))

    def work(k: int) -> dict:
        c = Client(url, verbose=False)
        sid, analysed = call(c, handle_file(str(eight_clips[k])), api_name="/analyze")
        assert len(analysed) == 2, (k, analysed)
        r = k % 2                                        # half the clients correct row 0, half row 1
        emotion = next(e for e in EMOTIONS[k % 7:] + EMOTIONS if e != analysed[r]["emotion"])
        sentiment = next(s for s in SENTIMENTS if s != analysed[r]["sentiment"])
        edits = {"emotion": emotion, "sentiment": sentiment, "speaker": f"Annotator {k}",
                 "text": f"corrected by client {k}"}
        for field, value in edits.items():
            call(c, sid, r, field, value, api_name="/edit")
        return dict(sid=sid, row=r, edits=edits, analysed=analysed, read=call(c, sid, api_name="/session"))

    t0 = time.monotonic()
    pool = ThreadPoolExecutor(8)
    futures = [pool.submit(work, k) for k in range(8)]
    try:
        results = [f.result(timeout=max(1.0, deadline - time.monotonic())) for f in futures]
    except TimeoutError:
        pytest.fail(f"8 clients did not finish in {EIGHT_CLIENTS_TIMEOUT} s; server threads:\n{_server_stacks()}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    elapsed = time.monotonic() - t0

    assert len({res["sid"] for res in results}) == 8
    words = [[w for _, w in speech] for speech in CLIENT_SPEECH]
    for k, res in enumerate(results):
        heard = " ".join(row["text"] for row in res["analysed"]).lower()
        assert words[k][0] in heard, (k, heard)              # its own speech, really transcribed
        rows, r = res["read"], res["row"]
        assert [row["id"] for row in rows] == [0, 1]
        mine = rows[r]
        assert {f: mine[f] for f in res["edits"]} == res["edits"], (k, mine)
        assert set(res["edits"]) <= set(mine["corrected"])
        assert rows[1 - r] == res["analysed"][1 - r]          # the other row: exactly as analysed
        seen = " ".join(f"{row['text']} {row['speaker']}" for row in rows).lower()
        seen_words = set(re.findall(r"[a-z]+", seen))
        for j in set(range(8)) - {k}:                         # nothing of any other client
            assert f"client {j}" not in seen and f"annotator {j}" not in seen, (k, j, seen)
            assert not seen_words & set(words[j]), (k, j, seen)
        stored = wb.store.load(res["sid"])                    # and that is what was saved
        assert stored.rows[r].text == res["edits"]["text"] and stored.version >= 4
    print(f"8 clients, real analyses: {elapsed:.1f} s")


# ====================================================================== SIGKILL mid-annotation

def _start(data: Path, port: int, log: Path, **env) -> subprocess.Popen:
    return start_app(data, port, log, WORKBENCH_PRELOAD="0", **env)


def test_the_api_reads_each_line_alone_when_asked(server, client, eight_clips):
    """/analyze takes `neighbours` (default True: the lines read as one conversation); False reads
    each utterance's words alone, and the session says so."""
    from gradio_client import handle_file
    wb = server[1]
    sid, rows = client.predict(handle_file(str(eight_clips[0])), api_name="/analyze")
    assert len(rows) == 2 and "words" not in wb.store.load(sid).model
    alone_sid, alone = client.predict(handle_file(str(eight_clips[0])), False, api_name="/analyze")
    assert [r["text"] for r in alone] == [r["text"] for r in rows]
    assert wb.store.load(alone_sid).model["words"] == "each utterance alone"


def test_sigkill_mid_annotation_loses_no_acknowledged_correction(tmp_path):
    from gradio_client import Client, handle_file
    n = 40
    csv = tmp_path / "dialogue.csv"
    csv.write_text("Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,StartTime,EndTime\n" +
                   "".join(f'line {i},Ann,neutral,neutral,5,{i},"0:00:{i:02d},000","0:00:{i:02d},800"\n'
                           for i in range(n)), encoding="utf-8")
    data, log = tmp_path / "data", tmp_path / "server.log"
    port = free_port()
    proc = _start(data, port, log)
    try:
        c = Client(f"http://127.0.0.1:{port}/", verbose=False, headers={owners.TOKEN_HEADER: TOKEN})
        (sid,), _ = c.predict(handle_file(str(csv)), None, api_name="/import_meld")
        acked: list[tuple[int, str, str]] = []
        stop = threading.Event()

        def annotate():
            for i in range(n):
                for field, value in (("emotion", EMOTIONS[i % 7] if EMOTIONS[i % 7] != "neutral" else "joy"),
                                     ("speaker", f"Speaker {i}")):
                    if stop.is_set():
                        return
                    try:
                        c.predict(sid, i, field, value, api_name="/edit")
                    except Exception:
                        return                       # the server died under this call: not acknowledged
                    acked.append((i, field, value))

        worker = threading.Thread(target=annotate)
        worker.start()
        deadline = time.time() + 120
        while len(acked) < 15 and worker.is_alive() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)            # mid-annotation: the worker is still editing
        proc.wait(timeout=30)
        stop.set()
        worker.join(timeout=60)
        assert 15 <= len(acked) < 2 * n, len(acked)
    finally:
        stop_app(proc)

    port = free_port()                    # restart, behind logins (env variables); ann is an admin
    proc = _start(data, port, log, WORKBENCH_AUTH="ann:s3cret,bob:b0b", WORKBENCH_ADMIN="ann")
    try:
        with pytest.raises(Exception):
            Client(f"http://127.0.0.1:{port}/", verbose=False).predict(sid, api_name="/session")
        with pytest.raises(Exception, match="no session"):     # bob is not the owner
            Client(f"http://127.0.0.1:{port}/", verbose=False, auth=("bob", "b0b")).predict(sid, api_name="/session")
        c = Client(f"http://127.0.0.1:{port}/", verbose=False, auth=("ann", "s3cret"))
        rows = c.predict(sid, api_name="/session")
        assert len(rows) == n
        for i, field, value in acked:
            assert rows[i][field] == value, (i, field, value, rows[i])
        c.predict(sid, 0, "sentiment", "positive", api_name="/edit")     # and it goes on working
    finally:
        stop_app(proc)
