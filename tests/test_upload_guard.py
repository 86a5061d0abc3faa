"""Uploads cannot fill the server's disk (webapp/upload_guard.py): attacks on a running app.

Gradio stores whatever is posted to /gradio_api/upload before any handler runs, so a loop of posts
could fill a public Space's disk without analysing anything. These tests post to a live server
(no models needed: nothing is analysed) with small limits set in the environment."""

from __future__ import annotations

import http.client
import uuid
from pathlib import Path

import pytest

from tests.serving import free_port
from webapp.upload_guard import MB, UploadLedger


def _server(tmp_path: Path, monkeypatch, **env):
    from webapp.service import ModelHolder, Workbench
    from webapp.ui import build_app, launch_kwargs
    uploads = tmp_path / "gradio-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    wb = Workbench(ModelHolder(checkpoint=None), tmp_path / "data")
    demo = build_app(wb)
    demo.queue().launch(prevent_thread_lock=True, server_port=free_port(), quiet=True, **launch_kwargs(wb))
    return demo, uploads


def _post(demo, payload: bytes, name: str = "clip.wav", chunked: bool = False) -> tuple[int, dict, str]:
    """POST one file to /gradio_api/upload as a browser does (multipart), optionally without a length."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    host, port = demo.local_url.split("//")[1].rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    try:
        if chunked:
            pieces = (body[i:i + 65536] for i in range(0, len(body), 65536))
            conn.request("POST", "/gradio_api/upload", body=pieces, headers=headers, encode_chunked=True)
        else:
            conn.request("POST", "/gradio_api/upload", body=body, headers=headers)
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read().decode(errors="replace")
    except (ConnectionError, http.client.HTTPException) as err:   # refused mid-stream: the server closed
        return 0, {}, str(err)
    finally:
        conn.close()


def _stored(uploads: Path) -> list[Path]:
    return [p for p in uploads.rglob("*") if p.is_file()] if uploads.exists() else []


def test_an_address_over_its_hourly_upload_allowance_is_refused_and_nothing_is_stored(tmp_path, monkeypatch):
    demo, uploads = _server(tmp_path, monkeypatch, WORKBENCH_UPLOAD_MB_PER_HOUR="1", WORKBENCH_DISK_RESERVE_MB="0")
    try:
        status, _, _ = _post(demo, b"a" * (600 * 1024))
        assert status == 200 and len(_stored(uploads)) == 1           # within the allowance: stored
        status, headers, text = _post(demo, b"b" * (600 * 1024))
        assert status == 429 and "1 MB per hour" in text and int(headers["retry-after"]) > 3500
        status, _, _ = _post(demo, b"c" * (1536 * 1024), chunked=True)  # no length: counted as it comes
        assert status in (0, 429)
        kept = _stored(uploads)                # the refused ones: none whole; Gradio's partial file of
        assert len([p for p in kept if p.name == "clip.wav"]) == 1    # the streamed one is cut at the
        assert sum(p.stat().st_size for p in kept) < 1.05 * MB         # allowance, and swept later
        status, _, text = _post(demo, b"d" * 1024)     # the bytes cut short counted: the hour is used up
        assert status == 429 and "try again in" in text
    finally:
        demo.close()


def test_no_upload_is_stored_when_the_disk_is_short_of_its_reserve(tmp_path, monkeypatch):
    demo, uploads = _server(tmp_path, monkeypatch, WORKBENCH_DISK_RESERVE_MB=str(10 ** 12))   # an exabyte
    try:
        status, _, text = _post(demo, b"x" * 2048)
        assert status == 507 and "disk space" in text
        assert _stored(uploads) == []
        assert _post(demo, b"y" * 2048, chunked=True)[0] in (0, 507)
        assert _stored(uploads) == []
    finally:
        demo.close()


def test_a_bad_allowance_in_the_environment_stops_the_app_in_one_line(tmp_path, monkeypatch):
    from webapp.service import ModelHolder, Workbench
    from webapp.ui import launch_kwargs
    monkeypatch.setenv("WORKBENCH_UPLOAD_MB_PER_HOUR", "lots")
    with pytest.raises(ValueError, match="WORKBENCH_UPLOAD_MB_PER_HOUR='lots' is not a number"):
        launch_kwargs(Workbench(ModelHolder(checkpoint=None), tmp_path / "data"))


def test_partial_uploads_left_behind_are_swept_once_abandoned(tmp_path):
    import os
    from webapp.upload_guard import sweep_abandoned
    folder = tmp_path / "gradio"
    (folder / "abc123").mkdir(parents=True)
    done = folder / "abc123" / "tmpkept.wav"                          # a finished upload (a sub-folder)
    stale, fresh = folder / "tmpab12cd", folder / "tmpef34gh"          # partial files Gradio left
    for p in (done, stale, fresh):
        p.write_bytes(b"x" * 100)
    os.utime(stale, (1000.0, 1000.0))
    os.utime(done, (1000.0, 1000.0))
    assert sweep_abandoned(folder, idle_s=600, now=fresh.stat().st_mtime + 10) == 1
    assert not stale.exists() and fresh.exists() and done.exists()
    assert sweep_abandoned(tmp_path / "missing") == 0


def test_the_allowance_is_a_sliding_hour():
    now = [0.0]
    ledger = UploadLedger(10 * MB, clock=lambda: now[0])
    assert ledger.wait("a", 11 * MB) == float("inf")                 # more than an hour's worth: never
    ledger.record("a", 6 * MB)
    now[0] = 600.0
    ledger.record("a", 3 * MB)
    assert ledger.wait("a", 1 * MB) == 0.0 and ledger.wait("b", 10 * MB) == 0.0
    assert ledger.wait("a", 2 * MB) == pytest.approx(3000.0)          # when the 6 MB leave the window
    assert ledger.wait("a", 8 * MB) == pytest.approx(3600.0)          # when both have left
    now[0] = 3600.0
    assert ledger.wait("a", 7 * MB) == 0.0
    assert UploadLedger(0).wait("a", 10 ** 12) == 0.0                 # 0: off
