"""Nothing the user has is lost: ``uvkernel gc`` removes only what it can prove is gone, and never reaches through
a link (real tmpfs mounts (root), real cache envs made by real uv, real locks); an ``uvkernel add`` killed while
uv itself still writes pyproject.toml and uv.lock is rolled back by the next command, and a file the user changed
since is kept (real uv held mid-run by a source distribution whose build waits)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hardening_support import SLOW_BUILD, add_journal, assert_clear_error, slow_sdist, tmpfs
from deps_support import dists
from helpers import Kernel, make_project, run_async, uvkernel_cli
from test_cache_envs import cache_root, start

from uvkernel import cache_envs
from uvkernel.shared import canonical
from uvkernel.env import lock_for


def decisions(*args: str) -> dict[str, dict]:
    report = json.loads(uvkernel_cli("gc", "--json", *args).stdout)
    return {d["path"]: d for d in report["decisions"]}


def state_of(env: Path) -> str:
    [entry] = [e for e in json.loads(uvkernel_cli("envs", "--json").stdout)["envs"] if e["path"] == str(env)]
    return entry["folder_state"]


def needs_root() -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.fail("the gc tests need root and mount for a real tmpfs", pytrace=False)


def test_a_folder_on_an_unmounted_volume_is_unreachable_not_gone(tmp_path, host_python):
    """The notebook folder sits right under a mount point.  Unmounted, the mount point stays as an empty folder,
    so "its parent exists" would call the folder deleted: gc must keep the env, and remove it only once the
    folder is really deleted on the mounted volume."""
    needs_root()
    volume = tmp_path / "mnt" / "volume"
    with tmpfs(volume):
        notes = volume / "notes"
        notes.mkdir()
        (notes / "analysis.ipynb").write_text("{}")
        env = start(host_python, notes)
        meta = json.loads((env / cache_envs.META_FILE).read_text())
        assert meta["folder_mount"] == str(volume) and meta["folder_dev"] == os.stat(volume).st_dev, meta
        assert meta["folder_fs"] == "tmpfs tmpfs", meta
    # unmounted: the mount point is an empty folder, the notebook folder is missing
    assert volume.is_dir() and not notes.exists()
    assert state_of(env) == "unreachable"
    kept = decisions()[str(env)]
    assert kept["action"] == "kept" and "not mounted" in kept["reason"], kept
    assert (env / "pyvenv.cfg").is_file()

    # another, empty volume mounted in its place (the kernel may well give it the same device number): still
    # not proof of anything
    volume.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "othervolume", str(volume)], check=True)
    try:
        assert state_of(env) == "unreachable"
        assert decisions()[str(env)]["action"] == "kept"
    finally:
        subprocess.run(["umount", "-l", str(volume)], capture_output=True)
    assert (env / "pyvenv.cfg").is_file()


def test_a_folder_deleted_on_a_mounted_volume_is_gone(tmp_path, host_python):
    needs_root()
    volume = tmp_path / "mnt" / "volume"
    with tmpfs(volume):
        notes = volume / "deep" / "notes"
        notes.mkdir(parents=True)
        env = start(host_python, notes)
        shutil.rmtree(notes)
        assert state_of(env) == "gone"
        removed = decisions()[str(env)]
        assert removed["action"] == "removed" and "is gone" in removed["reason"], removed
        assert not env.exists()


def test_a_folder_that_was_itself_the_mount_point_is_unreachable_when_unmounted(tmp_path, host_python):
    needs_root()
    volume = tmp_path / "mnt" / "notes"
    with tmpfs(volume):
        env = start(host_python, volume)
    volume.rmdir()  # even the mount point folder is gone: the volume may be mounted elsewhere later
    assert state_of(env) == "unreachable"
    assert decisions()[str(env)]["action"] == "kept"
    assert env.is_dir()


def test_a_start_racing_gc_waits_for_the_lock_and_builds_afresh(tmp_path, host_python):
    """gc holds the env's lock while it removes the env.  A start arriving half-way used to look at the path
    before taking the lock and fail with ENV_NOT_A_VENV; now it waits, then creates the env again."""
    notes = tmp_path / "notes"
    notes.mkdir()
    env = start(host_python, notes)
    lock = lock_for(env, cache_root())
    lock.acquire(timeout=5)
    outcome: dict[str, object] = {}
    try:
        (env / "pyvenv.cfg").unlink()  # gc's rmtree, half done: a folder with files and no pyvenv.cfg
        shutil.rmtree(env / "lib")

        def run() -> None:
            try:
                outcome["env"] = start(host_python, notes)
            except Exception as exc:  # noqa: BLE001 - the test reports what the start raised
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(1.5)
        assert thread.is_alive(), f"the start did not wait for the lock: {outcome}"
        shutil.rmtree(env)  # gc finishes
    finally:
        lock.release()
    thread.join(300)
    assert not thread.is_alive(), "the start hung"
    assert outcome.get("env") == env, outcome
    assert (env / "pyvenv.cfg").is_file() and (env / "bin" / "python").exists()


def test_a_linked_running_folder_is_refused_and_what_it_points_at_is_kept(tmp_path, host_python):
    """<cache>/running is a link to a folder of someone's JSON files that look like stale markers: gc refuses
    the cache with the fix and removes none of them."""
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(cache, 0o700)
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    files = []
    for i in range(3):
        path = elsewhere / f"config-{i}.json"
        path.write_text(json.dumps({"env": "/x", "pid": 999999 + i, "process_start": "1"}))
        files.append(path)
    shutil.rmtree(cache / "running", ignore_errors=True)
    (cache / "running").symlink_to(elsewhere)
    for args in (("gc",), ("gc", "--dry-run"), ("envs",)):
        done = uvkernel_cli(*args, check=False)
        assert done.returncode == 2, done
        assert_clear_error(done.stderr, "CACHE_DIR_UNSAFE", str(cache / "running"), "symbolic link")
    assert all(p.is_file() for p in files), "gc removed files through the link"
    assert sorted(p.name for p in elsewhere.iterdir()) == [p.name for p in files]


def test_legacy_records_without_a_device_keep_the_parent_rule(tmp_path, host_python):
    """An env recorded by an older uvkernel (no device): gone when its parent exists, unreachable otherwise."""
    notes = tmp_path / "a" / "notes"
    notes.mkdir(parents=True)
    env = start(host_python, notes)
    meta_file = env / cache_envs.META_FILE
    meta = json.loads(meta_file.read_text())
    meta.pop("folder_dev"), meta.pop("folder_mount")
    meta_file.write_text(json.dumps(meta))
    shutil.rmtree(notes)
    assert cache_envs.folder_state(str(notes)) == "gone"
    subprocess.run(["rm", "-rf", str(tmp_path / "a")], check=True)
    assert state_of(env) == "unreachable"


# --- `uvkernel add` killed while uv itself runs ------------------------------------------------------------------

FILES = ("pyproject.toml", "uv.lock")


def project_files(project: Path) -> dict[str, bytes | None]:
    return {name: (project / name).read_bytes() if (project / name).exists() else None for name in FILES}


def wait_until(what: str, condition, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} never happened in {timeout:.0f} s")
        time.sleep(0.02)


def record(project: Path) -> dict:
    """The record uv's watcher keeps for the first uv run of the add (``{}`` before it wrote one)."""
    try:
        return json.loads((add_journal(project).parent / "uv-1.json").read_text())
    except (OSError, ValueError):
        return {}


