"""The attacks on uvkernel's own files, its project-file reading and its add/remove/uninstall, each run
for real (git clone, jupyter_server, a second Unix user, a killed `uvkernel add`) and checked for what matters:
nothing outside changed (hash and mode), nothing hung, nothing the user wrote was lost."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hardening_support import add_journal, wait_for_journal, assert_clear_error, check
from helpers import make_project


def uvk(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uvkernel", *args], capture_output=True, text=True, cwd=cwd,
                          env=os.environ.copy(), timeout=timeout)


def fingerprint(path: Path) -> tuple[str, int]:
    """(content hash, mode) of a file, never following a link."""
    st = os.lstat(path)
    return hashlib.sha256(path.read_bytes()).hexdigest(), stat.S_IMODE(st.st_mode)


def victims(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        path = folder / f"authorized_keys_{i}"
        path.write_text(f"ssh-ed25519 AAAA user{i}@laptop\n")
        path.chmod(0o600)
        out.append(path)
    return out


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


# --- 1. a cloned repository's .venv --------------------------------------------------------------------------

def test_a_cloned_repository_cannot_make_uvkernel_write_or_chmod_outside_it(tmp_path, host_python, uv_bin):
    """The repository ships a .venv that matches the host, whose fixed names (temporary files and targets) are
    links to the user's files: after `git clone` and `uvkernel check`, those files are byte for byte and mode
    for mode as before."""
    home = tmp_path / "home" / ".ssh"
    targets = victims(home, 6)
    before = {p: fingerprint(p) for p in targets}
    origin = tmp_path / "origin"
    make_project(origin)
    subprocess.run([uv_bin, "venv", "--system-site-packages", "--python", host_python, "--no-project",
                    str(origin / ".venv")], check=True, capture_output=True)
    venv = origin / ".venv"
    (venv / ".gitignore").unlink(missing_ok=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    planted = [venv / ".uvkernel-host-provided.txt.tmp", venv / ".uvkernel-host-pins.txt.tmp",
               venv / "bin" / "pip.uvkernel-tmp", venv / "bin" / "pip3.uvkernel-tmp",
               site / "_uvkernel_host.pth.tmp", venv / ".uvkernel-host-provided.txt"]
    for link, target in zip(planted, targets):
        link.symlink_to(target)
    git("init", "-q", cwd=origin)
    git("add", "-f", ".", cwd=origin)
    git("commit", "-qm", "a project", cwd=origin)
    clone = tmp_path / "clone"
    git("clone", "-q", str(origin), str(clone), cwd=tmp_path)
    assert (clone / ".venv" / "bin" / "pip.uvkernel-tmp").is_symlink(), "git did not keep the planted links"

    status, report, _ = check(clone, "--host-python", host_python)
    after = {p: fingerprint(p) for p in targets}
    assert after == before, f"files outside the clone changed: {after} != {before}"
    for link in planted:
        assert link.is_symlink() or not link.exists()
    # the link at a target name is refused (not followed), with a coded error, not a silent success
    assert status == 1, report
    assert "symbolic link" in report["message"], report["message"]


def test_a_project_env_that_links_outside_the_project_is_reported(tmp_path, host_python):
    project = make_project(tmp_path / "proj")
    elsewhere = tmp_path / "someone-elses-env"
    elsewhere.mkdir()
    (project / ".venv").symlink_to(elsewhere)
    status, report, _ = check(project, "--host-python", host_python)
    notes = " ".join(report["project"]["notices"])
    assert "[ENV_LINK_OUTSIDE]" in notes and str(elsewhere) in notes, report["project"]
    text = uvk("check", str(project), "--host-python", host_python).stdout
    assert "the env is a link to" in text, text


# --- 1. a cache shared with another user ---------------------------------------------------------------------



def test_a_cache_folder_another_user_made_first_is_refused_not_used(tmp_path, host_python, other_user):
    """User A creates <cache>/uvkernel/envs mode 0777 first and plants B's env as a link to a venv A controls,
    with a .pth that runs as whoever starts Python there.  B's check refuses, runs nothing of A's, and changes
    none of A's files."""
    from uvkernel import host as host_mod, project as project_mod

    shared = tmp_path / "shared-cache"
    shared.mkdir(mode=0o777)
    shared.chmod(0o1777)
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    marker = tmp_path / "ran-as-b"
    evil = tmp_path / "a-env"
    host = host_mod.inspect_sync(host_python, "test")
    cache = shared / "uvkernel"
    b_env = project_mod.cache_env_path(cache, notebooks, host.executable)
    # what A does, done here and handed to A (A's processes cannot run this checkout's interpreter)
    (cache / "envs").mkdir(parents=True)
    evil.mkdir()
    (evil / "evil.pth").write_text(f"import os; open({str(marker)!r}, 'w')\n")
    b_env.symlink_to(evil)
    for path in (cache, cache / "envs", evil, evil / "evil.pth", b_env):
        os.lchown(path, other_user.pw_uid, other_user.pw_gid)
    for path in (cache, cache / "envs"):
        path.chmod(0o777)
    a_files = {p: fingerprint(p) for p in [evil / "evil.pth"]}
    env = os.environ.copy()
    env["XDG_CACHE_HOME"] = str(shared)
    status, report, _ = check(notebooks, "--host-python", host_python, env=env)
    assert status == 1
    assert_clear_error(report["message"], "CACHE_DIR_UNSAFE", str(cache))
    assert not marker.exists(), "B ran A's .pth"
    assert {p: fingerprint(p) for p in a_files} == a_files
    assert stat.S_IMODE(os.lstat(cache).st_mode) == 0o777, "uvkernel chmod-ed a folder it did not make"

    # the cache root is B's and private now, only envs/ is A's: still refused
    own = tmp_path / "own-cache"
    (own / "uvkernel").mkdir(parents=True, mode=0o700)
    (own / "uvkernel" / "envs").mkdir(mode=0o777)
    (own / "uvkernel" / "envs").chmod(0o777)
    os.chown(own / "uvkernel" / "envs", other_user.pw_uid, other_user.pw_gid)
    env["XDG_CACHE_HOME"] = str(own)
    status, report, _ = check(notebooks, "--host-python", host_python, env=env)
    assert status == 1
    assert_clear_error(report["message"], "CACHE_DIR_UNSAFE", str(own / "uvkernel" / "envs"))
    assert not marker.exists()


