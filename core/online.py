"""Is a download host reachable? A quick TCP connect, so that a machine without internet fails
fast with a clear message instead of waiting on a dead network."""

from __future__ import annotations

import socket
from urllib.parse import urlparse


def reachable(url: str, timeout: float = 5.0) -> bool:
    """True when the host of `url` accepts a connection on port 443 within `timeout` seconds."""
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
