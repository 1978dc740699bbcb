"""jupyter_server's REST API with uvkernel kernels: sessions, kernels, restart, interrupt, kernel change,
start errors on every endpoint, the fallback kernel after a failed restart, and a server that keeps
answering while a cold start installs something.

One real ``jupyter server`` serves the whole module; each test uses its own project folder.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pytest

from e2e.support import (WsKernel, assert_readable, install_kernel_spec, keep_log, new_session, server_environment,
                         start_server, write_notebook)
from helpers import make_project

# one worker runs the whole module (pytest -n with --dist loadgroup): its server is started once
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-rest")]

DISPLAY = "Python (uvkernel e2e)"
NESTED = "nested/deeper/Mon Projet ünï"  # spaces and non-ASCII characters on the way
NOTEBOOK = f"{NESTED}/notebooks/Analyse é 1.ipynb"
FACTS = ("import json, os, sys, torch; print(json.dumps({'cwd': os.getcwd(), 'prefix': sys.prefix, "
         "'torch': torch.__file__, 'pid': os.getpid(), 'session': os.environ.get('JPY_SESSION_NAME')}))")


@pytest.fixture(scope="module")
def rest(tmp_path_factory, host_python):
    base = tmp_path_factory.mktemp("rest")
    env = server_environment(base / "home", host_python)
    install_kernel_spec(env, "uvk", host_python, display_name=DISPLAY)
    install_kernel_spec(env, "uvk-alt", host_python, display_name=DISPLAY + " alt")
    install_kernel_spec(env, "uvk-always", host_python, display_name=DISPLAY + " always",
                 settings={"fallback_kernel": "always"})
    install_kernel_spec(env, "uvk-strict", host_python, display_name=DISPLAY + " strict",
                 settings={"required_packages": ["torch", "uvkernel_e2e_missing"]})
    # a spec with a typo in its config, written by hand as a user would (the installer refuses it)
    spec = json.loads((Path(env["JUPYTER_DATA_DIR"]) / "kernels" / "uvk" / "kernel.json").read_text())
    spec["display_name"] = DISPLAY + " typo"
    spec["metadata"]["kernel_provisioner"]["config"]["require-cuda"] = "true"
    typo = Path(env["JUPYTER_DATA_DIR"]) / "kernels" / "uvk-typo"
    typo.mkdir()
    (typo / "kernel.json").write_text(json.dumps(spec))

    root = base / "root"
    make_project(root / NESTED, name="nested-project")
    write_notebook(root / NOTEBOOK, "print('hello')")
    make_project(root / "broken-python", requires_python=">=3.99")
    (root / "broken-toml").mkdir()
    (root / "broken-toml" / "pyproject.toml").write_text('[project]\nname = "broken"\ndependencies = ["oops"\n')
    make_project(root / "strict")
    make_project(root / "plain")
    server = start_server(root, env, log_path=base / "server.log")
    yield server
    server.stop()
    keep_log(server.log_path, "jupyter-server-rest.log")


def ws(server, kernel_id: str) -> WsKernel:
    return WsKernel(server, kernel_id).__enter__()


def facts(server, kernel_id: str) -> dict:
    k = ws(server, kernel_id)
    try:
        result = k.execute(FACTS)
    finally:
        k.close()
    assert result.error is None, result.error
    return json.loads(result.stdout.strip().splitlines()[-1])


def kernel_ids(server) -> set[str]:
    return {k["id"] for k in server.get("/api/kernels").json()}


def test_kernelspecs_list_uvkernel_specs(rest):
    specs = rest.get("/api/kernelspecs").json()["kernelspecs"]
    assert specs["uvk"]["spec"]["display_name"] == DISPLAY
    assert specs["uvk"]["spec"]["metadata"]["kernel_provisioner"]["provisioner_name"] == "uvkernel"


def test_session_lifecycle_in_nested_non_ascii_path(rest, host_torch_file):
    """Start, run, %uvkernel, interrupt, restart, kernel change and delete for a notebook whose path has
    nested folders, spaces and non-ASCII characters."""
    project = rest.root / NESTED
    r = new_session(rest, NOTEBOOK, "uvk")
    assert r.status_code == 201, r.text
    session = r.json()
    kernel_id = session["kernel"]["id"]
    try:
        first = facts(rest, kernel_id)
        assert first["cwd"] == str(project / "notebooks")
        assert first["prefix"] == str(project / ".venv")
        assert first["torch"] == host_torch_file
        assert first["session"].endswith("Analyse é 1.ipynb")

        k = ws(rest, kernel_id)
        try:
            report = k.execute("%uvkernel")
            assert report.error is None, report.error
            assert "text/html" in report.data[0]
            assert str(project / ".venv") in report.data[0]["text/plain"]
            assert host_torch_file.rsplit("/", 1)[0] in report.data[0]["text/plain"]

            # interrupt: a sleeping loop stops with KeyboardInterrupt; the kernel survives
            interrupted: list[int] = []

            def interrupt(_partial) -> None:
                interrupted.append(rest.post(f"/api/kernels/{kernel_id}/interrupt").status_code)

            t0 = time.monotonic()
            loop = k.execute("import time\nprint('looping', flush=True)\nfor _ in range(600):\n    time.sleep(0.1)",
                             on_busy=interrupt)
            assert interrupted == [204]
            assert loop.error is not None and loop.error["ename"] == "KeyboardInterrupt", loop
            assert time.monotonic() - t0 < 30
            assert k.execute("print(1 + 1)").stdout.strip() == "2"
        finally:
            k.close()

        r = rest.post(f"/api/kernels/{kernel_id}/restart")
        assert r.status_code == 200, r.text
        after = facts(rest, kernel_id)
        assert after["pid"] != first["pid"]
        assert (after["cwd"], after["prefix"], after["torch"]) == (first["cwd"], first["prefix"], first["torch"])

        # kernel change (JupyterLab's kernel picker): PATCH with another kernel name
        r = rest.patch(f"/api/sessions/{session['id']}", json={"kernel": {"name": "uvk-alt"}})
        assert r.status_code == 200, r.text
        changed = r.json()["kernel"]
        assert changed["name"] == "uvk-alt" and changed["id"] != kernel_id
        assert kernel_id not in kernel_ids(rest)  # the old kernel was shut down
        kernel_id = changed["id"]
        other = facts(rest, kernel_id)
        assert (other["cwd"], other["prefix"], other["torch"]) == (first["cwd"], first["prefix"], first["torch"])
    finally:
        assert rest.delete(f"/api/sessions/{session['id']}").status_code == 204
    assert kernel_id not in kernel_ids(rest)


def test_kernels_endpoint_with_nested_path(rest):
    r = rest.post("/api/kernels", json={"name": "uvk", "path": f"{NESTED}/notebooks"})
    assert r.status_code == 201, r.text
    kernel_id = r.json()["id"]
    try:
        got = facts(rest, kernel_id)
        assert got["cwd"] == str(rest.root / NESTED / "notebooks")
        assert got["prefix"] == str(rest.root / NESTED / ".venv")
    finally:
        assert rest.delete(f"/api/kernels/{kernel_id}").status_code == 204


# kind -> (kernel spec, folder, error code, fragments of the message)
FAILURES = {
    "requires-python": ("uvk", "broken-python", "REQUIRES_PYTHON_EXCLUDES_HOST",
                        [">=3.99", "broken-python/pyproject.toml", "How to fix: widen requires-python"]),
    "invalid-toml": ("uvk", "broken-toml", "PYPROJECT_INVALID", ["broken-toml/pyproject.toml", "Unclosed array",
                                                               "uvkernel never edits it"]),
    "preflight": ("uvk-strict", "strict", "TORCH_NOT_FOUND", ["uvkernel_e2e_missing is not importable"]),
    "spec-config": ("uvk-typo", "plain", "CONFIG_INVALID", ["require-cuda", "did you mean require_cuda?",
                                                            "uvk-typo/kernel.json"]),
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_start_errors_reach_every_endpoint(rest, kind):
    spec, folder, code, fragments = FAILURES[kind]
    before = kernel_ids(rest)

    # POST /api/sessions: JupyterLab opening a notebook
    r = new_session(rest, f"{folder}/nb.ipynb", spec)
    assert r.status_code == 500, r.text
    assert_readable(r.json()["message"], code, *fragments)

    # POST /api/kernels
    r = rest.post("/api/kernels", json={"name": spec, "path": folder})
    assert r.status_code == 500, r.text
    assert_readable(r.json()["message"], code, *fragments)
    assert kernel_ids(rest) == before  # nothing half-started is left listed

    # PATCH /api/sessions: a notebook open with the plain Python kernel, switched to the uvkernel one
    r = new_session(rest, f"{folder}/switch.ipynb", "python3")
    assert r.status_code == 201, r.text
    session = r.json()
    try:
        r = rest.patch(f"/api/sessions/{session['id']}", json={"kernel": {"name": spec}})
        assert r.status_code == 501, r.text
        message = r.json()["message"]
        prefix = f"The '{spec}' kernel could not be started: "
        assert message.startswith(prefix + "uvkernel:"), message  # no repr() quotes around our text
        assert_readable(message, code, *fragments)  # with jupyter_server's prefix, still fits the dialog
        assert rest.get(f"/api/sessions/{session['id']}").json()["kernel"]["id"] == session["kernel"]["id"]
    finally:
        rest.delete(f"/api/sessions/{session['id']}")


def test_fallback_always_shows_error_in_notebook(rest):
    """fallback_kernel = "always": even a first start that fails gives the notebook a kernel that shows why."""
    r = new_session(rest, "broken-python/always.ipynb", "uvk-always")
    assert r.status_code == 201, r.text
    session = r.json()
    try:
        k = ws(rest, session["kernel"]["id"])
        try:
            assert k.wait_ready()["implementation"] == "uvkernel-error"
            cell = k.execute("print('ran')")
        finally:
            k.close()
        assert cell.status == "error" and cell.stdout == ""
        assert "REQUIRES_PYTHON_EXCLUDES_HOST" in cell.stderr and "This cell was not run" in cell.stderr
    finally:
        rest.delete(f"/api/sessions/{session['id']}")


def _set_requires_python(project: Path, spec: str) -> None:
    make_project(project, requires_python=spec, name=project.name)


def test_failed_restart_starts_fallback_kernel_then_recovers(rest, host_torch_file):
    project = make_project(rest.root / "restart-proj")
    r = new_session(rest, "restart-proj/nb.ipynb", "uvk")
    assert r.status_code == 201, r.text
    session = r.json()
    kernel_id = session["kernel"]["id"]
    try:
        assert facts(rest, kernel_id)["torch"] == host_torch_file
        _set_requires_python(project, ">=3.99")  # the project breaks while the kernel runs
        # a package in the notebook's folder named like the fallback's own: the fallback runs in the server's
        # interpreter, so it must never import from the notebook's folder
        (project / "uvkernel").mkdir()
        (project / "uvkernel" / "__init__.py").write_text("open(__file__ + '.ran', 'w').close()\n")

        r = rest.post(f"/api/kernels/{kernel_id}/restart")
        assert r.status_code == 200, r.text  # not "Exception restarting kernel": a fallback kernel runs
        k = ws(rest, kernel_id)
        try:
            info = k.wait_ready()
            assert info["implementation"] == "uvkernel-error"
            assert "REQUIRES_PYTHON_EXCLUDES_HOST" in info["banner"]
            assert "debugger" not in info.get("supported_features", [])
            cell = k.execute("open('ran.txt', 'w').write('user code ran')")
            assert cell.status == "error"
            assert_readable(cell.stderr.split("\n\nThis cell was not run")[0], "REQUIRES_PYTHON_EXCLUDES_HOST",
                            ">=3.99", width=10_000)
            assert "This cell was not run: the kernel could not be started." in cell.stderr
            assert not (project / "ran.txt").exists()  # the fallback runs no code
            assert not (project / "uvkernel" / "__init__.py.ran").exists()
        finally:
            k.close()
        assert "kernel not started" in rest.log_path.read_text(errors="replace")

        _set_requires_python(project, ">=3.9")  # fixed: the next restart is a real kernel again
        r = rest.post(f"/api/kernels/{kernel_id}/restart")
        assert r.status_code == 200, r.text
        k = ws(rest, kernel_id)
        try:
            assert k.wait_ready()["implementation"] == "ipython"
        finally:
            k.close()
        assert facts(rest, kernel_id)["torch"] == host_torch_file
    finally:
        rest.delete(f"/api/sessions/{session['id']}")


def test_automatic_restart_after_crash_shows_fallback(rest):
    """A kernel that dies is restarted by jupyter_client; when the project broke meanwhile, the notebook
    gets the fallback kernel with the message instead of a kernel stuck in 'starting'."""
    project = make_project(rest.root / "crash-proj")
    r = new_session(rest, "crash-proj/nb.ipynb", "uvk")
    assert r.status_code == 201, r.text
    session = r.json()
    kernel_id = session["kernel"]["id"]
    try:
        k = ws(rest, kernel_id)
        pid = json.loads(k.execute("import os; print(os.getpid())").stdout)
        _set_requires_python(project, ">=3.99")
        k._send("execute_request", {"code": "import os; os._exit(1)", "silent": False, "store_history": False,
                                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
        k.close()
        deadline = time.monotonic() + 90
        info = {}
        while time.monotonic() < deadline:
            try:
                k = WsKernel(rest, kernel_id, timeout=10)
                info = k.wait_ready()
            except Exception:  # the websocket is refused or silent while the kernel restarts
                time.sleep(1)
                continue
            if info.get("implementation") == "uvkernel-error":
                break
            k.close()
            time.sleep(1)
        assert info.get("implementation") == "uvkernel-error", info
        try:
            cell = k.execute(f"print({pid})")
            assert "REQUIRES_PYTHON_EXCLUDES_HOST" in cell.stderr and cell.stdout == ""
        finally:
            k.close()
    finally:
        rest.delete(f"/api/sessions/{session['id']}")


def test_server_answers_while_cold_start_installs(rest):
    """GET /api/status stays prompt while a start creates an env and installs a dependency the host lacks."""
    project = make_project(rest.root / "cold-proj", dependencies=["tomli-w>=1.0"])
    result: dict = {}

    def start() -> None:
        t0 = time.monotonic()
        result["response"] = new_session(rest, "cold-proj/nb.ipynb", "uvk")
        result["seconds"] = time.monotonic() - t0

    starter = threading.Thread(target=start)
    starter.start()
    latencies = []
    while starter.is_alive():
        t0 = time.monotonic()
        assert rest.get("/api/status", timeout=30).status_code == 200
        latencies.append(time.monotonic() - t0)
        time.sleep(0.05)
    starter.join()
    r = result["response"]
    assert r.status_code == 201, r.text
    session = r.json()
    try:
        report = json.loads((project / ".venv" / ".uvkernel-report.json").read_text())
        assert "created" in report["env"]["actions"]
        assert any("tomli" in a for a in report["env"]["actions"]), report["env"]["actions"]
        k = ws(rest, session["kernel"]["id"])
        try:
            where = k.execute("import tomli_w; print(tomli_w.__file__)").stdout.strip()
        finally:
            k.close()
        assert where.startswith(str(project / ".venv"))
    finally:
        rest.delete(f"/api/sessions/{session['id']}")
    print(f"cold start {result['seconds']:.2f} s, {len(latencies)} samples, max {max(latencies):.3f}")
    assert len(latencies) >= 5, (latencies, result["seconds"])
    ordered = sorted(latencies)
    p99 = ordered[math.ceil(0.99 * len(ordered)) - 1]
    assert p99 < 0.5, f"GET /api/status p99 {p99:.3f} s during a {result['seconds']:.1f} s cold start: {ordered[-5:]}"