def test_a_cache_env_that_is_a_link_is_refused(tmp_path, host_python):
    from uvkernel import host as host_mod, project as project_mod

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "uvkernel"
    (cache / "envs").mkdir(parents=True, mode=0o700)
    cache.chmod(0o700)
    host = host_mod.inspect_sync(host_python, "test")
    evil = tmp_path / "elsewhere"
    evil.mkdir()
    link = project_mod.cache_env_path(cache, notebooks, host.executable)
    link.symlink_to(evil)
    status, report, _ = check(notebooks, "--host-python", host_python)
    assert status == 1
    assert_clear_error(report["message"], "CACHE_ENV_LINK", str(link))
    assert list(evil.iterdir()) == []


# --- 2. project files that block or never end, through a real jupyter_server ---------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("special", ["fifo-uv.toml", "zero-uv.lock", "fifo-pyproject", "escaping-members",
                                     "huge-uv.toml"])
def test_special_project_files_never_block_the_server(tmp_path, host_python, special):
    from e2e.support import install_kernel_spec, server_environment, start_server

    env = server_environment(tmp_path / "home", host_python)
    install_kernel_spec(env, "uvk", host_python)
    root = tmp_path / "root"
    project = make_project(root / "proj")
    expected = "PROJECT_FILE_NOT_REGULAR"
    if special == "fifo-uv.toml":
        os.mkfifo(project / "uv.toml")
    elif special == "zero-uv.lock":
        (project / "uv.lock").symlink_to("/dev/zero")
    elif special == "fifo-pyproject":
        (project / "pyproject.toml").unlink()
        os.mkfifo(project / "pyproject.toml")
        (project / "uv.lock").write_text("version = 1\n")
    elif special == "huge-uv.toml":
        # valid for uv, and 4.4 MB of TOML: Python's parser takes seconds over it
        names = ",".join(f'"p{i:07d}"' for i in range(400_000))
        (project / "uv.toml").write_text(f'required-version = ">=0.1"\nno-build-package = [{names}]\n')
        expected = ""
    else:
        # a parent folder's workspace whose members glob walks the whole disk
        (root / "pyproject.toml").write_text('[tool.uv.workspace]\nmembers = ["../../../../../../../../**"]\n')
        expected = ""
    server = start_server(root, env, log_path=tmp_path / "server.log")
    try:
        slowest = [0.0]
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                t0 = time.monotonic()
                assert server.get("/api/status", timeout=30).status_code == 200
                slowest[0] = max(slowest[0], time.monotonic() - t0)
                time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        t0 = time.monotonic()
        r = server.post("/api/kernels", json={"name": "uvk", "path": "proj"}, timeout=120)
        took = time.monotonic() - t0
        done.set()
        poller.join(30)
        if expected:
            assert r.status_code >= 400, r.text
            assert expected in r.text, r.text
        else:
            assert r.status_code == 201, r.text
            server.delete(f"/api/kernels/{r.json()['id']}")
        assert slowest[0] < 1.0, f"/api/status took {slowest[0]:.2f} s during the start"
        assert took < 60, f"the start took {took:.0f} s"
    finally:
        server.stop()


@pytest.mark.e2e
def test_the_provisioner_is_loaded_before_the_server_serves(tmp_path, host_python):
    """jupyter_client imports a kernel provisioner on the server's event loop at the first start that names it:
    uvkernel's modules took 0.2-0.4 s to import there (past 1 s on a loaded machine), and /api/status waited for
    them.  The server extension loads them while the server starts, before it serves its first request."""
    from e2e.support import server_environment, start_server

    env = server_environment(tmp_path / "home", host_python)
    root = tmp_path / "root"
    root.mkdir()
    log = tmp_path / "server.log"
    server = start_server(root, env, log_path=log, extra_args=["--ServerApp.log_level=DEBUG"])
    try:
        assert server.get("/api/status").status_code == 200
        text = log.read_text(errors="replace")
        loaded, serving = text.find("uvkernel: kernel provisioner loaded in"), text.find("is running at")
        assert loaded != -1, f"the server extension did not load the provisioner:\n{text[-3000:]}"
        assert serving == -1 or loaded < serving, "the provisioner was loaded after the server started serving"
    finally:
        server.stop()


