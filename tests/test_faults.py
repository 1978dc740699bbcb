"""Faults: starts killed half-way, a hanging preflight probe, uv missing or failing, a read-only or full disk.

Real uv, real venvs, the real host interpreter; the only double is a clearly named fake ``torch`` (with a real
dist-info) in a venv host, used to make the probe hang.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hardening_support import assert_clear_error, check, env_packages, remount, snapshot, tmpfs
from helpers import make_project, start_refusal

PROJECT_DEPS = ["tomli-w", "tabulate", "text-unidecode", "toolz"]  # small, real, none of them on the host
BY_HAND = "humanize"  # what the user installs into the env themselves


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                for child in fh.read().split():
                    out.append(int(child))
                    out.extend(_children(int(child)))
    except OSError:
        pass
    return out


def _is_uv(pid: int) -> bool:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "uv"
    except OSError:
        return False


def _start_check(project: Path, host: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "uvkernel", "check", str(project), "--json",
                             "--host-python", host], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _kill_tree_after(proc: subprocess.Popen, delay: float) -> str:
    """SIGKILL `uvkernel check` and every process under it, uv included.

    uvkernel runs uv in a session of its own, so a kill of uvkernel's group alone leaves uv finishing its work
    (the next start then waits on uv's lock); this is the harsher fault, everything stopped mid-write. The tree
    is frozen first (SIGSTOP), so nothing starts a child between the look and the kill, and the kill is waited
    for: the next trial's reset must not race a dying uv still writing into the env."""
    time.sleep(delay)
    if proc.poll() is not None:
        return "finished before the kill"
    os.killpg(proc.pid, signal.SIGSTOP)
    tree = _children(proc.pid)
    for pid in tree:  # uv and its workers: a group of their own
        try:
            os.killpg(os.getpgid(pid), signal.SIGSTOP)
        except ProcessLookupError:
            pass
    tree = sorted(set(tree) | set(_children(proc.pid)))
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()
    end = time.monotonic() + 30
    while time.monotonic() < end and not all(_gone(pid) for pid in tree):
        time.sleep(0.01)
    assert all(_gone(pid) for pid in tree), f"processes {tree} outlived SIGKILL"
    return f"killed uvkernel check and {len(tree)} processes under it after {delay:.3f}s"


def _kill_uv_child(proc: subprocess.Popen, delay: float, deadline: float = 60) -> str:
    end = time.monotonic() + deadline
    while time.monotonic() < end and proc.poll() is None:
        uv = [p for p in _children(proc.pid) if _is_uv(p)]
        if uv:
            time.sleep(delay)
            try:
                os.kill(uv[0], signal.SIGKILL)
            except ProcessLookupError:
                # the start goes on without this uv: waited for, so the next reset does not race it in the env
                proc.communicate()
                return "uv finished before the kill"
            proc.communicate()
            return f"killed uv (pid {uv[0]}) {delay:.3f}s after it appeared"
        time.sleep(0.002)
    proc.communicate()
    return "no uv process appeared"


def _healthy(project: Path, host: str) -> dict:
    status, report, stderr = check(project, "--host-python", host)
    assert status == 0, f"the next start did not repair the env:\n{report.get('message')}\n{stderr}"
    env = project / ".venv"
    cfg = (env / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg
    code = "import " + ", ".join(d.replace("-", "_").replace("text_unidecode", "text_unidecode") for d in
                                 PROJECT_DEPS) + "; import torch; print(torch.__file__)"
    done = subprocess.run([str(env / "bin" / "python"), "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert str(env) not in done.stdout, "torch must come from the host"
    return report


@pytest.mark.slow
def test_sigkill_during_env_creation_and_dependency_install(tmp_path, host_python, uv_bin):
    """12 starts killed at random points (`uvkernel check` with every process under it, or only its uv child); after
    each, the next start repairs the env, and the package the user installed by hand is never lost."""
    seed = int(os.environ.get("UVKERNEL_FAULT_SEED", time.time()))
    rng = random.Random(seed)
    project = make_project(tmp_path / "proj", PROJECT_DEPS)
    env = project / ".venv"
    _healthy(project, host_python)  # fills uv's cache
    subprocess.run(["rm", "-rf", str(env)], check=True)
    t0 = time.monotonic()
    _healthy(project, host_python)
    cold = time.monotonic() - t0  # an undisturbed cold start with a warm uv cache
    log = [f"seed {seed}; an undisturbed cold start took {cold:.2f}s"]

    def trial(label: str, number: int, reset, window: float, uv_window: float) -> None:
        for _attempt in range(4):  # a start that finished before the kill is tried again, killed sooner
            reset()
            proc = _start_check(project, host_python)
            if number % 2 == 0:
                what = _kill_tree_after(proc, rng.uniform(0.02, window))
            else:
                what = _kill_uv_child(proc, rng.uniform(0, uv_window))
            left = sorted(os.listdir(env)) if env.is_dir() else "no env"
            log.append(f"{label} trial {number}: {what}; left {left}")
            if "killed" in what:
                return
            window /= 2
            uv_window /= 2

    # creation: no env yet
    for number in range(6):
        trial("creation", number, lambda: subprocess.run(["rm", "-rf", str(env)], check=True), cold, 0.02)
        _healthy(project, host_python)

    # installs: the env exists and holds a package installed by hand
    subprocess.run([uv_bin, "pip", "install", "-q", "--python", str(env / "bin" / "python"), BY_HAND], check=True)
    by_hand_version = env_packages(env)[BY_HAND]
    pyproject = project / "pyproject.toml"
    def change_project() -> None:
        # the user changes the project (a new comment is enough to make uvkernel re-check the dependencies), and
        # the dependencies are missing from the env, so uv has real work to do
        subprocess.run([uv_bin, "pip", "uninstall", "-q", "--python", str(env / "bin" / "python"), *PROJECT_DEPS],
                       check=True)
        pyproject.write_text(pyproject.read_text() + "# edited\n")

    for number in range(6):
        trial("install", number, change_project, cold, 0.1)
        _healthy(project, host_python)
        assert env_packages(env).get(BY_HAND) == by_hand_version, "\n".join(log)
    killed = [line for line in log if ": killed" in line]
    assert len(killed) >= 10, "fewer than 10 trials hit a running start:\n" + "\n".join(log)
    print("\n".join(log))


def _fake_torch_host(base: Path, host_python: str, uv_bin: str) -> Path:
    """TEST DOUBLE: a venv host whose ``torch`` is fake (real dist-info) and sleeps on import.

    A .pth line imports it at interpreter start in envs layered on this host (never in the host itself, so the
    host interrogation answers) when UVKERNEL_TEST_FAKE_TORCH_HANG is set: the probe hangs whichever of its
    layers imports torch.
    """
    host = base / "fake-torch-host"
    subprocess.run([uv_bin, "venv", "-q", "--python", host_python, str(host)], check=True)
    site = next((host / "lib").glob("python3.*/site-packages"))
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text(textwrap.dedent("""\
        # TEST DOUBLE (uvkernel tests/test_faults.py): a torch whose import hangs, like a wedged driver call.
        import os, time
        _mark = os.environ.get("UVKERNEL_TEST_FAKE_TORCH_PIDFILE")
        if _mark:
            with open(_mark, "a") as fh:
                fh.write(str(os.getpid()) + "\\n")
        time.sleep(600)
        __version__ = "2.13.0+fakehang"
        """))
    dist = site / "torch-2.13.0+fakehang.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0+fakehang\n")
    (dist / "INSTALLER").write_text("uvkernel-tests\n")
    (dist / "RECORD").write_text("torch/__init__.py,,\n")
    (site / "uvkernel_test_fake_torch_hang.pth").write_text(
        f"import os, sys; os.environ.get('UVKERNEL_TEST_FAKE_TORCH_HANG') and sys.prefix != {str(host)!r} "
        "and __import__('torch')\n")
    return host / "bin" / "python"


def test_hanging_probe_is_killed_at_its_timeout(tmp_path, host_python, uv_bin, install_spec):
    fake_host = _fake_torch_host(tmp_path, host_python, uv_bin)
    name = install_spec("uvk-hang", host=str(fake_host), preflight_timeout=3, install_ipykernel=False)
    project = make_project(tmp_path / "proj")
    pidfile = tmp_path / "fake-torch-pids"
    env = dict(os.environ, UVKERNEL_TEST_FAKE_TORCH_HANG="1", UVKERNEL_TEST_FAKE_TORCH_PIDFILE=str(pidfile))

    t0 = time.monotonic()
    message = start_refusal(name, project, env=env)
    elapsed = time.monotonic() - t0
    assert_clear_error(message, "PROBE_TIMEOUT", "within 3 seconds", "preflight_timeout")
    assert 3 <= elapsed < 60, f"the start took {elapsed:.1f}s with a 3 s preflight timeout"
    pids = [int(p) for p in pidfile.read_text().split()]
    assert pids, "the fake torch was never imported: the test did not exercise a hang"
    time.sleep(0.5)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], \
            f"the hung probe {pid} was left running"


def test_uv_path_missing_is_a_clear_error_not_a_silent_substitute(tmp_path, host_python, install_spec):
    missing = str(tmp_path / "tools" / "uv")
    name = install_spec("uvk-nouv", uv_path=missing)
    project = make_project(tmp_path / "proj", ["tomli-w"])
    before = snapshot(project)
    status, report, _ = check(project, "--kernel", name)
    assert status == 1
    assert_clear_error(report["message"], "UV_PATH_INVALID", missing, "uv_path")
    assert snapshot(project) == before and not (project / ".venv").exists()


def test_uv_failing_is_reported_and_the_next_start_recovers(tmp_path, host_python, install_spec):
    failing = install_spec("uvk-falseuv", uv_path="/bin/false")
    project = make_project(tmp_path / "proj", ["tomli-w"])
    before = snapshot(project)
    status, report, _ = check(project, "--kernel", failing)
    assert status == 1
    assert_clear_error(report["message"], "UV_FAILED", "created the env", "exit status 1")
    assert snapshot(project) == before
    status, report, _ = check(project, "--host-python", host_python)
    assert status == 0, report["message"]
    assert "tomli-w" in env_packages(project / ".venv")


def test_read_only_project_folder_puts_the_env_in_the_cache_with_a_notice(tmp_path, host_python):
    with tmpfs(tmp_path / "ro") as mount:
        project = make_project(mount / "proj", ["tomli-w"])
        remount(mount, read_only=True)
        before = snapshot(project)
        status, report, stderr = check(project, "--host-python", host_python)
        assert status == 0, report["message"]
        env = Path(report["project"]["env"])
        assert not (project / ".venv").exists() and snapshot(project) == before
        cache = Path(os.environ["XDG_CACHE_HOME"]) / "uvkernel"
        assert cache in env.parents, env
        reason = report["project"]["env_reason"]
        assert "notice" in reason and "read-only" in reason and str(project) in reason, reason
        assert "tomli-w" in env_packages(env)
        assert (env.stat().st_mode & 0o077) == 0, "the cache env must be private"


def test_full_disk_is_a_clear_error_and_the_next_start_resumes(tmp_path, host_python):
    with tmpfs(tmp_path / "small", size="1m") as mount:
        project = make_project(mount / "proj", ["tomli-w"])
        filler = mount / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        for chunk in (65536, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
        os.close(fd)
        before = snapshot(project)
        status, report, _ = check(project, "--host-python", host_python)
        assert status == 1
        assert_clear_error(report["message"], "DISK_FULL", str(project / ".venv"), "No space left", "df -h")
        assert {k: v for k, v in snapshot(project).items() if not k.startswith(".venv")} == before
        filler.unlink()  # the user frees space
        status, report, _ = check(project, "--host-python", host_python)
        assert status == 0, report["message"]
        assert "tomli-w" in env_packages(project / ".venv")
