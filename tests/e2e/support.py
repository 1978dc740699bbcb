"""What the end-to-end tests share: a server environment of its own, kernel specs, and a kernel client
that talks to a real server over its websocket (the path JupyterLab uses)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import REPO, CellResult  # noqa: E402
from servers import JupyterServer  # noqa: E402

ARTIFACTS = REPO / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"


def server_environment(base: Path, host_python: str) -> dict[str, str]:
    """A process environment with Jupyter folders, IPython folder and uvkernel cache under ``base``.

    Servers outlive a single test (one per module), so they get their own folders instead of the per-test
    ``isolated`` fixture's.  uv's download cache stays shared (it is keyed by content).
    """
    env = dict(os.environ)
    for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"), ("XDG_CACHE_HOME", "cache")):
        (base / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(base / sub)
    env["JUPYTER_PATH"] = str(base / "data")
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["UV_PYTHON_DOWNLOADS"] = "never"
    for var in ("UVKERNEL_HOST_PYTHON", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH", "UV_PYTHON"):
        env.pop(var, None)
    return env


def install_kernel_spec(env: dict[str, str], name: str, host_python: str, *, display_name: str | None = None,
                        settings: dict[str, Any] | None = None) -> Path:
    """``uvkernel install --user`` into the Jupyter data folder of ``env``; returns the spec folder."""
    args = [sys.executable, "-m", "uvkernel", "install", "--user", "--name", name, "--host-python", host_python]
    if display_name:
        args += ["--display-name", display_name]
    for key, value in (settings or {}).items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return Path(env["JUPYTER_DATA_DIR"]) / "kernels" / name


def start_server(root: Path, env: dict[str, str], app: str = "server", log_path: Path | None = None,
                 extra_args: list[str] | None = None) -> JupyterServer:
    args = list(extra_args or [])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")  # CI containers run as root
    return JupyterServer(root, app=app, env=env, extra_args=args, log_path=log_path).start()


def new_session(server: JupyterServer, path: str, kernel: str, **extra: Any):
    """POST /api/sessions as JupyterLab does (name = the notebook's file name)."""
    body = {"path": path, "type": "notebook", "name": path.rsplit("/", 1)[-1], "kernel": {"name": kernel}, **extra}
    return server.post("/api/sessions", json=body)


class WsKernel:
    """A kernel client over ``/api/kernels/<id>/channels``: the same path as a browser's messages."""

    def __init__(self, server: JupyterServer, kernel_id: str, timeout: float = 120):
        self.server = server
        self.kernel_id = kernel_id
        self.session = uuid.uuid4().hex
        url = server.url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels?session_id={self.session}"
        self.ws = websocket.create_connection(url, header=[f"Authorization: token {server.token}"], timeout=timeout)
        self.timeout = timeout

    def _send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": msg_type, "username": "test", "session": self.session,
                  "date": "", "version": "5.3"}
        self.ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": content,
                                 "channel": channel, "buffers": []}))
        return msg_id

    def _recv(self, deadline: float) -> dict[str, Any]:
        self.ws.settimeout(max(0.1, deadline - time.monotonic()))
        return json.loads(self.ws.recv())

    def wait_ready(self) -> dict[str, Any]:
        """Send kernel_info until the kernel answers; returns the reply's content."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg_id = self._send("kernel_info_request", {})
            inner = time.monotonic() + 5
            try:
                while time.monotonic() < inner:
                    msg = self._recv(min(inner, deadline))
                    if msg.get("parent_header", {}).get("msg_id") == msg_id and msg["channel"] == "shell":
                        return msg["content"]
            except websocket.WebSocketTimeoutException:
                continue
        raise TimeoutError(f"kernel {self.kernel_id} never answered kernel_info")

    def execute(self, code: str, timeout: float | None = None, on_busy=None) -> CellResult:
        msg_id = self._send("execute_request", {"code": code, "silent": False, "store_history": True,
                                                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
        deadline = time.monotonic() + (timeout or self.timeout)
        result = CellResult()
        idle = reply = False
        while not (idle and reply):
            msg = self._recv(deadline)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "execute_reply":
                result.status = content["status"]
                reply = True
            elif result.add(kind, content):
                idle = True
            elif kind == "stream" and on_busy is not None:
                on_busy(result)
                on_busy = None
        return result

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass

    def __enter__(self) -> "WsKernel":
        self.wait_ready()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def keep_log(path: Path, name: str) -> None:
    """Copy a server's log into test-artifacts/ (CI keeps it), e.g. to read a failed run's server side."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        (ARTIFACTS / name).write_bytes(path.read_bytes())
    except OSError:
        pass


def assert_readable(message: str, code: str, *fragments: str, width: int = 92) -> None:
    """A start error as a front end shows it: our text whole, real newlines, nothing doubled or lost."""
    assert f"[{code}]" in message, message
    assert "How to fix:" in message, message
    for fragment in fragments:
        assert fragment in " ".join(message.split()), (fragment, message)
    assert "\n" in message and "\\n" not in message, repr(message)  # newlines kept, not escaped by repr()
    assert "%%" not in message and "Unhandled error" not in message, message
    assert "Traceback" not in message, message
    # only a single backquoted command may be wider (it is never split: pasted split, it would break)
    too_long = [line for line in message.splitlines() if len(line) > width and " " in line.strip()
                and not (line.strip().startswith("`") and line.strip().endswith("`") and line.count("`") == 2)]
    assert not too_long, f"lines wider than the dialog: {too_long}"


def write_notebook(path: Path, *sources: str, kernel: str = "uvk", display_name: str = "") -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": display_name or kernel, "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


# --- the browser tests (JupyterLab, Notebook 7, a JupyterHub user's Lab) -------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# uvkernel's notifications as the page shows them (Lab's toasts)
TOASTS = ("() => [...document.querySelectorAll('.Toastify__toast')].map(t => t.innerText)"
          ".filter(t => t.includes('uvkernel'))")
STEP = re.compile(r"uvkernel: (.*) · (\d+):(\d\d)")


def chromium(playwright: Any) -> Any:
    """Debian's Chromium, headless, in a fresh profile; fails with the set-up command when it is missing."""
    import pytest

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh --e2e", pytrace=False)
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def quiet_lab_settings(folder: Path, env: dict[str, str]) -> None:
    """Lab's settings for a test server: no news or update checks, whose notifications would crowd uvkernel's."""
    target = folder / "@jupyterlab" / "apputils-extension"
    target.mkdir(parents=True)
    (target / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                         "checkForUpdates": False}))
    env["JUPYTERLAB_SETTINGS_DIR"] = str(folder)


@dataclass
class Watched:
    steps: list[str]  # each step the notification showed, in order (a repeat of the last one is not added)
    clocks: list[int]  # every elapsed time it showed, in seconds
    final: list[str]  # the notifications that ended the watch


def watch_start_progress(page: Any, *, timeout: float = 240, end: str = "env ready in",
                         on_step: Callable[[str], None] | None = None) -> Watched:
    """Reads uvkernel's notification every 250 ms, as a user watching it would, until one says ``end``;
    ``on_step`` hears each new step (to take a screenshot)."""
    watched = Watched([], [], [])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        texts = page.evaluate(TOASTS)
        for text in texts:
            match = STEP.search(text)
            if match:
                if not watched.steps or watched.steps[-1] != match.group(1):
                    watched.steps.append(match.group(1))
                    if on_step is not None:
                        on_step(match.group(1))
                watched.clocks.append(int(match.group(2)) * 60 + int(match.group(3)))
        watched.final = [t for t in texts if end in t]
        if watched.final:
            break
        page.wait_for_timeout(250)
    return watched