def test_workspace_globs_as_uv_evaluates_them_bounded_to_the_root(tmp_path):
    from uvkernel.project import find_workspace, member_folders

    root = tmp_path / "ws"
    member = make_project(root / "packages" / "a")
    data = {"project": {"name": "a"}}
    for members in (["."], ["./"], ["packages/*"], [str(root / "packages" / "*")], ["packages/**"]):
        (root / "pyproject.toml").write_text(f"[tool.uv.workspace]\nmembers = {json.dumps(members)}\n")
        found = find_workspace(member, data)
        if members in (["."], ["./"]):
            assert found is None or found[0] == root
            assert member_folders(root, members[0]) == [root]
        else:
            assert found is not None and found[0] == root, members
    (root / "pyproject.toml").write_text('[tool.uv.workspace]\nmembers = ["../../../../../../**", "/**"]\n')
    t0 = time.monotonic()
    assert find_workspace(member, data) is None
    assert member_folders(root, "../../../../**") == [] and member_folders(root, "/**") == []
    assert time.monotonic() - t0 < 1


# --- 3. what the user wrote is never overwritten ---------------------------------------------------------------



@pytest.mark.parametrize("editor_save", [False, True])
def test_a_killed_add_is_rolled_back_and_an_editor_save_is_kept(tmp_path, host_python, install_spec, editor_save):
    """`uvkernel add` is SIGKILLed after uv wrote pyproject.toml (while the env is prepared); the user may have
    saved pyproject.toml from an editor meanwhile.  The next `uvkernel check` rolls back what uv wrote and keeps
    the user's save, naming the copy from before."""
    project = make_project(tmp_path / "proj")
    assert uvk("sync", "--project", str(project), "--host-python", host_python).returncode == 0
    original = (project / "pyproject.toml").read_bytes()
    journal = add_journal(project)
    proc = subprocess.Popen([sys.executable, "-m", "uvkernel", "add", "--host-python", host_python, "tomli-w"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for_journal(proc, journal, lambda data: data["phase"] == "prepare", "uv never finished")
    users = original.replace(b"[project]", b"# saved by the user's editor\n[project]")
    if editor_save:
        (project / "pyproject.toml").write_bytes(users)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert journal.exists()
    done = subprocess.run([sys.executable, "-m", "uvkernel", "check", str(project), "--host-python", host_python],
                          capture_output=True, text=True)
    assert "[EDIT_RECOVERED]" in done.stderr, done.stderr
    assert not journal.exists()
    assert not (project / "uv.lock").exists() or b"tomli-w" not in (project / "uv.lock").read_bytes()
    if editor_save:
        assert (project / "pyproject.toml").read_bytes() == users, "the user's save was overwritten"
        assert "[EDIT_NOT_RESTORED]" in done.stderr, done.stderr
    else:
        assert (project / "pyproject.toml").read_bytes() == original


def test_a_failed_add_leaves_a_file_the_user_changed_meanwhile(tmp_path, host_python):
    from uvkernel.project_edit import Backup

    project = make_project(tmp_path / "proj")
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "uvkernel"
    original = (project / "pyproject.toml").read_bytes()
    backup = Backup(project, cache, "add")
    (project / "pyproject.toml").write_bytes(original + b"# uv's\n")
    (project / "uv.lock").write_text("version = 1\n")
    backup.uv_wrote()
    users = original + b"# the user's editor\n"
    (project / "pyproject.toml").write_bytes(users)
    assert backup.restore() is False
    assert (project / "pyproject.toml").read_bytes() == users
    assert not (project / "uv.lock").exists()
    assert len(backup.notes) == 1 and "[EDIT_NOT_RESTORED]" in backup.notes[0]
    kept = backup.notes[0].split("diff ", 1)[1].split(" ", 1)[0]
    assert Path(kept).read_bytes() == original


# --- 3. uninstall stays inside the kernels folder --------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../x", "..", "../kernels/../../x", "/tmp/x"])
def test_uninstall_never_removes_a_folder_outside_the_kernels_folder(tmp_path, name):
    data = Path(os.environ["JUPYTER_DATA_DIR"])
    (data / "kernels").mkdir(parents=True, exist_ok=True)
    victim = data.parent / "x" if not name.startswith("/") else tmp_path / "x"
    victim.mkdir(exist_ok=True)
    (victim / "kernel.json").write_text("{}")
    (victim / "precious.txt").write_text("keep me")
    before = fingerprint(victim / "precious.txt")
    done = uvk("uninstall", "--user", name if not name.startswith("/") else str(victim))
    assert done.returncode != 0
    assert "[KERNEL_NAME_INVALID]" in done.stderr or "[KERNEL_NOT_FOUND]" in done.stderr, done.stderr
    assert fingerprint(victim / "precious.txt") == before
