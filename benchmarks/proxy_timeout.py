"""A 90-second first start through Debian's nginx: what a REST client and JupyterLab (headless Chromium) see.

Hub deployments often put nginx in front of the single-user servers; nginx's ``proxy_read_timeout`` defaults to
60 s, and POST /api/sessions answers only once the kernel has started.  This script starts a real ``jupyter lab``
(uvkernel's kernel spec, its server extension and its JupyterLab extension) behind a real nginx and opens a
notebook whose env needs a build that sleeps BUILD seconds (an sdist with its own PEP 517 backend, from a
``file://`` URL, with a fresh uv cache: the same work every run, offline).

Scenarios (``--scenarios``, comma-separated; all by default):

- ``rest-default``: nginx as shipped (no timeout set), a client doing what JupyterLab does: subscribed to
  /api/events/subscribe, then POST /api/sessions; when nginx answers 504 it posts again (a user retrying).
  Recorded: every answer and event with its time, when nginx closed the event socket, the kernels and sessions
  the server ends up with, how many times the sdist was built.
- ``browser-default``: JupyterLab in headless Chromium through the same nginx opening the notebook: the
  notifications, dialogs and the kernel indicator second by second, screenshots, then a reload of the page.
- ``browser-recommended``: the same with the settings docs/jupyterhub.md recommends.

Run after ``bash scripts/setup.sh --e2e`` and ``apt-get install nginx-light`` (or ``nginx``)::

    .venv/bin/python benchmarks/proxy_timeout.py            # about 8 minutes; --build 90 by default

It writes ``benchmarks/results/proxy_timeout.json`` (every observation) and ``proxy_timeout.md`` (the
timelines), screenshots into ``test-artifacts/screenshots/proxy-*.png``, and prints the timelines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
import websocket

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
from e2e.support import WsKernel, install_kernel_spec, server_environment, write_notebook  # noqa: E402
from helpers import make_project  # noqa: E402
from index_support import slow_sdist  # noqa: E402
from servers import JupyterServer, free_port, stop_process  # noqa: E402

SCHEMA = "https://jupyter-uvkernel.invalid/events/kernel-start/v1"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DISPLAY = "Python (uvkernel)"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
    log_format timed '$msec $status $request_time "$request"';
    access_log {base}/nginx-access.log timed;
    client_body_temp_path {base}/tmp/body;
    proxy_temp_path {base}/tmp/proxy;
    fastcgi_temp_path {base}/tmp/fastcgi;
    uwsgi_temp_path {base}/tmp/uwsgi;
    scgi_temp_path {base}/tmp/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
{extra}        }}
    }}
}}
"""
# what docs/jupyterhub.md recommends beyond the websocket headers above
RECOMMENDED = """\
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
            client_max_body_size 0;
"""


class Nginx:
    def __init__(self, base: Path, upstream: int, extra: str = ""):
        self.base = base
        self.port = free_port()
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (base / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        self.conf = base / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(base=base, port=self.port, upstream=upstream, extra=extra))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Nginx":
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            sys.exit("nginx is missing: apt-get install nginx-light")
        self.proc = subprocess.Popen([nginx, "-p", str(self.base), "-c", str(self.conf)], start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=open(self.base / "nginx-stderr.log", "wb"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/api/status", timeout=2)
                return self
            except requests.RequestException:
                time.sleep(0.2)
        sys.exit(f"nginx did not start: {(self.base / 'nginx-stderr.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def websockets(self) -> list[str]:
        """The websockets nginx proxied, as it logged them when they closed: how long each lived."""
        lines = (self.base / "nginx-access.log").read_text(errors="replace").splitlines()
        return [" ".join(line.split()[1:]) for line in lines if line.split()[1:2] == ["101"]]

    def error_lines(self, pattern: str) -> list[str]:
        text = (self.base / "nginx-error.log").read_text(errors="replace")
        return [line for line in text.splitlines() if re.search(pattern, line)]


def nginx_version() -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}", "nginx-light", "nginx-core", "nginx",
                           "nginx-full"], capture_output=True, text=True)
    return "; ".join(line for line in done.stdout.splitlines() if line.strip()) or "unknown"


