"""Real servers started by the tests on loopback, and always stopped (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import requests


# Ports handed to a server that binds them later, after this process let go. They come from below the kernel's
# ephemeral range: a port that bind(0) hands out can be taken in between by any outgoing connection or ZeroMQ
# socket on the machine (the CI once lost a JupyterHub proxy that way), while one below the range is only ever
# taken by someone who asked for it by number.
def _below_ephemeral() -> range:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(10000, low - 12000), low) if low > 11000 else range(low, 65536)


_PORTS = _below_ephemeral()


def free_port() -> int:
    """A loopback port nobody listens on now, outside the range the kernel gives out by itself."""
    for port in random.Random().sample(_PORTS, 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {_PORTS.start}-{_PORTS.stop - 1}")


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM the process group, then SIGKILL it after ``timeout`` (a server can hang on SIGTERM)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


class LoggedServer:
    """A server process in its own session whose output goes to ``log_path``: launched until it answers, its log's
    tail for failure messages, stopped with its whole process group."""

    stop_timeout = 10.0

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    def launch(self, args: list[str], *, cwd: Path, env: dict[str, str], ready: Callable[[], bool], what: str,
               timeout: float, interval: float = 0.2) -> None:
        """Start ``args``; return once ``ready()`` is true, raise with the log when it exits or times out first."""
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited:\n{self.log()}")
            try:
                if ready():
                    return
            except requests.RequestException:
                pass
            time.sleep(interval)
        raise RuntimeError(f"{what} did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=self.stop_timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


class JupyterServer(LoggedServer):
    """``jupyter server`` (or ``jupyter lab``) from the dev env, serving ``root`` on 127.0.0.1."""

    def __init__(self, root: Path, app: str = "server", env: dict[str, str] | None = None,
                 extra_args: list[str] | None = None, log_path: Path | None = None):
        self.root = Path(root)
        self.app = app
        self.port = free_port()
        self.token = "uvkernel-test-token"
        self.env = dict(env or os.environ)
        self.extra_args = extra_args or []
        super().__init__(log_path or self.root.parent / f"jupyter-{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> "JupyterServer":
        args = [sys.executable, "-m", "jupyter", self.app, "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                f"--ServerApp.token={self.token}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={self.root}",
                "--ServerApp.disable_check_xsrf=True", *self.extra_args]
        self.launch(args, cwd=self.root, env=self.env, what=f"jupyter {self.app}", timeout=timeout,
                    ready=lambda: self.get("/api/status", timeout=2).status_code == 200)
        return self

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        headers["Authorization"] = f"token {self.token}"
        kwargs.setdefault("timeout", 300)
        return requests.request(method, self.url + path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def __enter__(self) -> "JupyterServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
