"""The kernel's env from a terminal (`uvkernel sync`, `uvkernel run`, `uvkernel add/remove`), and
`!uvkernel add` from a notebook cell.  Real uv, real host torch, real kernels through jupyter_client."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import Kernel, make_project, run_async


def uvk(*args: str, cwd: Path | None = None, env: dict | None = None, stdin: str | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uvkernel", *args], capture_output=True, text=True, cwd=cwd,
                          env=env or os.environ.copy(), input=stdin, timeout=timeout)


def env_dists(env: Path) -> dict[str, str]:
    site = next(env.glob("lib/python*/site-packages"))
    out = {}
    for info in site.glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        out[name.lower().replace("_", "-")] = version
    return out


def files(project: Path) -> dict[str, bytes | None]:
    return {n: (project / n).read_bytes() if (project / n).exists() else None for n in ("pyproject.toml", "uv.lock")}


@pytest.fixture
def host_env(monkeypatch, host_python):
    """The CLI's host as a user would set it once (the rule's UVKERNEL_HOST_PYTHON)."""
    monkeypatch.setenv("UVKERNEL_HOST_PYTHON", host_python)
    return host_python


def test_sync_prepares_the_env_as_a_kernel_start_with_progress_on_a_terminal(tmp_path, host_env):
    project = make_project(tmp_path / "proj", ["tomli-w"])
    # on a terminal (stderr is a pty): phases, uv's steps and elapsed times
    main, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "uvkernel", "sync", "--project", str(project)],
                            stdout=subprocess.PIPE, stderr=secondary, text=True)
    os.close(secondary)
    shown = b""
    while True:
        ready, _, _ = select.select([main], [], [], 300)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    out, _ = proc.communicate(timeout=300)
    os.close(main)
    text = shown.decode(errors="replace")
    assert proc.returncode == 0, (out, text)
    assert "preparing the env for " + str(project) in text
    assert "uv venv: created the env" in text
    assert "uv pip compile: resolved " in text and f"uv pip install: installed {project}'s dependencies" in text
    assert "preflight: checking the host stack" in text
    assert " s] " in text  # elapsed time on every line
    assert out.startswith("uvkernel sync: env ready, a kernel would start")
    assert f"env: {project / '.venv'}" in out and "installed tomli-w==" in out
    env = project / ".venv"
    assert "tomli-w" in env_dists(env) and "torch" not in env_dists(env)
    assert json.loads((env / ".uvkernel-report.json").read_text())["ok"] is True

    # not on a terminal: no progress, just the summary; the second run has nothing to do
    again = uvk("sync", cwd=project)
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    assert "this run: nothing to change" in again.stdout


def test_sync_uses_the_kernel_specs_settings(tmp_path, install_spec):
    project = make_project(tmp_path / "proj", ["tomli-w"])
    name = install_spec("uvk-sync", install_ipykernel=False, project_dependencies=False)
    done = uvk("sync", "--kernel", name, "--project", str(project))
    assert done.returncode == 0, done.stderr
    assert "tomli-w" not in env_dists(project / ".venv")  # project_dependencies = false, from the spec


def test_run_uses_the_kernels_environment_and_passes_the_exit_status(tmp_path, host_env, host_torch_file):
    project = make_project(tmp_path / "proj", ["tomli-w"])
    code = ("import os, sys, json, site, torch, tomli_w; print(json.dumps({'torch': torch.__file__, "
            "'prefix': sys.prefix, 'path': os.environ['PATH'].split(os.pathsep), 'venv': os.environ['VIRTUAL_ENV'], "
            "'usersite': site.ENABLE_USER_SITE, 'exclude': os.environ.get('UV_EXCLUDE', ''), "
            "'stdin': sys.stdin.read()})); sys.exit(7)")
    done = uvk("run", "--project", str(project), "--", "python", "-c", code, stdin="from stdin")
    assert done.returncode == 7, done.stderr
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    env = project / ".venv"
    assert facts["torch"] == host_torch_file
    assert facts["prefix"] == str(env) and facts["venv"] == str(env)
    assert facts["usersite"] is False
    assert facts["exclude"].startswith(str(env))
    assert facts["stdin"] == "from stdin"
    host_bin = os.path.dirname(host_env)
    path = facts["path"]
    assert path[0] == str(env / "bin")
    assert path.index(host_bin) < path.index("/usr/bin")  # the host's console scripts (torchrun) after the env's
    assert (Path(path[1]) / "uvkernel").is_file()  # uvkernel itself, for nested use
    # a command without `--`, found on the env's PATH: a shell in it finds the stand-in for the host's torchrun,
    # which runs the host's script under the env's python
    which = uvk("run", "--project", str(project), "sh", "-c", "command -v python; command -v torchrun")
    assert which.returncode == 0, which.stderr
    python, torchrun = which.stdout.split()
    assert python == str(env / "bin" / "python")
    assert path.index(os.path.dirname(torchrun)) < path.index(host_bin), path
    assert os.path.join(host_bin, "torchrun") in Path(torchrun).read_text()


def test_run_bad_input(tmp_path, host_env):
    project = make_project(tmp_path / "proj", ["torch==2.5.*", "tomli-w"])
    marker = tmp_path / "ran"
    done = uvk("run", "--project", str(project), "--", "touch", str(marker))
    assert done.returncode == 1
    assert "[DEPENDENCY_CONFLICT]" in done.stderr and "torch==2.5.*" in done.stderr
    assert not marker.exists(), "the command ran although the env could not be prepared"
    # the same text a kernel start shows (uvkernel check prints the kernel start's message)
    check = uvk("check", str(project), "--json")
    assert json.loads(check.stdout)["message"].strip() in done.stderr
    nothing = uvk("run", "--project", str(project))
    assert nothing.returncode != 0 and "[RUN_NO_COMMAND]" in nothing.stderr
    assert "uvkernel run -- python train.py" in nothing.stderr
    missing = uvk("run", "--project", str(tmp_path / "nope"), "--", "true")
    assert missing.returncode != 0 and "[PROJECT_DIR_MISSING]" in missing.stderr and "nope" in missing.stderr
    unknown = uvk("run", "--project", str(make_project(tmp_path / "ok")), "--", "no-such-command-4711")
    assert unknown.returncode != 0 and "[RUN_COMMAND_FAILED]" in unknown.stderr


def test_add_records_a_bound_the_host_admits(tmp_path, host_env):
    """`uv add torchvision` would record >=0.29 (needs torch 2.15); the host has torch 2.13."""
    # PyPI's torchvision is built for PyPI's torch, not this host's +cpu build (the companion check refuses it,
    # test_companions.py); the project says so, here only the recorded bound matters
    project = make_project(tmp_path / "proj", ["tomli-w"], requires_python=">=3.11",
                           extra='\n[tool.uvkernel]\nallow_companion_mismatch = ["torchvision"]\n')
    done = uvk("add", "torchvision", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "recorded torchvision>=0.28.0" in done.stdout
    assert '"torchvision>=0.28.0"' in (project / "pyproject.toml").read_text()
    lock = (project / "uv.lock").read_text()
    assert 'name = "torchvision"\nversion = "0.28.0"' in lock and 'name = "torch"\nversion = "2.13.0"' in lock
    dists = env_dists(project / ".venv")
    assert dists.get("torchvision") == "0.28.0"
    assert "torch" not in dists and not [d for d in dists if d.startswith("nvidia")]


def test_add_and_remove_in_a_group_keep_the_lock_portable(tmp_path, host_env):
    project = make_project(tmp_path / "proj", [])
    done = uvk("add", "--group", "lint", "tomli-w", cwd=project)
    assert done.returncode == 0, done.stderr
    text = (project / "pyproject.toml").read_text()
    assert "[dependency-groups]" in text and "tomli-w>=" in text
    assert "tomli-w" in (project / "uv.lock").read_text()
    gone = uvk("remove", "--group", "lint", "tomli-w", cwd=project)
    assert gone.returncode == 0, gone.stderr
    assert "tomli-w" not in (project / "pyproject.toml").read_text()
    assert "tomli-w" not in (project / "uv.lock").read_text()


def test_remove_takes_out_of_the_env_what_uv_lock_no_longer_holds(tmp_path, host_env, uv_bin):
    """As `uv remove` and its sync: the removed package and what only it needed leave the env; a package another
    requirement still needs stays, and so does what the user installed by hand (never in uv.lock)."""
    project = make_project(tmp_path / "proj", ["tomli-w"])
    added = uvk("add", "markdown-it-py", "mdurl", cwd=project)
    assert added.returncode == 0, added.stderr
    env = project / ".venv"
    by_hand = subprocess.run([uv_bin, "pip", "install", "--python", str(env / "bin" / "python"), "tomli"],
                             capture_output=True, text=True)
    assert by_hand.returncode == 0, by_hand.stderr
    assert {"markdown-it-py", "mdurl", "tomli", "tomli-w"} <= set(env_dists(env))
    still_needed = uvk("remove", "mdurl", cwd=project)  # markdown-it-py requires it
    assert still_needed.returncode == 0, still_needed.stderr
    assert "uninstalled" not in still_needed.stdout and "mdurl" in env_dists(env)
    gone = uvk("remove", "markdown-it-py", cwd=project)
    assert gone.returncode == 0, gone.stderr
    dists = env_dists(env)
    assert "markdown-it-py" not in dists and "mdurl" not in dists, dists
    assert "tomli" in dists and "tomli-w" in dists, dists
    line = [x for x in gone.stdout.splitlines() if "uninstalled from the env" in x]
    assert line and "markdown-it-py" in line[0] and "mdurl" in line[0], gone.stdout


def test_add_conflicting_with_a_host_package_is_refused_with_the_kernel_start_text(tmp_path, host_env):
    project = make_project(tmp_path / "proj", ["tomli-w"])
    before = files(project)
    done = uvk("add", "torch==2.5.*", cwd=project)
    assert done.returncode == 1
    assert before == files(project)
    # what a kernel start says for the same requirement
    other = make_project(tmp_path / "other", ["torch==2.5.*"])
    check = json.loads(uvk("check", str(other), "--json").stdout)
    assert check["error"]["code"] == "DEPENDENCY_CONFLICT"
    first = check["message"].splitlines()[0]
    assert first in done.stderr
    assert "nothing was recorded: pyproject.toml and uv.lock are unchanged" in done.stderr


def test_add_of_a_name_that_does_not_exist(tmp_path, host_env):
    project = make_project(tmp_path / "proj", ["tomli-w"])
    before = files(project)
    done = uvk("add", "uvkernel-no-such-package-4711", cwd=project)
    assert done.returncode == 1
    assert "[PACKAGE_NOT_FOUND]" in done.stderr and "uvkernel-no-such-package-4711" in done.stderr, done.stderr
    assert before == files(project)


def test_a_refused_change_restores_pyproject_and_lock_byte_for_byte(tmp_path, host_env, uv_bin):
    # requires-python >= 3.9 lets uv lock for 3.9, which torchvision 0.28 does not support: uv refuses
    project = make_project(tmp_path / "proj", ["tomli-w"], requires_python=">=3.9")
    subprocess.run([uv_bin, "lock", "--python", host_env], cwd=project, check=True, capture_output=True)
    (project / "pyproject.toml").write_bytes((project / "pyproject.toml").read_bytes() + b"# keep me\n")
    before = files(project)
    done = uvk("add", "torchvision", cwd=project)
    assert done.returncode == 1
    assert "[CHANGE_FAILED]" in done.stderr and "torchvision==0.28.0" in done.stderr
    assert "requires-python" in done.stderr  # uv's own explanation comes through
    assert "back as they were before this command (byte for byte)" in done.stderr
    assert files(project) == before


def test_an_env_failure_after_the_change_restores_the_files(tmp_path, install_spec):
    # the spec requires a package the host lacks: the env is created, uv records the change, the preflight fails
    name = install_spec("uvk-strict", required_packages=["torch", "uvkernel_no_such_module"])
    project = make_project(tmp_path / "proj", [])
    before = files(project)
    done = uvk("add", "--kernel", name, "tomli-w", cwd=project)
    assert done.returncode == 1
    assert "uvkernel_no_such_module" in done.stderr
    assert "back as they were before this command (byte for byte)" in done.stderr
    assert files(project) == before and not (project / "uv.lock").exists()


def _workspace(tmp_path: Path, uv_bin: str, host: str) -> tuple[Path, Path]:
    """A workspace root project and its member `pkg`, locked: the one uv.lock is the root's."""
    top = make_project(tmp_path / "ws", ["pkg"], requires_python=">=3.11",
                       extra='\n[tool.uv.workspace]\nmembers = ["pkg"]\n\n[tool.uv.sources]\npkg = { workspace = true }\n')
    member = make_project(top / "pkg", [], requires_python=">=3.11", name="pkg",
                          extra='\n[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n')
    (member / "src" / "pkg").mkdir(parents=True)
    (member / "src" / "pkg" / "__init__.py").write_text("")
    subprocess.run([uv_bin, "lock", "--python", host], cwd=top, check=True, capture_output=True)
    return top, member