class Scenario:
    """One fresh notebook whose env needs a BUILD-second build, and a clock starting at the first request."""

    def __init__(self, name: str, server: JupyterServer, build: float):
        self.name = name
        self.server = server
        version = f"1.0.{uuid.uuid4().int % 10**9}"
        self.builds = server.root / f"{name}-builds.txt"
        sdist = slow_sdist(server.root / "wheels", "slowproxy", version, build, counter=self.builds)
        self.project = make_project(server.root / name, [f"slowproxy @ {sdist.as_uri()}"])
        write_notebook(self.project / "nb.ipynb", "import slowproxy, sys\nprint(sys.prefix, slowproxy.BUILT_SLOWLY)",
                       kernel="uvk", display_name=DISPLAY)
        self.path = f"{name}/nb.ipynb"
        self.t0 = time.monotonic()
        self.timeline: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def note(self, what: str) -> None:
        with self.lock:
            self.timeline.append((self.now(), what))
        print(f"  [{self.name}] {self.now():6.1f} s  {what}", flush=True)

    def outcome(self) -> dict[str, Any]:
        """What the server ends with (asked directly, not through nginx): every session of this scenario's folder
        (JupyterLab names a session by a temporary path until its kernel has started), every kernel."""
        sessions = [s for s in self.server.get("/api/sessions").json() if s["path"].startswith(self.name + "/")]
        builds = len(self.builds.read_text().splitlines()) if self.builds.exists() else 0
        creations = self.server.log_path.read_text(errors="replace").count(
            f"uvkernel: creating {self.project / '.venv'} from ")
        return {"sessions": [{"path": s["path"], "kernel": s["kernel"]["id"][:8],
                              "state": s["kernel"]["execution_state"], "connections": s["kernel"]["connections"]}
                             for s in sessions],
                "kernels_on_server": len(self.server.get("/api/kernels").json()),
                "sdist_builds": builds, "env_creations": creations}

    def cleanup(self) -> None:
        for session in self.server.get("/api/sessions").json():
            if session["path"].startswith(self.name + "/"):
                self.server.delete(f"/api/sessions/{session['id']}")
        for kernel in self.server.get("/api/kernels").json():
            self.server.delete(f"/api/kernels/{kernel['id']}")


def rest(server: JupyterServer, nginx: Nginx, build: float) -> dict[str, Any]:
    sc = Scenario("rest-default", server, build)
    headers = {"Authorization": f"token {server.token}"}
    ws_url = nginx.url.replace("http://", "ws://") + "/api/events/subscribe"
    socket_state = {"closed_at": None, "reason": "", "ending": False}
    phases_by_kernel: dict[str, list[str]] = {}

    def listen() -> None:
        ws = websocket.create_connection(ws_url, header=[f"Authorization: token {server.token}"], timeout=None)
        sc.note("event socket open (through nginx)")
        try:
            while True:
                event = json.loads(ws.recv())
                if event.get("schema_id") != SCHEMA or event.get("path") != sc.path:
                    continue
                kernel = event["kernel_id"][:8]
                phases = phases_by_kernel.setdefault(event["kernel_id"], [])
                if not phases or phases[-1] != event["phase"] or event["state"] in ("ready", "error"):
                    phases.append(event["phase"])
                    extra = f": {event.get('summary') or event['step']}" if event["state"] != "progress" else ""
                    sc.note(f"event kernel {kernel} {event['state']} phase={event['phase']!r}{extra}")
        except Exception as exc:  # noqa: BLE001 - the close is what is measured
            socket_state["closed_at"] = sc.now()
            socket_state["reason"] = f"{type(exc).__name__}: {exc}" + (
                " (nginx stopped: the scenario is over)" if socket_state["ending"] else "")
            sc.note(f"event socket closed: {socket_state['reason']}")

    threading.Thread(target=listen, daemon=True).start()
    time.sleep(1)
    answers = []
    body = {"path": sc.path, "type": "notebook", "name": "nb.ipynb", "kernel": {"name": "uvk"}}
    for attempt in (1, 2):
        sc.note(f"POST /api/sessions #{attempt} through nginx")
        t = time.monotonic()
        reply = requests.post(nginx.url + "/api/sessions", json=body, headers=headers, timeout=900)
        took = round(time.monotonic() - t, 1)
        head = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", reply.text)).strip()[:120]
        sc.note(f"POST #{attempt} answered {reply.status_code} after {took} s: {head}")
        answers.append({"attempt": attempt, "status": reply.status_code, "seconds": took, "body": head})
        if reply.status_code != 504:
            break
    deadline = time.monotonic() + 60  # the first start goes on in the server: wait until its kernel is up
    while time.monotonic() < deadline and len(server.get("/api/kernels").json()) < len(answers):
        time.sleep(1)
    time.sleep(2)
    ran = []
    for session in server.get("/api/sessions").json():  # each kernel the server ended with, asked to run the cell
        if session["path"].startswith(sc.name + "/"):
            with WsKernel(server, session["kernel"]["id"], timeout=120) as kernel:
                out = kernel.execute("import slowproxy, sys; print(sys.prefix, slowproxy.BUILT_SLOWLY)")
            ran.append(out.stdout.strip() or str(out.error))
            sc.note(f"kernel {session['kernel']['id'][:8]} (asked directly) ran the cell: {ran[-1]}")
    socket_state["ending"] = True
    result = {"answers": answers, "cells_run": ran, "event_socket": socket_state, "phases_by_kernel": list(phases_by_kernel.values()),
              "timeline": sc.timeline, **sc.outcome(),
              "nginx_timeouts": nginx.error_lines("timed out")}
    sc.cleanup()
    return result


