"""``uvkernel gc`` removes only what it can prove is gone, and never reaches through a
link.  Real tmpfs mounts (root), real cache envs made by real uv, real locks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hardening_support import assert_clear_error, tmpfs
from helpers import uvkernel_cli
from test_cache_envs import cache_root, start

from uvkernel import cache_envs
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