def test_an_env_failure_after_a_change_in_a_workspace_member_restores_the_workspaces_lock(tmp_path, install_spec,
                                                                                         uv_bin, host_python):
    """uv writes the member's pyproject.toml and the workspace's uv.lock (at the workspace root): both are put
    back, byte for byte, and the message saying so is true."""
    name = install_spec("uvk-strict", required_packages=["torch", "uvkernel_no_such_module"])
    top, member = _workspace(tmp_path, uv_bin, host_python)
    before = (top / "uv.lock").read_bytes(), (member / "pyproject.toml").read_bytes()
    done = uvk("add", "--kernel", name, "tomli-w", cwd=member)
    assert done.returncode == 1 and "uvkernel_no_such_module" in done.stderr, done.stderr
    assert "back as they were before this command (byte for byte)" in done.stderr
    assert ((top / "uv.lock").read_bytes(), (member / "pyproject.toml").read_bytes()) == before
    assert not (member / "uv.lock").exists()


def test_add_outside_a_project(tmp_path, host_env):
    folder = tmp_path / "loose"
    folder.mkdir()
    done = uvk("add", "tomli-w", cwd=folder)
    assert done.returncode != 0 and "[NOT_A_PROJECT]" in done.stderr and "uv init --bare" in done.stderr
    assert list(folder.iterdir()) == []


