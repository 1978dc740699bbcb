"""Many kernels started at once through one real jupyter_server (as when a user opens many notebooks).

16 sessions for one project: all 16 kernels answer from the project's env, which was created exactly once and is
intact; 8 sessions for 8 projects: each kernel runs from its own env, each created once.  Every kernel is shut
down at the end, and the server is stopped with SIGTERM then SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hardening_support import check, env_packages
from helpers import make_project
from servers import JupyterServer

from uvkernel import env as stage2
from uvkernel import progress

KERNEL = "uvk-concurrent"
TIMEOUT = 600  # 2 cores, many kernels and uv at once: generous


@pytest.fixture(scope="module")
def server(tmp_path_factory, host_python, uv_cache_dir):
    base = tmp_path_factory.mktemp("concurrency")
    env = dict(os.environ)
    for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"), ("XDG_CACHE_HOME", "cache")):
        (base / sub).mkdir()
        env[var] = str(base / sub)
    env.update(JUPYTER_PATH=str(base / "data"), JUPYTER_PLATFORM_DIRS="1", UV_CACHE_DIR=uv_cache_dir,
               UV_PYTHON_DOWNLOADS="never")
    for var in ("UVKERNEL_HOST_PYTHON", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH", "UV_PYTHON"):
        env.pop(var, None)
    subprocess.run([sys.executable, "-m", "uvkernel", "install", "--user", "--name", KERNEL, "--host-python",
                    host_python], env=env, check=True, capture_output=True)
    (base / "work").mkdir()
    srv = JupyterServer(base / "work", env=env, extra_args=["--allow-root"], log_path=base / "server.log")
    srv.start(timeout=120)
    try:
        yield srv
    finally:
        _shutdown_all(srv)
        srv.stop()


def _shutdown_all(server: JupyterServer) -> None:
    try:
        for session in server.get("/api/sessions", timeout=30).json():
            server.delete(f"/api/sessions/{session['id']}", timeout=60)
        for kernel in server.get("/api/kernels", timeout=30).json():
            server.delete(f"/api/kernels/{kernel['id']}", timeout=60)
    except Exception:
        pass


def _notebook(path: Path) -> None:
    path.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def _start_all(server: JupyterServer, paths: list[str]) -> list[dict[str, Any]]:
    """POST /api/sessions for every path at the same moment (one thread each, released by a barrier)."""
    barrier = threading.Barrier(len(paths))
    results: list[Any] = [None] * len(paths)

    def one(i: int, path: str) -> None:
        barrier.wait()
        try:
            reply = server.post("/api/sessions", json={"path": path, "name": path.rsplit("/", 1)[-1],
                                                       "type": "notebook", "kernel": {"name": KERNEL}},
                                timeout=TIMEOUT)
            results[i] = reply.json() if reply.status_code == 201 else f"HTTP {reply.status_code}: {reply.text}"
        except Exception as exc:  # noqa: BLE001 - reported below with the others
            results[i] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT + 30)
    failed = [r for r in results if not isinstance(r, dict)]
    assert not failed, f"{len(failed)} of {len(paths)} sessions did not start:\n" + "\n".join(map(str, failed))
    return results


def _ask(server: JupyterServer, kernel_id: str) -> dict[str, str]:
    """Run code in a kernel (through its connection file) and return what it answered."""
    path = Path(server.env["JUPYTER_RUNTIME_DIR"]) / f"kernel-{kernel_id}.json"
    client = _ready_client(server, path)
    try:
        msg_id = client.execute("import os, sys, tomli_w", silent=True,
                                user_expressions={"prefix": "sys.prefix", "cwd": "os.getcwd()",
                                                  "dep": "tomli_w.__file__"})
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            reply = client.get_shell_msg(timeout=TIMEOUT)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        content = reply["content"]
        assert content["status"] == "ok", content
        return {k: v["data"]["text/plain"].strip("'") for k, v in content["user_expressions"].items()}
    finally:
        client.stop_channels()


def _connect(path: Path) -> Any:
    from jupyter_client import BlockingKernelClient

    client = BlockingKernelClient(connection_file=str(path))
    client.load_connection_file()
    client.start_channels()
    return client


def _ready_client(server: JupyterServer, path: Path) -> Any:
    """A client whose kernel answered kernel_info, asked until it does (BlockingKernelClient.wait_for_ready
    gives up on a kernel whose heartbeat has not started yet, which happens when many kernels start at once on
    two cores).

    A kernel that dies before it is first alive (a port it was given taken by another process before it bound
    it, with 16 kernels and their connections opening at once) is started again by the server on new ports,
    and its connection file rewritten: the file is read again whenever it changes, or the client would ask the
    old ports forever."""
    from queue import Empty

    deadline = time.monotonic() + TIMEOUT
    seen, client, reconnects = b"", None, 0
    while time.monotonic() < deadline:
        now = path.read_bytes()
        if now != seen:
            try:
                fresh = _connect(path)
            except ValueError:  # caught half-written
                time.sleep(0.2)
                continue
            if client is not None:
                client.stop_channels()
                reconnects += 1
            seen, client = now, fresh
        client.kernel_info()
        try:
            while True:
                if client.get_shell_msg(timeout=2)["msg_type"] == "kernel_info_reply":
                    return client
        except Empty:
            continue
    if client is not None:
        client.stop_channels()
    restarts = server.log_path.read_text(errors="replace").count("KernelRestarter: restarting kernel")
    pytest.fail(f"the kernel of {path.name} never answered kernel_info ({reconnects} reconnections after its "
                f"connection file changed; {restarts} kernel restarts in the server log)")


def _creations(server: JupyterServer, env: Path) -> int:
    return server.log_path.read_text(errors="replace").count(f"uvkernel: creating {env} from ")


def _stop(server: JupyterServer, sessions: list[dict[str, Any]]) -> None:
    for session in sessions:
        assert server.delete(f"/api/sessions/{session['id']}", timeout=120).status_code == 204
    deadline = time.monotonic() + 120
    while server.get("/api/kernels").json() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert server.get("/api/kernels").json() == [], "kernels were left running"


@pytest.mark.slow
@pytest.mark.e2e
def test_16_sessions_for_one_project_at_once(server, host_python):
    project = make_project(server.root / "shared", ["tomli-w"])
    paths = []
    for i in range(16):
        _notebook(project / f"nb{i}.ipynb")
        paths.append(f"shared/nb{i}.ipynb")
    sessions = _start_all(server, paths)
    try:
        env = project / ".venv"
        answers = [_ask(server, s["kernel"]["id"]) for s in sessions]
        assert len({s["kernel"]["id"] for s in sessions}) == 16
        for answer in answers:
            assert answer["prefix"] == str(env), answer
            assert answer["cwd"] == str(project), answer
            assert answer["dep"].startswith(str(env)), answer
        assert _creations(server, env) == 1, "the env was created more than once:\n" + server.log()
        assert "finishing the creation" not in server.log_path.read_text()
    finally:
        _stop(server, sessions)
    # nothing corrupted: one copy of the dependency, a valid state file, and the next start has nothing to do
    assert env_packages(env) == {"tomli-w": env_packages(env)["tomli-w"]}
    state = json.loads((env / ".uvkernel-state.json").read_text())
    assert state["fingerprint"] and not list(env.glob(".uvkernel-state.json*.tmp"))
    status, report, _ = check(project, "--host-python", host_python,
                              env={**server.env, "XDG_CACHE_HOME": server.env["XDG_CACHE_HOME"]})
    assert status == 0 and report["env"]["reused"] and report["env"]["actions"] == [], report


@pytest.mark.slow
@pytest.mark.e2e
def test_8_sessions_for_8_projects_at_once(server):
    projects = [make_project(server.root / f"p{i}", ["tomli-w"], name=f"p{i}") for i in range(8)]
    for project in projects:
        _notebook(project / "nb.ipynb")
    sessions = _start_all(server, [f"p{i}/nb.ipynb" for i in range(8)])
    try:
        by_path = {s["path"]: s for s in sessions}
        for i, project in enumerate(projects):
            answer = _ask(server, by_path[f"p{i}/nb.ipynb"]["kernel"]["id"])
            assert answer["prefix"] == str(project / ".venv"), answer
            assert answer["dep"].startswith(str(project / ".venv")), answer
            assert _creations(server, project / ".venv") == 1
    finally:
        _stop(server, sessions)
    for project in projects:
        assert "tomli-w" in env_packages(project / ".venv")


def test_a_start_that_waits_for_the_envs_lock_says_so_then_goes_on(tmp_path):
    """Another start holds the env's lock (it is building the env): this one tells the phase hook it waits, and
    goes back to preparing the env once it holds the lock; with the lock free it says nothing of the kind."""
    env_path, cache = tmp_path / "proj" / ".venv", tmp_path / "cache"

    async def main() -> list[str]:
        heard: list[str] = []
        reporter = progress.Reporter(lambda step: heard.append(step.phase) if step.kind == progress.PHASE else None)
        with reporter.observing():
            async with stage2.locked(env_path, cache, 30):
                heard.append("inside (free lock)")
            other = stage2.lock_for(env_path, cache)  # another start's hold: its own open file, so flock refuses us
            other.acquire()

            async def start() -> None:
                async with stage2.locked(env_path, cache, 30):
                    heard.append("inside")

            task = asyncio.ensure_future(start())
            await asyncio.sleep(0.5)
            assert heard == ["inside (free lock)", "waiting for another start"], heard
            other.release()
            await asyncio.wait_for(task, 30)
        return heard

    assert asyncio.run(main()) == ["inside (free lock)", "waiting for another start", "preparing the env", "inside"]