def add_held_in_uv(tmp_path: Path, host_python: str, new_session: bool = False):
    """A synced project and a running `uvkernel add` of the slow-build package, held while uv builds its
    metadata: uv has written pyproject.toml (the new requirement) and not yet uv.lock."""
    project = make_project(tmp_path / "proj")
    synced = uvkernel_cli("sync", "--project", str(project), "--host-python", host_python, check=False)
    assert synced.returncode == 0, synced.stderr
    before = project_files(project)
    gate = tmp_path / "gate"
    slow_sdist(tmp_path / "links", gate)
    # offline: the package comes from the local find-links folder only, whatever the network does
    env = {**os.environ, "UV_FIND_LINKS": str(tmp_path / "links"), "UV_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "uvkernel", "add", "--host-python", host_python,
                             f"{SLOW_BUILD}==1.0"], cwd=project, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=new_session)

    def held() -> bool:
        assert proc.poll() is None, proc.stdout.read().decode()
        return (gate / "building").exists()

    wait_until("uv building the slow package", held)
    assert SLOW_BUILD.encode() in (project / "pyproject.toml").read_bytes(), "uv had not written pyproject.toml"
    assert record(project).get("state") == "running", record(project)
    return project, before, gate, proc


def ended(pid: int) -> bool:
    """Gone, or a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def next_command(project: Path, host_python: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "uvkernel", "check", str(project), "--host-python", host_python],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("target", ["process", "group"])
def test_add_killed_while_uv_writes_is_rolled_back_by_the_next_command(tmp_path, host_python, target):
    """SIGKILL to `uvkernel add` (alone, or with its whole process group, as a closed terminal's session) while
    uv runs: uv goes on and writes uv.lock after uvkernel is gone.  The next command, started while uv is still
    held, waits for it and puts pyproject.toml and uv.lock back byte for byte."""
    project, before, gate, proc = add_held_in_uv(tmp_path, host_python, new_session=target == "group")
    if target == "group":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    proc.wait(30)
    assert add_journal(project).exists()
    assert record(project).get("state") == "running", "uv's watcher died with uvkernel"
    uv = record(project)["uv"][0]
    check = next_command(project, host_python)
    time.sleep(2)
    assert check.poll() is None, f"the next command did not wait for uv: {check.communicate()}"
    (gate / "go").touch()
    _out, err = check.communicate(timeout=600)
    assert "[EDIT_RECOVERED]" in err and "[EDIT_NOT_RESTORED]" not in err, err
    # it said what it waited for, rather than sitting silent
    assert f"while uv (pid {uv}) still ran: waiting for it to end" in err, err
    assert project_files(project) == before, "what uv wrote after uvkernel was killed stayed"
    assert not add_journal(project).exists()
    assert not list(add_journal(project).parent.glob("uv-*.json")), "the watcher's record was left behind"


def test_a_file_the_user_changed_after_the_kill_is_kept_and_the_copy_named(tmp_path, host_python):
    """As above, but uv ends before the next command and the user then saves pyproject.toml: their save stays,
    the copy from before the add is named; uv.lock, which still holds uv's bytes, is put back."""
    project, before, gate, proc = add_held_in_uv(tmp_path, host_python)
    proc.kill()
    proc.wait(30)
    (gate / "go").touch()
    wait_until("uv's watcher recording what uv left", lambda: record(project).get("state") == "done")
    assert (project / "uv.lock").exists() and SLOW_BUILD.encode() in (project / "uv.lock").read_bytes()
    users = (project / "pyproject.toml").read_bytes() + b"# the user's own line\n"
    (project / "pyproject.toml").write_bytes(users)
    check = next_command(project, host_python)
    _out, err = check.communicate(timeout=600)
    assert "[EDIT_RECOVERED]" in err and "[EDIT_NOT_RESTORED]" in err, err
    assert (project / "pyproject.toml").read_bytes() == users, "the user's save was overwritten"
    assert project_files(project)["uv.lock"] == before["uv.lock"], "uv's uv.lock stayed"
    kept = err.split("diff ", 1)[1].split(" ", 1)[0]
    assert Path(kept).read_bytes() == before["pyproject.toml"]


def test_a_kernel_start_rolls_back_an_add_killed_half_way_before_it_syncs(tmp_path, host_python, install_spec):
    """A notebook opened after `uvkernel add` was SIGKILLed, with uv's half of the add in pyproject.toml and
    uv.lock, starts from the project as it was before the add: the start rolls the add back first, as the
    terminal commands do, and its report says so.  Before, the kernel synced the half-made change into its env."""
    project, before, gate, proc = add_held_in_uv(tmp_path, host_python)
    proc.kill()
    proc.wait(30)
    (gate / "go").touch()
    wait_until("uv's watcher recording what uv left", lambda: record(project).get("state") == "done")
    assert SLOW_BUILD.encode() in (project / "uv.lock").read_bytes(), "uv had not finished its half of the add"
    name = install_spec(host=host_python)
    env = {k: v for k, v in os.environ.items() if k not in ("UVKERNEL_SETTINGS", "UVKERNEL_KERNEL", "VIRTUAL_ENV")}

    async def go():
        async with Kernel(name, cwd=project, env=env) as k:
            return await k.value("__import__('sys').prefix")

    assert run_async(go()) == str(project / ".venv")
    assert project_files(project) == before, "the kernel started from uv's half of the add"
    assert not add_journal(project).exists()
    assert canonical(SLOW_BUILD) not in dists(project / ".venv")
    report = json.loads((project / ".venv" / ".uvkernel-report.json").read_text())
    assert any("[EDIT_RECOVERED]" in line and str(project) in line for line in report["preflight"]["notices"]), \
        report["preflight"]["notices"]


def test_sigterm_while_uv_writes_puts_the_files_back_at_once(tmp_path, host_python):
    """SIGTERM takes Ctrl-C's way: uvkernel stops uv and its watcher (their own group) and puts the files back
    itself, before it exits; nothing is left for the next command."""
    project, before, gate, proc = add_held_in_uv(tmp_path, host_python)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode != 0, output
    assert project_files(project) == before, output
    assert not add_journal(project).exists()
    (gate / "go").touch()  # a uv that survived would now write uv.lock
    time.sleep(3)
    assert project_files(project) == before, "uv went on writing after uvkernel stopped it"


def _kill_uv_and_its_watcher(project: Path, proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(30)
    watcher, uv = record(project)["watcher"][0], record(project)["uv"][0]
    os.killpg(watcher, signal.SIGKILL)
    wait_until("the end of uv and its watcher", lambda: all(ended(pid) for pid in (watcher, uv)))


def _record_file(project: Path) -> Path:
    return add_journal(project).parent / "uv-1.json"


def _member_files(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    top, member = tmp_path / "ws", tmp_path / "ws" / "pkg"
    member.mkdir(parents=True)
    (top / "uv.lock").write_text("version = 1\n# the workspace's lock\n")
    (member / "pyproject.toml").write_text("[project]\nname = 'pkg'\n")
    return member, {"pyproject.toml": member / "pyproject.toml", "uv.lock": top / "uv.lock"}


def test_a_killed_change_in_a_workspace_member_puts_the_workspaces_lock_back(tmp_path):
    """A member's change writes the workspace's uv.lock, one folder up: the journal names it, and the next command
    puts it back after a kill (here: a Backup never finished, as a killed command leaves it)."""
    from uvkernel.project_edit import Backup, recover

    member, files = _member_files(tmp_path)
    before = {n: p.read_bytes() for n, p in files.items()}
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "uvkernel"
    backup = Backup(member, cache, "add", files)
    for path in files.values():
        path.write_bytes(path.read_bytes() + b"# uv's\n")
    backup.uv_wrote()
    notes = recover(member, cache)
    assert notes and "[EDIT_RECOVERED]" in notes[0] and "[EDIT_NOT_RESTORED]" not in "".join(notes), notes
    assert {n: p.read_bytes() for n, p in files.items()} == before
    assert not (member / "uv.lock").exists()


def test_a_journal_naming_a_lock_outside_the_project_is_not_followed(tmp_path):
    """A journal whose uv.lock path leads elsewhere (not the project's folder or one above it) is not followed:
    the file there is never written, whatever digests the journal claims."""
    from uvkernel.project_edit import Backup, recover

    member, files = _member_files(tmp_path)
    victim = tmp_path / "elsewhere" / "uv.lock"
    victim.parent.mkdir()
    victim.write_bytes(b"someone else's file\n")
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "uvkernel"
    backup = Backup(member, cache, "add", {**files, "uv.lock": victim})
    victim.write_bytes(b"changed\n")
    backup.uv_wrote()  # the journal says uv wrote these bytes into the victim
    assert recover(member, cache)
    assert victim.read_bytes() == b"changed\n", "a path the journal named outside the project was written"


def test_a_write_in_uvs_first_instant_is_recorded_as_uvs(tmp_path):
    """The watcher knows the files as they were before uv started: a command that writes pyproject.toml the
    moment it starts (as `uv add` does, early) has that write in the record, however late the watcher looks."""
    from uvkernel.project_edit import WATCHER

    target, gate, rec = tmp_path / "pyproject.toml", tmp_path / "go", tmp_path / "uv-1.json"
    target.write_text("[project]\nname = 'before'\n")
    writes = "[project]\nname = 'written by the command'\n"
    command = ["sh", "-c", f"printf %s \"$1\" > {target}; while [ ! -e {gate} ]; do sleep 0.02; done", "-", writes]
    watcher = subprocess.Popen([sys.executable, "-I", str(WATCHER), str(rec), "60", str(target), "--", *command])
    try:
        wait_until("the watcher recording the command's write", lambda: json.loads(rec.read_text()).get("seen")
                   if rec.exists() else None, timeout=30)
    finally:
        gate.touch()
        watcher.wait(30)
    assert json.loads(rec.read_text())["seen"] == {str(target): [hashlib.sha256(writes.encode()).hexdigest()]}


@pytest.mark.parametrize("end", ["killed together", "power loss"])
def test_uv_stopped_with_its_watcher_is_rolled_back_from_what_the_watcher_saw(tmp_path, host_python, end):
    """uv and its watcher end together after uv wrote pyproject.toml: killed as one group, or a power loss (the
    record then comes from an earlier boot, its pids naming nothing).  The watcher had recorded, while uv ran,
    the bytes uv wrote, so the next command puts pyproject.toml back; uv.lock, never written, stays as it was."""
    project, before, gate, proc = add_held_in_uv(tmp_path, host_python)
    wait_until("the watcher recording what uv wrote", lambda: record(project).get("seen"))
    _kill_uv_and_its_watcher(project, proc)
    if end == "power loss":
        data = record(project)
        data["boot"] = "an-earlier-boot"
        _record_file(project).write_text(json.dumps(data))
    _out, err = next_command(project, host_python).communicate(timeout=600)
    (gate / "go").touch()
    assert "[EDIT_RECOVERED]" in err and "[EDIT_NOT_RESTORED]" not in err, err
    assert project_files(project) == before


def test_what_uv_wrote_unseen_in_its_last_moment_is_left_and_the_copy_named(tmp_path, host_python):
    """The one case nothing records: uv wrote pyproject.toml in the instant before it and its watcher were killed
    (or the power went), before the watcher's next look (stood for here by a record without that look).  The next
    command cannot tell uv's bytes from the user's: it leaves the file and names the copy from before; a file uv
    never touched stays as it was."""
    project, before, gate, proc = add_held_in_uv(tmp_path, host_python)
    _kill_uv_and_its_watcher(project, proc)
    data = record(project)
    data.pop("seen", None)
    _record_file(project).write_text(json.dumps(data))
    uv_wrote = (project / "pyproject.toml").read_bytes()
    _out, err = next_command(project, host_python).communicate(timeout=600)
    (gate / "go").touch()
    assert "[EDIT_RECOVERED]" in err and "[EDIT_NOT_RESTORED]" in err, err
    assert (project / "pyproject.toml").read_bytes() == uv_wrote
    assert project_files(project)["uv.lock"] == before["uv.lock"]
    kept = err.split("diff ", 1)[1].split(" ", 1)[0]
    assert Path(kept).read_bytes() == before["pyproject.toml"]


def test_the_next_command_waits_for_uv_only_as_long_as_lock_timeout(tmp_path, host_python):
    """uv still runs past the next command's lock_timeout: that command stops with EDIT_STILL_RUNNING, naming
    uv's pid, and changes nothing; the one after uv ended rolls the add back."""
    project, before, gate, proc = add_held_in_uv(tmp_path, host_python)
    proc.kill()
    proc.wait(30)
    uv = record(project)["uv"][0]
    env = {**os.environ, "UVKERNEL_SETTINGS": json.dumps({"lock_timeout": 2})}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "uvkernel", "check", str(project), "--host-python", host_python],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done
    assert_clear_error(done.stdout + done.stderr, "EDIT_STILL_RUNNING", f"uv (pid {uv})", str(project), f"kill {uv}")
    assert time.monotonic() - t0 < 60
    assert add_journal(project).exists(), "the journal of the add was dropped while uv still ran"
    assert SLOW_BUILD.encode() in (project / "pyproject.toml").read_bytes()
    (gate / "go").touch()
    _out, err = next_command(project, host_python).communicate(timeout=600)
    assert "[EDIT_RECOVERED]" in err and "[EDIT_NOT_RESTORED]" not in err, err
    assert project_files(project) == before