def _slow_uv(tmp_path: Path, uv_bin: str, step: str) -> tuple[Path, Path]:
    """A uv that stops at ``step`` ("venv": after creating the env; "pip install": before installing)."""
    reached = tmp_path / "reached"
    wrapper = tmp_path / "slow-uv"
    if step == "venv":
        body = f'if [ "$1" = venv ]; then "{uv_bin}" "$@"; echo > "{reached}"; sleep 300; exit 1; fi\n'
    else:
        body = f'if [ "$1 $2" = "pip install" ]; then echo > "{reached}"; sleep 300; fi\n'
    wrapper.write_text(f"#!/bin/sh\n{body}exec \"{uv_bin}\" \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper, reached


@pytest.mark.parametrize("step", ["venv", "pip install"])
def test_ctrl_c_during_sync_leaves_an_env_the_next_start_resumes(tmp_path, install_spec, host_python, uv_bin,
                                                                  step):
    wrapper, reached = _slow_uv(tmp_path, uv_bin, step)
    slow = install_spec("uvk-slow", uv_path=str(wrapper))
    project = make_project(tmp_path / "proj", ["tomli-w"])
    proc = subprocess.Popen([sys.executable, "-m", "uvkernel", "sync", "--kernel", slow, "--project", str(project)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not reached.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 30, "Ctrl-C did not stop the sync promptly"
    assert proc.returncode != 0
    assert "[INTERRUPTED]" in err and f"uvkernel sync --project {project}" in err
    assert not (project / ".venv" / ".uvkernel-state.json").exists()
    # the next start (here a sync with the normal uv) finishes the env
    done = uvk("sync", "--host-python", host_python, "--project", str(project))
    assert done.returncode == 0, done.stderr
    if step == "venv":
        assert "finished a creation interrupted by an earlier start" in done.stdout
    assert "tomli-w" in env_dists(project / ".venv")


def test_uvkernel_add_from_a_notebook_cell(tmp_path, install_spec, host_python):
    """`!uvkernel add` in a real kernel: same spec and host, uvkernel on the kernel's PATH."""
    project = make_project(tmp_path / "proj", [])
    name = install_spec("uvk-cell")

    async def scenario():
        async with Kernel(name, cwd=project) as k:
            context = await k.value("{k: __import__('os').environ.get(k) for k in "
                                    "('UVKERNEL_KERNEL', 'UVKERNEL_SETTINGS')}")
            which = await k.run("!command -v uvkernel")
            added = await k.run("!uvkernel add tomli-w")
            imported = await k.run("import importlib; importlib.invalidate_caches(); import tomli_w; "
                                   "print(tomli_w.__file__)")
            return context, which, added, imported

    context, which, added, imported = run_async(scenario())
    assert context["UVKERNEL_KERNEL"] == name
    assert json.loads(context["UVKERNEL_SETTINGS"])["host_python"] == host_python
    assert which.stdout.strip().endswith("/uvkernel") and "/bin/" in which.stdout
    assert "recorded tomli-w>=" in added.stdout, added.stdout + added.stderr
    assert "tomli-w>=" in (project / "pyproject.toml").read_text() and (project / "uv.lock").is_file()
    assert imported.stdout.strip().startswith(str(project / ".venv")), imported.error


def test_the_hosts_console_scripts_get_stand_ins_that_follow_the_host(tmp_path):
    """Only the host interpreter's scripts get a stand-in; it runs the script under $VIRTUAL_ENV's python (the
    host's own script when no env is active); one whose host script is gone goes with it."""
    from uvkernel import launch
    from uvkernel.host import HostPython

    bin_dir, python = tmp_path / "hostbin", tmp_path / "hostbin" / "python"
    bin_dir.mkdir()
    python.symlink_to(sys.executable)
    host = HostPython(path=str(python), reason="test", executable=str(python), version=(3, 11, 7),
                      implementation="cpython", prefix=str(tmp_path), base_prefix=sys.base_prefix,
                      base_executable=sys.executable, scripts=[str(bin_dir)])
    scripts = {"hostrun": f"#!{python}\nimport sys; print('ran by', sys.executable, sys.argv[1:])\n",
               "shell-tool": "#!/bin/sh\necho shell\n", "not-executable": f"#!{python}\n"}
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o644 if name == "not-executable" else 0o755)
    folder = launch.host_scripts_dir(tmp_path / "cache", host)
    assert folder is not None and sorted(os.listdir(folder)) == ["hostrun"]  # a folder just changed: no stamp
    env_python = Path(sys.prefix) / "bin" / "python"
    as_kernel = subprocess.run([str(folder / "hostrun"), "x"], capture_output=True, text=True, check=True,
                               env={**os.environ, "VIRTUAL_ENV": sys.prefix})
    assert as_kernel.stdout.split() == ["ran", "by", str(env_python), "['x']"], as_kernel.stdout
    bare = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    alone = subprocess.run([str(folder / "hostrun")], capture_output=True, text=True, check=True, env=bare)
    assert alone.stdout.split()[2] == str(python), alone.stdout
    # a settled folder is stamped, and a warm start reads only the stamp; a change to the folder is seen
    old = time.time_ns() - 60_000_000_000
    os.utime(bin_dir, ns=(old, old))
    assert launch.host_scripts_dir(tmp_path / "cache", host) == folder and (folder / ".source").is_file()
    (folder / "hostrun").write_text("#!/bin/sh\necho edited\n")
    assert launch.host_scripts_dir(tmp_path / "cache", host) == folder
    assert "edited" in (folder / "hostrun").read_text(), "an unchanged folder was read again"
    (bin_dir / "hostrun").unlink()
    assert launch.host_scripts_dir(tmp_path / "cache", host) == folder and os.listdir(folder) == []
