"""A kernel start's progress through a real jupyter_server's event bus (/api/events/subscribe), as JupyterLab's
extension hears it: phases, uv's counts and "Building X" while uv runs, elapsed time, then ready or the error."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import websocket

from e2e.support import (WsKernel, install_kernel_spec, keep_log, new_session, server_environment, start_server,
                         write_notebook)
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


WAIT_BUILD_SECONDS = 20


def test_a_second_start_during_the_build_waits_for_it_and_builds_nothing(server):
    """A user retries a start that is still building (a proxy gave up on the first request): the second POST
    /api/sessions for the same notebook waits on the env's lock and then starts at once; the env is built once."""
    version = f"1.1.{uuid.uuid4().int % 10**9}"
    builds = server.root / "twice-builds.txt"
    sdist = slow_sdist(server.root / "wheels", "slowtwice", version, WAIT_BUILD_SECONDS, counter=builds)
    project = make_project(server.root / "twice", [f"slowtwice @ {sdist.as_uri()}"])
    write_notebook(project / "nb.ipynb", "import slowtwice")
    ws = _subscribe(server)
    answers: dict[str, object] = {}

    def post(key: str) -> None:
        answers[key] = new_session(server, "twice/nb.ipynb", "uvk")

    threads = [threading.Thread(target=post, args=("first",), daemon=True)]
    threads[0].start()
    events: list[dict] = []
    arrived: list[float] = []
    deadline = time.monotonic() + 400
    first_id = ""
    ended: dict[str, float] = {}
    try:
        while time.monotonic() < deadline and len(ended) < 2:
            try:
                event = json.loads(ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if event.get("schema_id") != SCHEMA or event.get("path") != "twice/nb.ipynb":
                continue
            events.append(event)
            arrived.append(time.monotonic())
            if event["phase"] == "building" and len(threads) == 1:
                first_id = event["kernel_id"]  # the build is under way: the user tries again
                threads.append(threading.Thread(target=post, args=("second",), daemon=True))
                threads[1].start()
            if event["state"] in ("ready", "error"):
                ended[event["kernel_id"]] = time.monotonic()
    finally:
        ws.close()
    for t in threads:
        t.join(300)
    assert len(threads) == 2, f"the build never began: {events}"
    first, second = answers.get("first"), answers.get("second")
    assert first is not None and first.status_code == 201, first and first.text
    assert second is not None and second.status_code == 201, second and second.text
    first_kernel, second_kernel = first.json()["kernel"]["id"], second.json()["kernel"]["id"]
    try:
        assert first_kernel == first_id and second_kernel != first_kernel
        mine = [e for e in events if e["kernel_id"] == second_kernel]
        phases = [e["phase"] for e in mine]
        assert mine and mine[-1]["state"] == "ready", mine
        # it said it waited, and did none of the build's work itself
        assert "waiting for another start" in phases, phases
        for busy in ("creating the env", "resolving", "building", "installing"):
            assert busy not in phases, phases
        # one build of the sdist, one creation of the env
        assert len(builds.read_text().splitlines()) == 1, builds.read_text()
        env = project / ".venv"
        assert server.log_path.read_text(errors="replace").count(f"uvkernel: creating {env} from ") == 1
        # it waited during the build, and was ready soon after the first: far sooner than another build
        waiting_at = arrived[events.index(next(e for e in mine if e["phase"] == "waiting for another start"))]
        assert waiting_at < ended[first_kernel], "the second start did not wait for the first"
        assert ended[second_kernel] - ended[first_kernel] < WAIT_BUILD_SECONDS, (ended, first_kernel)
        # and it is a working kernel on the env the first built
        with WsKernel(server, second_kernel, timeout=240) as kernel:
            result = kernel.execute("import slowtwice, sys; print(sys.prefix, slowtwice.BUILT_SLOWLY)")
        assert result.stdout.strip() == f"{env} True", result
    finally:
        for answer in (first, second):
            server.delete(f"/api/sessions/{answer.json()['id']}")