OBSERVE = """() => {
  const panel = '.jp-NotebookPanel:not(.lm-mod-hidden) ';
  const text = s => (s || '').replace(/\\s+/g, ' ').trim();
  return {
    toasts: [...document.querySelectorAll('.Toastify__toast')].map(t => text(t.innerText)),
    dialogs: [...document.querySelectorAll('.jp-Dialog')].map(d => text(d.innerText).slice(0, 300)),
    kernel: text(document.querySelector(panel + '.jp-Toolbar-kernelName')?.textContent),
    status: document.querySelector(panel + '.jp-Notebook-ExecutionIndicator')?.dataset.status || '',
  };
}"""


def browser(server: JupyterServer, nginx: Nginx, build: float, name: str, watch: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    sc = Scenario(name, server, build)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    seen: dict[tuple[str, str], float] = {}
    shots: list[str] = []

    def observe(page, label: str = "") -> dict[str, Any]:
        state = page.evaluate(OBSERVE)
        for key in ("toasts", "dialogs"):
            for item in state[key]:
                norm = re.sub(r"· \d+:\d\d", "· m:ss", item)
                if (key, norm) not in seen:
                    seen[(key, norm)] = sc.now()
                    sc.note(f"{key[:-1]}: {item}")
        ks = f"kernel {state['kernel']!r} {state['status']!r}"
        if ("kernel", ks) not in seen:
            seen[("kernel", ks)] = sc.now()
            sc.note(f"{label}{ks}")
        return state

    def shot(page, what: str) -> None:
        path = SCREENSHOTS / f"proxy-{name}-{what}.png"
        page.screenshot(path=str(path))
        shots.append(str(path.relative_to(REPO)))

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = b.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(120_000)
        page = context.new_page()
        sc.note("open the notebook in JupyterLab through nginx")
        page.goto(f"{nginx.url}/lab/tree/{sc.path}?reset&token={server.token}")
        page.wait_for_selector(".jp-Notebook")
        shot_at = {30: "30s", 70: "70s"}
        ready_at = None
        while sc.now() < watch:
            state = observe(page)
            for at, what in list(shot_at.items()):
                if sc.now() >= at:
                    shot(page, what)
                    del shot_at[at]
            if state["dialogs"] and not any(s.endswith("-dialog.png") for s in shots):
                shot(page, "dialog")
            if ready_at is None and state["status"] == "idle" and state["kernel"] == DISPLAY:
                ready_at = sc.now()
            if ready_at is not None and sc.now() - ready_at > 15:
                break
            page.wait_for_timeout(1000)
        shot(page, "end")
        before_reload = sc.outcome()
        sc.note(f"server side before any reload: {before_reload}")
        reload = {}
        if not (state["status"] == "idle" and state["kernel"] == DISPLAY) or state["dialogs"]:
            sc.note("reload the page (what a user does next)")
            page.reload()
            page.wait_for_selector(".jp-Notebook")
            t = time.monotonic()
            while time.monotonic() - t < 60:
                state = observe(page, "after reload: ")
                if state["status"] == "idle" and state["kernel"] == DISPLAY and not state["dialogs"]:
                    break
                page.wait_for_timeout(1000)
            shot(page, "after-reload")
            reload = {"kernel": state["kernel"], "status": state["status"], "dialogs": state["dialogs"],
                      **sc.outcome()}
        context.close()
        b.close()
    result = {"timeline": sc.timeline, "screenshots": shots, "before_reload": before_reload,
              "after_reload": reload, "nginx_timeouts": nginx.error_lines("timed out")}
    sc.cleanup()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=float, default=90, help="seconds the sdist's build sleeps")
    parser.add_argument("--scenarios", default="rest-default,browser-default,browser-recommended")
    parser.add_argument("--host-python", default=os.environ.get("UVKERNEL_TEST_HOST") or shutil.which("python3"))
    args = parser.parse_args()
    host = subprocess.run([args.host_python, "-c", "import sys; print(sys.executable)"], capture_output=True,
                          text=True, check=True).stdout.strip()
    base = Path(tempfile.mkdtemp(prefix="uvkernel-proxy-"))
    env = server_environment(base / "home", host)
    env["UV_CACHE_DIR"] = str(base / "uv-cache")  # fresh: the sdist is built, never taken from a cache
    install_kernel_spec(env, "uvk", host, display_name=DISPLAY)
    settings = base / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                           "checkForUpdates": False}))
    env["JUPYTERLAB_SETTINGS_DIR"] = str(base / "lab-settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(base / "workspaces")
    (base / "root").mkdir()
    extra = ["--allow-root"] if os.geteuid() == 0 else []
    server = JupyterServer(base / "root", app="lab", env=env, extra_args=extra, log_path=base / "lab.log").start(120)
    results: dict[str, Any] = {"build_seconds": args.build, "nginx": nginx_version(), "host_python": host,
                               "machine": f"{os.cpu_count()} cores", "scenarios": {}}
    try:
        for name in args.scenarios.split(","):
            print(f"{name}:", flush=True)
            nginx = Nginx(base / f"nginx-{name}", server.port, RECOMMENDED if name.endswith("recommended") else "")
            nginx.start()
            try:
                if name == "rest-default":
                    results["scenarios"][name] = rest(server, nginx, args.build)
                else:
                    results["scenarios"][name] = browser(server, nginx, args.build, name, args.build + 120)
            finally:
                nginx.stop()
            if name in results["scenarios"]:  # logged when they closed, so read once nginx is stopped
                results["scenarios"][name]["websockets_through_nginx"] = nginx.websockets()
    finally:
        server.stop()
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "proxy_timeout.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    lines = [f"# A {args.build:.0f}-second first start behind nginx ({results['nginx']})", ""]
    for name, result in results["scenarios"].items():
        lines += [f"## {name}", "", "| s | what |", "|---|---|"]
        lines += [f"| {t} | {what.replace('|', '/')} |" for t, what in result["timeline"]]
        rest_of = {k: v for k, v in result.items() if k not in ("timeline",)}
        lines += ["", "```", json.dumps(rest_of, indent=1, default=str), "```", ""]
    (out / "proxy_timeout.md").write_text("\n".join(lines))
    print("\n".join(lines))
    logs = REPO / "test-artifacts"
    for log in [base / "lab.log", *base.glob("nginx-*/nginx-error.log")]:
        shutil.copy(log, logs / f"proxy-{log.parent.name if log.parent != base else 'jupyter'}-{log.name}")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
