"""Start the workbench in-process on a free port, for the tests that talk to a live server."""

from __future__ import annotations

import socket


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
