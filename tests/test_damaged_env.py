"""Damaged envs are repaired in place, keeping every installed package, and the report says what was repaired:
deleted or broken bin/python* links, a missing pyvenv.cfg (only for an env uvkernel's state file says it made),
a missing activation script or bin/pip.  What cannot be repaired is refused with its code: an env really made
from another interpreter (ENV_OTHER_INTERPRETER), a conda prefix or a full Python installation (ENV_NOT_A_VENV),
a lock folder on a file system without working flock (LOCK_UNSUPPORTED).  Real uv, real envs, the real host."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from pathlib import Path

import pytest
from deps_support import dists, uv
from hardening_support import assert_clear_error, check, snapshot
from helpers import make_project

from uvkernel import pipeline
from uvkernel.env import venv
from uvkernel.errors import EnvError
from uvkernel.settings import UvKernelSettings


def prepare_env(host_python: str, project: Path) -> pipeline.Prepared:
    settings = UvKernelSettings(host_python=host_python)
    return asyncio.run(pipeline.prepare_env(settings, cwd=str(project), environ=dict(os.environ)))


def refused(host_python: str, project: Path) -> EnvError:
    with pytest.raises(EnvError) as info:
        prepare_env(host_python, project)
    return info.value


@pytest.fixture
def ready(tmp_path, host_python):
    """A project whose env uvkernel prepared, holding a package (tomli-w) and a file the user put there."""
    project = make_project(tmp_path / "proj", ["tomli-w"])
    first = prepare_env(host_python, project)
    assert "created" in first.env.actions
    env = project / ".venv"
    (venv.site_packages_of(env, (3, 11)) / "user_extra.py").write_text("X = 1\n")
    return project, env


def _kept(env: Path) -> None:
    assert "tomli-w" in dists(env), "an installed package was lost"
    assert (venv.site_packages_of(env, (3, 11)) / "user_extra.py").read_text() == "X = 1\n"
    done = subprocess.run([str(env / "bin" / "python"), "-c", "import tomli_w, user_extra, torch, sys; "
                           "print(sys.prefix)"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == str(env), done.stderr  # host torch still inherited


def test_deleted_interpreter_links_are_repaired_in_place(ready, host_python):
    project, env = ready
    for name in ("python", "python3", "python3.11"):
        (env / "bin" / name).unlink()
    again = prepare_env(host_python, project)
    assert "repaired: recreated bin/python, bin/python3, bin/python3.11 (the interpreter links)" in again.env.actions
    _kept(env)
    assert again.report()["env"]["actions"] == again.env.actions  # the report says what was repaired
    third = prepare_env(host_python, project)
    assert third.env.reused and third.env.actions == []


def test_interpreter_links_pointing_nowhere_are_repaired(ready, host_python):
    project, env = ready
    (env / "bin" / "python").unlink()
    (env / "bin" / "python").symlink_to("/nonexistent/bin/python3")
    again = prepare_env(host_python, project)
    assert any(a.startswith("repaired: recreated bin/python") for a in again.env.actions), again.env.actions
    assert os.path.realpath(env / "bin" / "python") == os.path.realpath(host_python)
    _kept(env)


def test_deleted_links_of_an_env_from_another_interpreter_stay_env_other_interpreter(tmp_path, host_python):
    other = Path("/root/.pyenv/versions/3.12.1/bin/python3.12")
    if not other.exists():
        pytest.fail(f"this test needs a second interpreter at {other}")
    project = make_project(tmp_path / "proj")
    env = project / ".venv"
    uv("venv", "-q", "--python", str(other), str(env))
    for link in (env / "bin").glob("python*"):
        link.unlink()
    before = snapshot(env)
    error = refused(host_python, project)
    assert error.code == "ENV_OTHER_INTERPRETER", error
    assert_clear_error(str(error), "ENV_OTHER_INTERPRETER", str(env), "3.12", f"mv {env} {env}.old")
    assert snapshot(env) == before


def test_missing_pyvenv_cfg_of_an_env_uvkernel_made_is_rebuilt(ready, host_python):
    project, env = ready
    (env / "pyvenv.cfg").unlink()
    again = prepare_env(host_python, project)
    assert "repaired: rebuilt the missing pyvenv.cfg (installed packages kept)" in again.env.actions
    assert "include-system-site-packages = true" in (env / "pyvenv.cfg").read_text()
    _kept(env)


def test_missing_pyvenv_cfg_with_another_hosts_state_is_refused(ready, host_python):
    project, env = ready
    (env / "pyvenv.cfg").unlink()
    state = venv.read_state(env)
    state["host"] = "/opt/other/bin/python3"
    venv.write_state(env, state)
    before = snapshot(env)
    error = refused(host_python, project)
    assert error.code == "ENV_OTHER_INTERPRETER" and "/opt/other/bin/python3" in str(error), error
    assert snapshot(env) == before


@pytest.mark.parametrize("kind", ["conda-prefix", "python-installation", "conda-prefix-with-stray-state"])
def test_a_conda_prefix_or_python_installation_is_never_rebuilt(tmp_path, host_python, kind):
    project = make_project(tmp_path / "proj")
    env = project / ".venv"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python3.11").symlink_to(host_python)
    (env / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    (env / "lib" / "python3.11" / "site-packages" / "keep.py").write_text("K = 1\n")
    if kind.startswith("conda-prefix"):
        (env / "conda-meta").mkdir()
        (env / "conda-meta" / "history").write_text("==> 2026-01-01 <==\n")
    else:
        (env / "lib" / "python3.11" / "os.py").write_text("# the stdlib of a full installation\n")
    if kind.endswith("stray-state"):
        (env / venv.STATE_FILE).write_text('{"fingerprint": "x", "host": "%s"}' % host_python)
    before = snapshot(env)
    error = refused(host_python, project)
    assert_clear_error(str(error), "ENV_NOT_A_VENV", str(env), f"mv {env} {env}.bak")
    assert snapshot(env) == before and not (env / "pyvenv.cfg").exists()


def test_missing_activation_script_and_pip_command_are_repaired(ready, host_python):
    project, env = ready
    (env / "bin" / "activate").unlink()
    for name in ("pip", "pip3"):
        if os.path.lexists(env / "bin" / name):
            (env / "bin" / name).unlink()
    again = prepare_env(host_python, project)
    assert "repaired: recreated the activation scripts (bin/activate)" in again.env.actions, again.env.actions
    assert "repaired: recreated bin/pip (runs the env's pip)" in again.env.actions, again.env.actions
    assert (env / "bin" / "activate").is_file() and os.access(env / "bin" / "pip", os.X_OK)
    _kept(env)


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.ENOSYS])
def test_lock_on_a_file_system_without_working_flock_is_a_coded_error(tmp_path, host_python, code):
    from doubles.noflock import build

    library = build(tmp_path)
    project = make_project(tmp_path / "proj")
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "uvkernel"
    env = {**os.environ, "LD_PRELOAD": str(library), "NOFLOCK_UNDER": str(cache), "NOFLOCK_ERRNO": str(code)}
    status, report, stderr = check(project, "--host-python", host_python, env=env)
    assert status == 1, (report, stderr)
    assert report["error"]["code"] == "LOCK_UNSUPPORTED", report["error"]
    assert_clear_error(report["message"], "LOCK_UNSUPPORTED", str(cache / "locks"), os.strerror(code),
                       "cache_dir=")
    assert not (project / ".venv").exists(), "the env was built without a working lock"
