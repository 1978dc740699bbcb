"""A real JupyterHub on loopback (configurable-http-proxy from npm, a dummy login, LocalProcessSpawner) with
two throwaway Unix users: each user's server lists the system-wide uvkernel spec and runs notebooks in a
project in the user's home; envs and caches belong to their user, are private (0700), and the other user
cannot read them.

The hub loads share/jupyterhub_config.py (the example admins copy) and overrides only ports, the login, the
users and where the "system-wide" kernel spec lives.  Needs root (useradd, setuid spawns); the users, their
homes and every process they ran are removed afterwards.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from e2e.support import TOASTS, WsKernel, chromium, keep_log, watch_start_progress, write_notebook
from helpers import REPO, make_project
from index_support import slow_sdist
from servers import LoggedServer, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-jupyterhub")]

BIN = Path(sys.executable).parent
CHP = REPO / "build" / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
EXAMPLE = REPO / "share" / "jupyterhub_config.py"
SPEC = "uvk-hub"
DISPLAY = "Python (uvkernel on the hub)"
FACTS = ("import json, os, sys, torch; print(json.dumps({'uid': os.getuid(), 'home': os.environ.get('HOME'), "
         "'cwd': os.getcwd(), 'prefix': sys.prefix, 'torch': torch.__file__}))")


# run in one user's kernel: can it list the other user's envs and cache?
PROBE_OTHERS = """
import json, os
out = {}
for p in TARGETS:
    try:
        os.listdir(p)
        out[p] = "readable"
    except PermissionError:
        out[p] = "denied"
print(json.dumps(out))
"""


def _user_pids(uids: set[int]) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        line = next((ln for ln in status.splitlines() if ln.startswith("Uid:")), "")
        if line and int(line.split()[1]) in uids:
            pids.append(int(entry.name))
    return pids


def _kill_user_processes(uids: set[int]) -> None:
    """The servers and kernels the hub started for the test users (by process id, never by name)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _user_pids(uids)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while _user_pids(uids) and time.monotonic() < deadline:
            time.sleep(0.2)


def _dirs_to_open(paths: list[str]) -> list[Path]:
    """Folders on the way to ``paths`` that other users cannot traverse (e.g. /root, mode 0700)."""
    closed: list[Path] = []
    for path in paths:
        for folder in Path(os.path.realpath(path)).parents:
            if folder not in closed and not folder.stat().st_mode & stat.S_IXOTH:
                closed.append(folder)
    return closed


class HubUser:
    """One user's single-user server, reached through the hub's proxy with the test service's token."""

    def __init__(self, hub: "Hub", name: str):
        self.hub = hub
        self.name = name
        self.pw = pwd.getpwnam(name)
        self.home = Path(self.pw.pw_dir)
        self.url = f"{hub.url}/user/{name}"
        self.token = hub.token

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 300)
        return requests.request(method, self.url + path, headers={"Authorization": f"token {self.token}"}, **kwargs)

    def session(self, path: str) -> dict:
        r = self.request("POST", "/api/sessions", json={"path": path, "type": "notebook", "name": Path(path).name,
                                                        "kernel": {"name": SPEC}})
        assert r.status_code == 201, r.text
        return r.json()

    def run(self, kernel_id: str, code: str):
        k = WsKernel(self, kernel_id)
        try:
            k.wait_ready()
            return k.execute(code)
        finally:
            k.close()

    def facts(self, kernel_id: str) -> dict:
        result = self.run(kernel_id, FACTS)
        assert result.error is None, result.error
        return json.loads(result.stdout.strip().splitlines()[-1])


