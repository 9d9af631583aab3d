"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import socket
import threading

import pytest


@pytest.fixture(scope="session")
def bwrap():
    """The bwrap isolation; without it a test fails on CI (CI=true) and is skipped elsewhere."""
    from reproducer import sandbox

    found = sandbox.detect()
    if not found.bwrap:
        message = f"bwrap cannot run here: {found.reason}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
def listener():
    """A real TCP server on 127.0.0.1 that answers b'pong' to every connection (a positive control)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.sendall(b"pong")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()
