"""``uvkernel envs`` and ``uvkernel gc`` on real cache envs (real uv, the real host), liveness of real kernels,
and stale kernel specs (``uvkernel list`` / ``uninstall --stale``)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, Kernel, make_project, run_async, uvkernel_cli

from uvkernel import cache_envs
from uvkernel.env import lock_for


def cache_root() -> Path:
    return Path(os.environ["XDG_CACHE_HOME"]) / "uvkernel"


def start(host_python: str, folder: Path) -> Path:
    """Stages 1-2 of a kernel start in ``folder`` (the env is created or reused, the start recorded)."""
    from uvkernel import pipeline
    from uvkernel.settings import from_config

    settings = from_config({"host_python": host_python, "cache_dir": str(cache_root())})
    prepared = asyncio.run(pipeline.prepare_env(settings, cwd=str(folder), environ=dict(os.environ),
                                                log=lambda _m: None))
    return prepared.env.path


def env_of_a_deleted_folder(host_python: str, folder: Path) -> Path:
    """The cache env of a notebook folder that was deleted after its first start (gc's candidate)."""
    folder.mkdir()
    env = start(host_python, folder)
    shutil.rmtree(folder)
    return env


def envs_json() -> dict:
    return json.loads(uvkernel_cli("envs", "--json").stdout)


def gc(*args: str) -> dict:
    return json.loads(uvkernel_cli("gc", "--json", *args).stdout)


def by_env(report: dict) -> dict[str, dict]:
    return {d["path"]: d for d in report["decisions"]}


def test_envs_lists_cache_envs_and_project_envs(host_python, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    project = make_project(tmp_path / "proj")
    before = time.time()
    env = start(host_python, notes)
    project_env = start(host_python, project)
    assert env.parent == cache_root() / "envs" and project_env == project / ".venv"

    report = envs_json()
    [entry] = report["envs"]
    assert entry["path"] == str(env) and entry["folder"] == str(notes) and entry["folder_state"] == "exists"
    assert entry["host"] == host_python and entry["running"] == [] and entry["preparing"] is False
    assert before - 1 <= entry["last_start"] <= time.time()
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from disk import env_bytes  # the benchmark's count of the disk an env adds
    finally:
        sys.path.pop(0)
    assert entry["own_bytes"] == env_bytes(env)["own_bytes"] > 0
    [seen] = report["projects"]
    assert seen["env"] == str(project_env) and seen["project"] == str(project) and seen["exists"]

    text = uvkernel_cli("envs").stdout
    assert str(notes) in text and str(env) in text and "never removes them" in text and str(project) in text

    # a later start updates the last start
    time.sleep(0.05)
    start(host_python, notes)
    assert envs_json()["envs"][0]["last_start"] > entry["last_start"]


def test_gc_removes_the_env_of_a_deleted_folder_only(host_python, tmp_path):
    gone, kept = tmp_path / "gone", tmp_path / "kept"
    gone.mkdir()
    kept.mkdir()
    project = make_project(tmp_path / "proj")
    gone_env, kept_env, _ = start(host_python, gone), start(host_python, kept), start(host_python, project)
    shutil.rmtree(gone)
    shutil.rmtree(project)  # a project's .venv is never uvkernel's to remove, gone or not

    assert envs_json()["envs"][0]["folder_state"] in ("gone", "exists")
    states = {e["folder"]: e["folder_state"] for e in envs_json()["envs"]}
    assert states == {str(gone): "gone", str(kept): "exists"}
    assert "FOLDER GONE" in uvkernel_cli("envs").stdout

    dry = by_env(gc("--dry-run"))
    assert dry[str(gone_env)]["action"] == "would remove" and "is gone" in dry[str(gone_env)]["reason"]
    assert dry[str(kept_env)]["action"] == "kept"
    assert gone_env.is_dir()  # a dry run removes nothing

    text = uvkernel_cli("gc").stdout
    assert f"removed: {gone_env}" in text and f"its folder {gone} is gone" in text and "1 env(s) removed" in text
    assert not gone_env.exists() and kept_env.is_dir()
    assert [e["path"] for e in envs_json()["envs"]] == [str(kept_env)]

    # the folder comes back: a later start works (a new env)
    gone.mkdir()
    again = start(host_python, gone)
    assert again == gone_env and (again / "bin" / "python").exists()
    done = subprocess.run([str(again / "bin" / "python"), "-c", "import torch, ipykernel"], capture_output=True)
    assert done.returncode == 0, done.stderr


def test_unmounted_parent_is_not_a_deletion(host_python, tmp_path):
    volume = tmp_path / "mnt" / "volume"
    notes = volume / "notes"
    notes.mkdir(parents=True)
    env = start(host_python, notes)
    shutil.rmtree(volume)  # notes and its parent are missing: as when the volume is not mounted
    [entry] = envs_json()["envs"]
    assert entry["folder_state"] == "unreachable"
    decision = by_env(gc())[str(env)]
    assert decision["action"] == "kept" and "unmounted volume" in decision["reason"]
    assert env.is_dir()


def test_gc_older_than(host_python, tmp_path):
    old, recent = tmp_path / "old", tmp_path / "recent"
    old.mkdir()
    recent.mkdir()
    old_env, recent_env = start(host_python, old), start(host_python, recent)
    # the old one was last started 40 days ago
    meta = old_env / cache_envs.META_FILE
    data = json.loads(meta.read_text())
    data["last_start"] = time.time() - 40 * 86400
    meta.write_text(json.dumps(data))

    assert by_env(gc("--older-than", "30", "--dry-run"))[str(old_env)]["action"] == "would remove"
    decisions = by_env(gc("--older-than", "30"))
    assert decisions[str(old_env)]["action"] == "removed"
    assert "not started for more than 30 days" in decisions[str(old_env)]["reason"]
    assert decisions[str(recent_env)]["action"] == "kept"
    assert not old_env.exists() and recent_env.is_dir()
    # without --older-than, an unused env whose folder exists stays
    assert by_env(gc())[str(recent_env)]["action"] == "kept"


@pytest.mark.parametrize("value", ["abc", "-3", "nan", ""])
def test_older_than_not_a_number(value):
    done = uvkernel_cli("gc", "--older-than", value, check=False)
    assert done.returncode == 2
    assert f"--older-than {value!r} is not a number of days [GC_OLDER_THAN_INVALID]" in done.stderr
    assert "uvkernel gc --older-than 30" in done.stderr


def test_gc_leaves_an_env_a_kernel_runs_from(host_python, install_spec, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    name = install_spec()

    async def scenario():
        async with Kernel(name, notes) as kernel:
            pid = kernel.km.provisioner.pid
            env = Path(await kernel.value("__import__('sys').prefix"))
            shutil.rmtree(notes)  # deleted while the kernel runs
            [entry] = envs_json()["envs"]
            assert entry["running"] == [pid] and entry["folder_state"] == "gone"
            done = uvkernel_cli("gc")
            assert f"kept: {env}" in done.stdout
            assert f"a kernel is starting or running from it (pid {pid})" in done.stdout
            assert env.is_dir() and await kernel.value("1 + 1") == 2
            notes.mkdir()
            await kernel.restart()  # a restart marks the new process
            new_pid = kernel.km.provisioner.pid
            assert new_pid != pid and envs_json()["envs"][0]["running"] == [new_pid]
            shutil.rmtree(notes)
        return env

    env = run_async(scenario())
    assert os.listdir(cache_root() / "running") == []  # the shutdown removed the marker
    assert by_env(gc())[str(env)]["action"] == "removed"


def test_gc_leaves_an_env_being_started_or_prepared(host_python, tmp_path):
    env = env_of_a_deleted_folder(host_python, tmp_path / "notes")
    root = cache_root()
    # a start in progress: its marker names this process
    liveness = cache_envs.Liveness()
    liveness.mark(root, env)
    decision = by_env(gc())[str(env)]
    assert decision["action"] == "kept" and f"(pid {os.getpid()})" in decision["reason"]
    assert "it would otherwise be removed: its folder" in decision["reason"]
    liveness.clear()
    # a start preparing the env holds its lock
    lock = lock_for(env, root)
    lock.acquire()
    try:
        decision = by_env(gc())[str(env)]
        assert decision["action"] == "kept" and "preparing it now" in decision["reason"]
    finally:
        lock.release()
    assert by_env(gc())[str(env)]["action"] == "removed"


def test_a_marker_of_a_dead_process_does_not_count(host_python, tmp_path):
    env = env_of_a_deleted_folder(host_python, tmp_path / "notes")
    dead = subprocess.Popen(["true"])
    dead.wait()
    cache_envs.Liveness(pid=dead.pid, phase="running").mark(cache_root(), env)
    # and a live pid whose recorded start time differs (the pid was reused by another process)
    reused = cache_envs.Liveness(phase="running")
    reused.mark(cache_root(), env)
    marker = json.loads(reused.path.read_text())
    marker["process_start"] = "1"
    reused.path.write_text(json.dumps(marker))
    assert envs_json()["envs"][0]["running"] == []
    assert by_env(gc())[str(env)]["action"] == "removed"
    assert os.listdir(cache_root() / "running") == []  # stale markers are cleaned up


def test_gc_leaves_what_uvkernel_did_not_make(host_python, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    start(host_python, notes)
    envs = cache_root() / "envs"
    mine = envs / "my-stuff"
    mine.mkdir()
    (mine / "data.csv").write_text("1,2\n")
    fake_venv = envs / "a-venv-of-mine"  # a venv, but not uvkernel's (no uvkernel files)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fake_venv)], check=True)
    (envs / "link").symlink_to(tmp_path)
    (envs / "notes.txt").write_text("hello")
    shutil.rmtree(notes)
    report = gc("--older-than", "0")
    assert sorted(report["not_uvkernels"]) == sorted(str(envs / n) for n in ("a-venv-of-mine", "link", "my-stuff",
                                                                             "notes.txt"))
    assert [d["action"] for d in report["decisions"]] == ["removed"]
    assert (mine / "data.csv").read_text() == "1,2\n" and (fake_venv / "pyvenv.cfg").exists()
    assert (envs / "link").is_symlink() and (envs / "notes.txt").exists() and tmp_path.is_dir()
    assert "left alone (not made by uvkernel)" in uvkernel_cli("gc").stdout


def test_list_marks_stale_specs_and_uninstall_removes_them(host_python, install_spec, tmp_path, uv_bin):
    host_venv = tmp_path / "hostvenv"
    subprocess.run([uv_bin, "venv", "-q", "--python", host_python, str(host_venv)], check=True)
    stale = install_spec("uvk-stale", host=str(host_venv / "bin" / "python"))
    good = install_spec("uvk-good")
    shutil.rmtree(host_venv)

    text = uvkernel_cli("list").stdout
    stale_line = next(line for line in text.splitlines() if line.startswith(stale))
    good_line = next(line for line in text.splitlines() if line.startswith(good))
    assert f"STALE: host interpreter {host_venv / 'bin' / 'python'} no longer exists" in stale_line
    assert "STALE" not in good_line and "uvkernel uninstall --stale" in text
    specs = {s["name"]: s for s in json.loads(uvkernel_cli("list", "--json").stdout)["kernelspecs"]}
    assert specs[stale]["stale"] and specs[good]["stale"] is None

    done = uvkernel_cli("uninstall", "--stale")
    assert f"Removed kernel spec {stale}" in done.stdout
    names = [s["name"] for s in json.loads(uvkernel_cli("list", "--json").stdout)["kernelspecs"]]
    assert stale not in names and good in names
    again = uvkernel_cli("uninstall", "--stale", check=False)
    assert again.returncode == 2 and "[NO_STALE_SPECS]" in again.stderr
    both = uvkernel_cli("uninstall", good, "--stale", check=False)
    assert both.returncode == 2 and good in [s["name"] for s in
                                             json.loads(uvkernel_cli("list", "--json").stdout)["kernelspecs"]]
