"""``GET /api/status`` latency of a real jupyter_server while a kernel starts through it.

A thread sends one request after another (keep-alive session, 10 ms apart) for the whole time a session is
being created and its kernel comes up; every latency is kept.  The request loop is bounded in count and time.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import requests

MAX_SAMPLES = 20000


class StatusPoller:
    def __init__(self, url: str, token: str, interval: float = 0.01):
        self.url = url + "/api/status"
        self.headers = {"Authorization": f"token {token}"}
        self.interval = interval
        self.samples: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set() and len(self.samples) < MAX_SAMPLES:
                t0 = time.perf_counter()
                try:
                    session.get(self.url, headers=self.headers, timeout=10).raise_for_status()
                    self.samples.append(time.perf_counter() - t0)
                except requests.RequestException:
                    self.errors += 1
                self._stop.wait(self.interval)

    def __enter__(self) -> "StatusPoller":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(15)


def wait_ready(server: Any, kernel_id: str, timeout: float = 300) -> None:
    """Connect to the kernel through its connection file and wait for a kernel_info reply.

    (jupyter_server keeps reporting execution_state "starting" until a front end connects a websocket.)
    """
    from jupyter_client import BlockingKernelClient
    from jupyter_core.paths import jupyter_runtime_dir

    path = os.path.join(server.env.get("JUPYTER_RUNTIME_DIR") or jupyter_runtime_dir(), f"kernel-{kernel_id}.json")
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no connection file {path}")
        time.sleep(0.02)
    client = BlockingKernelClient(connection_file=path)
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        client.stop_channels()


def start_session_and_wait(server: Any, path: str, kernel: str, timeout: float = 300) -> dict[str, Any]:
    """POST /api/sessions as JupyterLab does, then wait until the kernel reports idle; returns the session."""
    t0 = time.perf_counter()
    reply = server.post("/api/sessions", json={"path": path, "name": path.rsplit("/", 1)[-1], "type": "notebook",
                                               "kernel": {"name": kernel}}, timeout=timeout)
    reply.raise_for_status()
    session = reply.json()
    wait_ready(server, session["kernel"]["id"], timeout)
    session["seconds"] = time.perf_counter() - t0
    return session