class Hub(LoggedServer):
    stop_timeout = 20.0

    def __init__(self, base: Path, users: list[str], host_python: str):
        super().__init__(base / "hub" / "jupyterhub.log")
        self.base = base
        self.users = users
        self.port, self.hub_port, self.api_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.password = secrets.token_hex(8)  # the dummy login's, for the browser test
        self.system = base / "system"  # stands for --sys-prefix: a root-owned folder every user can read
        done = subprocess.run([sys.executable, "-m", "uvkernel", "install", "--prefix", str(self.system),
                               "--name", SPEC, "--display-name", DISPLAY, "--host-python", host_python],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr

    def config(self) -> Path:
        hub_dir = self.base / "hub"
        path = hub_dir / "jupyterhub_config.py"
        path.write_text(f"""
c = get_config()
load_subconfig({str(EXAMPLE)!r})
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {self.port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {self.hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.api_port}"
c.ConfigurableHTTPProxy.command = [{str(CHP)!r}]
c.ConfigurableHTTPProxy.pid_file = {str(hub_dir / "proxy.pid")!r}
c.JupyterHub.db_url = "sqlite:///{hub_dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = {str(hub_dir / "cookie_secret")!r}
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {self.password!r}
c.Authenticator.allowed_users = set({self.users!r})
c.JupyterHub.services = [{{"name": "e2e", "api_token": {self.token!r}}}]
c.JupyterHub.load_roles = [{{"name": "e2e", "services": ["e2e"],
                             "scopes": ["admin:users", "admin:servers", "access:servers"]}}]
c.Spawner.cmd = [{str(BIN / "jupyterhub-singleuser")!r}]
# the system-wide kernel spec folder (in production: uvkernel install --sys-prefix)
c.Spawner.environment["JUPYTER_PATH"] = {str(self.system / "share" / "jupyter")!r}
""")
        return path

    def start(self) -> "Hub":
        hub_dir = self.base / "hub"
        hub_dir.mkdir(mode=0o700)
        config = self.config()
        env = dict(os.environ)
        for var in ("JUPYTER_PATH", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR"):
            env.pop(var, None)
        self.launch([str(BIN / "jupyterhub"), "-f", str(config)], cwd=hub_dir, env=env, what="jupyterhub",
                    timeout=90, interval=0.3,
                    ready=lambda: requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200)
        return self

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return requests.request(method, f"{self.url}/hub/api{path}", headers={"Authorization": f"token {self.token}"},
                                **kwargs)

    def spawn(self, name: str) -> HubUser:
        if self.api("GET", f"/users/{name}").status_code == 404:
            assert self.api("POST", f"/users/{name}").status_code == 201
        server = (self.api("GET", f"/users/{name}").json().get("servers") or {}).get("")
        if server and server.get("ready"):  # an earlier test of the module started it
            return HubUser(self, name)
        r = self.api("POST", f"/users/{name}/server")
        assert r.status_code in (201, 202), r.text
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            server = (self.api("GET", f"/users/{name}").json().get("servers") or {}).get("")
            if server and server.get("ready"):
                return HubUser(self, name)
            time.sleep(0.5)
        raise AssertionError(f"the server of {name} did not become ready:\n{self.log()}")

    def stop(self) -> None:
        super().stop()
        pid_file = self.base / "hub" / "proxy.pid"
        if pid_file.exists():  # a proxy left behind by a hub that had to be killed
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass


@pytest.fixture(scope="module")
def hub(host_python):
    if os.geteuid() != 0:
        pytest.fail("the JupyterHub test creates Unix users and spawns servers as them: run it as root",
                    pytrace=False)
    for tool in ("useradd", "userdel", "setfacl"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is missing: run scripts/setup.sh --e2e", pytrace=False)
    if not CHP.exists():
        pytest.fail(f"{CHP} is missing: run scripts/setup.sh --e2e", pytrace=False)

    base = Path(tempfile.mkdtemp(prefix="uvkernel-hub-"))  # not under pytest's 0700 folder: users traverse it
    base.chmod(0o755)
    (base / "home").mkdir(mode=0o755)
    suffix = secrets.token_hex(3)
    names = [f"uvkhub-a-{suffix}", f"uvkhub-b-{suffix}"]
    created: list[str] = []
    opened: list[Path] = []  # folders given the users' search entries, which are taken out again after
    hub = None
    try:
        for name in names:
            home = base / "home" / name
            subprocess.run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/bash",
                            "--user-group", "-K", "HOME_MODE=0700", name], check=True, capture_output=True)
            created.append(name)
            assert stat.S_IMODE(home.stat().st_mode) == 0o700
        # the shared host stack and the server's environment must be reachable by the users
        import uv

        for folder in _dirs_to_open([host_python, sys.executable, str(REPO / "src"), uv.find_uv_bin()]):
            opened.append(folder)
            for name in names:
                subprocess.run(["setfacl", "-m", f"u:{name}:x", str(folder)], check=True, capture_output=True)
        hub = Hub(base, names, host_python).start()
        yield hub
    finally:
        if hub is not None:
            for name in names:
                hub.api("DELETE", f"/users/{name}/server")
            hub.stop()
            keep_log(hub.log_path, "jupyterhub.log")
        uids = set()
        for name in created:
            try:
                uids.add(pwd.getpwnam(name).pw_uid)
            except KeyError:
                pass
        _kill_user_processes(uids)
        for folder in opened:
            _close_again(folder, created)
        for name in created:
            subprocess.run(["userdel", "--remove", name], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _close_again(folder: Path, names: list[str]) -> None:
    """Take this test's users out of ``folder``'s ACL, and nothing else: another run's users (a second suite on
    the machine, with its own hub) keep theirs.  With no named entry left, the ACL goes altogether, so no
    leftover mask entry remains."""
    for name in names:
        subprocess.run(["setfacl", "-x", f"u:{name}", str(folder)], capture_output=True)
    listing = subprocess.run(["getfacl", "--absolute-names", "--omit-header", str(folder)], capture_output=True,
                             text=True).stdout
    if not any(line.split(":")[1] for line in listing.splitlines()
               if line.startswith(("user:", "group:")) and line.count(":") >= 2):
        subprocess.run(["setfacl", "-b", str(folder)], capture_output=True)


def _tree_owned_by(folder: Path, uid: int) -> list[str]:
    return [str(p) for p in [folder, *folder.rglob("*")] if p.lstat().st_uid != uid]


def _give(path: Path, user: HubUser) -> None:
    for p in [path, *path.rglob("*")]:
        os.chown(p, user.pw.pw_uid, user.pw.pw_gid)


def test_two_users_each_get_private_envs(hub, host_torch_file):
    users = [hub.spawn(name) for name in hub.users]
    envs = {}
    for user, deps in zip(users, (["tomli-w>=1.0"], [])):
        # what the user has in their home: a project with a notebook, and a notebook outside any project
        project = make_project(user.home / "proj", dependencies=deps)
        write_notebook(project / "nb.ipynb", "print('hi')", kernel=SPEC)
        write_notebook(user.home / "scratch" / "nb.ipynb", "print('hi')", kernel=SPEC)
        _give(project, user)
        _give(user.home / "scratch", user)

        specs = user.request("GET", "/api/kernelspecs").json()["kernelspecs"]
        assert specs[SPEC]["spec"]["display_name"] == DISPLAY
        assert specs[SPEC]["spec"]["metadata"]["kernel_provisioner"]["provisioner_name"] == "uvkernel"

        kernel = user.session("proj/nb.ipynb")["kernel"]["id"]
        got = user.facts(kernel)
        assert got["uid"] == user.pw.pw_uid and got["home"] == str(user.home)
        assert got["cwd"] == str(project)
        assert got["prefix"] == str(project / ".venv")
        assert got["torch"] == host_torch_file  # the one shared host stack
        if deps:  # uv reached the index from a hub-spawned server (the example keeps SSL_CERT_FILE)
            where = user.run(kernel, "import tomli_w; print(tomli_w.__file__)").stdout.strip()
            assert where.startswith(str(project / ".venv")), where

        scratch = user.facts(user.session("scratch/nb.ipynb")["kernel"]["id"])
        cache = user.home / ".cache" / "uvkernel"
        assert scratch["prefix"].startswith(str(cache / "envs") + "/"), scratch
        envs[user.name] = {"project": project / ".venv", "cache": cache, "scratch": Path(scratch["prefix"])}

        # private: uvkernel's folders are 0700; nothing in the home belongs to anyone but the user
        for folder in (cache, cache / "envs", Path(scratch["prefix"]), cache / "locks"):
            mode = stat.S_IMODE(folder.stat().st_mode)
            assert mode == 0o700, f"{folder} is {oct(mode)}"
            assert folder.stat().st_uid == user.pw.pw_uid
        assert not _tree_owned_by(user.home, user.pw.pw_uid)

    # never shared: separate envs, and neither user can look into the other's
    a, b = users
    assert not set(envs[a.name].values()) & set(envs[b.name].values())
    for reader, owner in ((b, a), (a, b)):
        targets = [str(p) for p in envs[owner.name].values()]
        probe = PROBE_OTHERS.replace("TARGETS", json.dumps(targets))
        sessions = reader.request("GET", "/api/sessions").json()
        result = reader.run(sessions[0]["kernel"]["id"], probe)
        assert result.error is None, result.error
        assert set(json.loads(result.stdout.strip().splitlines()[-1]).values()) == {"denied"}




def test_long_first_start_shows_its_progress_in_the_hub_users_lab(hub, screenshots):
    """A user logs in to the hub in Chromium and opens a notebook whose env needs a 20 s build: JupyterLab in the
    user's single-user server (behind the hub's proxy) shows the start's progress, then the summary, then the
    kernel answers."""
    from playwright.sync_api import sync_playwright

    user = hub.spawn(hub.users[0])
    version = f"4.0.{uuid.uuid4().int % 10**9}"  # uv caches built wheels: a version of its own each run
    sdist = slow_sdist(user.home / "wheels", "slowhub", version, 20)
    project = make_project(user.home / "slowhub", [f"slowhub @ {sdist.as_uri()}"])
    write_notebook(project / "nb.ipynb", "import slowhub; print('built', slowhub.BUILT_SLOWLY)", kernel=SPEC,
                   display_name=DISPLAY)
    _give(user.home / "wheels", user)
    _give(project, user)
    with sync_playwright() as p:
        browser = chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(120_000)
            page.goto(f"{hub.url}/hub/login")
            page.fill("#username_input", user.name)
            page.fill("#password_input", hub.password)
            page.click("#login_submit")
            page.wait_for_url("**/user/**")
            page.goto(f"{user.url}/lab/tree/slowhub/nb.ipynb?reset")
            page.wait_for_selector(".jp-Notebook")

            def on_step(step: str) -> None:
                if "building slowhub" in step:
                    page.screenshot(path=str(screenshots / "jupyterhub-start-progress-building.png"))

            watched = watch_start_progress(page, on_step=on_step)
            seen, clocks = watched.steps, watched.clocks
            page.screenshot(path=str(screenshots / "jupyterhub-start-progress-ready.png"))
            assert watched.final and "installed slowhub" in watched.final[0], (seen, page.evaluate(TOASTS))
            assert any("building slowhub" in step for step in seen), seen
            assert clocks and max(clocks) - min(clocks) >= 10, clocks  # the clock advanced during the build
            page.wait_for_function(
                """(display) => {
                    const name = document.querySelector('.jp-NotebookPanel .jp-Toolbar-kernelName');
                    const ind = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
                    return name && ind && name.textContent.trim() === display && ind.dataset.status === 'idle';
                }""", arg=DISPLAY)
            page.locator(".jp-Cell").first.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            page.wait_for_function("() => [...document.querySelectorAll('.jp-OutputArea-output')]"
                                   ".some(o => o.innerText.includes('built True'))")
        finally:
            browser.close()
    assert (project / ".venv").stat().st_uid == user.pw.pw_uid  # built as the user, in the user's project
