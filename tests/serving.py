"""Start the workbench in-process on a free port, for the tests that talk to a live server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_workbench(models, data_dir, limits=None):
    """(demo, workbench) serving on a free port with already-loaded models; close with demo.close()."""
    from webapp.service import ModelHolder, Workbench
    from webapp.ui import build_app, launch_kwargs
    wb = Workbench(ModelHolder(models=models), data_dir, *([limits] if limits is not None else []))
    demo = build_app(wb)
    demo.queue().launch(prevent_thread_lock=True, server_port=free_port(), quiet=True, **launch_kwargs(wb))
    return demo, wb


def path_without(*programs: str) -> str:
    """$PATH less every folder holding one of `programs` (e.g. a system ffprobe), as on a fresh machine."""
    keep = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not any(os.path.exists(os.path.join(d, p)) for p in programs)]
    path = os.pathsep.join(keep)
    assert all(shutil.which(p, path=path) is None for p in programs)
    return path


def start_app(data: Path, port: int, log: Path, *args: str, timeout: float = 180, **env) -> subprocess.Popen:
    """`python app.py --port PORT --data DATA [args]` in a child process, once it answers HTTP."""
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--data", str(data), *args],
                            cwd=ROOT, env={**os.environ, **env}, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app.py exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"app.py did not start: {log.read_text()[-2000:]}")


def stop_app(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
