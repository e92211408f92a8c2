"""Helpers more than one test module uses, in one place (test modules import this, never each
other): a free loopback port and a uvicorn server in a thread."""

from __future__ import annotations

import socket
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(app, timeout_s: float = 30) -> tuple[str, object, threading.Thread]:
    """``app`` served by uvicorn on a free loopback port in a daemon thread, once it answers:
    (its base URL, the server (set ``should_exit`` to stop it), the thread)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread
