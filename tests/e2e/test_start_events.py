"""A kernel start's progress through a real jupyter_server's event bus (/api/events/subscribe), as JupyterLab's
extension hears it: phases, uv's counts and "Building X" while uv runs, elapsed time, then ready or the error."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import websocket

from e2e.support import install_kernel_spec, keep_log, new_session, server_environment, start_server, write_notebook
from helpers import make_project
from index_support import slow_sdist

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-events")]

SCHEMA = "https://jupyter-uvkernel.invalid/events/kernel-start/v1"
BUILD_SECONDS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory, host_python):
    base = tmp_path_factory.mktemp("events")
    env = server_environment(base / "home", host_python)
    install_kernel_spec(env, "uvk", host_python)
    root = base / "root"
    root.mkdir()
    srv = start_server(root, env, log_path=base / "server.log")
    yield srv
    srv.stop()
    keep_log(srv.log_path, "jupyter-server-events.log")


def _subscribe(server) -> websocket.WebSocket:
    url = server.url.replace("http://", "ws://") + "/api/events/subscribe"
    return websocket.create_connection(url, header=[f"Authorization: token {server.token}"], timeout=5)


def _start_and_listen(server, path: str, timeout: float = 240) -> tuple[list[dict], list[float], object]:
    """POST /api/sessions in a thread (it answers only once the start is over) while the socket collects events."""
    ws = _subscribe(server)  # subscribed before the start: it hears the whole start
    answer: dict = {}
    poster = threading.Thread(target=lambda: answer.update(r=new_session(server, path, "uvk")), daemon=True)
    poster.start()
    events, arrived = [], []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                event = json.loads(ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if event.get("schema_id") != SCHEMA:
                continue
            events.append(event)
            arrived.append(time.monotonic())
            if event["state"] in ("ready", "error"):
                break
    finally:
        ws.close()
    poster.join(timeout)
    return events, arrived, answer.get("r")


def test_a_long_first_start_publishes_its_phases_uv_counts_and_the_summary(server, host_python):
    version = f"1.0.{uuid.uuid4().int % 10**9}"  # uv caches built wheels: a version of its own each run
    sdist = slow_sdist(server.root / "wheels", "slowbuild", version, BUILD_SECONDS)
    project = make_project(server.root / "proj", [f"slowbuild @ {sdist.as_uri()}"])
    write_notebook(project / "nb.ipynb", "import slowbuild")
    events, arrived, response = _start_and_listen(server, "proj/nb.ipynb")
    assert response is not None and response.status_code == 201, response and response.text
    kernel_id = response.json()["kernel"]["id"]

    assert events and events[0]["state"] == "start" and events[-1]["state"] == "ready", events
    assert {e["kernel_id"] for e in events} == {kernel_id}
    assert {e["path"] for e in events} == {"proj/nb.ipynb"}  # relative to the server's root, as Lab names it
    phases = [e["phase"] for e in events]
    for phase in ("finding the project", "creating the env", "building", "checking the host stack", "ready"):
        assert phase in phases, phases
    # uv's own lines while it ran, not its output read after it exited
    building = next(e for e in events if e["phase"] == "building")
    assert building["step"] == f"building slowbuild @ {sdist.as_uri()}" or "building slowbuild" in building["step"]
    after = events[events.index(building) + 1:]
    assert any(e["counts"].get("built") == 1 for e in after), after
    assert any(e["counts"].get("installed") for e in after), after
    assert any(e["counts"].get("resolved") for e in events), events
    # the build's event came while the build ran: the next one at least the build's time later
    gap = arrived[events.index(building) + 1] - arrived[events.index(building)]
    assert gap >= BUILD_SECONDS - 1, gap
    elapsed = [e["elapsed"] for e in events]
    assert elapsed == sorted(elapsed) and elapsed[-1] >= BUILD_SECONDS, elapsed
    assert "env ready in" in events[-1]["summary"] and "env " in events[-1]["summary"]
    # a few a second at most, however many lines uv writes
    seconds = max(arrived[-1] - arrived[0], 1.0)
    assert len(events) / seconds < 12, (len(events), seconds)

    # the env is there now: a second start has no build, its events say so at once
    server.delete(f"/api/sessions/{response.json()['id']}")
    again, _arrived, response = _start_and_listen(server, "proj/nb.ipynb")
    assert response.status_code == 201 and again[-1]["state"] == "ready"
    assert "building" not in [e["phase"] for e in again] and again[-1]["elapsed"] < BUILD_SECONDS
    server.delete(f"/api/sessions/{response.json()['id']}")


def test_a_refused_start_publishes_the_coded_error_with_its_fix(server):
    bad = make_project(server.root / "bad", requires_python=">=3.99")
    write_notebook(bad / "nb.ipynb", "print(1)")
    events, _arrived, response = _start_and_listen(server, "bad/nb.ipynb")
    assert response.status_code == 500
    last = events[-1]
    assert last["state"] == "error" and last["code"] == "REQUIRES_PYTHON_EXCLUDES_HOST", events
    assert last["path"] == "bad/nb.ipynb" and last["phase"] == "failed"
    assert "[REQUIRES_PYTHON_EXCLUDES_HOST]" in last["message"] and "How to fix:" in last["message"]
    assert last["fix"] and last["fix"] in " ".join(last["message"].split())
