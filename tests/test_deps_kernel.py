"""A project's dependencies without a second torch, end to end: real kernels started through the provisioner.

Each scenario ends in a kernel whose torch is the host's, with an env that holds no torch/nvidia/triton wheels.
Downloads stay small because the exclusion works: torch itself is never fetched.
"""

from __future__ import annotations

import json

from deps_support import assert_no_stack, cli, dists, host_dists, torch_wheel_file, uv
from helpers import Kernel, make_project, run_async


def _torch_file(kernel: Kernel) -> str:
    return kernel.value("__import__('torch').__file__")


def test_direct_torch_project_and_installs_from_the_notebook(tmp_path, install_spec, host_python, host_torch_file):
    project = make_project(tmp_path / "proj", ["torch", "tomli-w"])
    env = project / ".venv"
    name = install_spec()
    host_before = host_dists(host_python)
    for newcomer in ("pytorch-ignite", "tabulate", "torchmetrics", "humanize"):
        assert newcomer not in host_before, f"the host already has {newcomer}: pick another package for this test"

    async def scenario():
        async with Kernel(name, cwd=project) as k:
            first = await k.value("[__import__('torch').__file__, __import__('tomli_w').__file__]")
            # %pip: the env's python runs pip (inherited from the host); pytorch-ignite needs torch: pip keeps
            # the host's (PIP_CONSTRAINT holds the host's exact versions)
            pip_magic = await k.run("%pip install -q pytorch-ignite==0.5.5")
            # !pip: the shell finds the env's pip command first on PATH (never the host's pip)
            pip_shell = await k.run("!pip install -q tabulate")
            # !uv pip: installs into VIRTUAL_ENV; UV_EXCLUDE keeps torch (and every host name) out
            uv_shell = await k.run("!uv pip install torchmetrics==1.9.0")
            which = await k.run("!command -v pip")
            # asking for another torch outright: pip refuses (the host's version is a constraint), uv skips it
            other_torch_pip = await k.run("%pip install torch==2.12.0")
            other_torch_uv = await k.run("!uv pip install torch==2.12.0")
            # a fresh interpreter: what a restarted kernel imports
            after = await k.value(
                "__import__('subprocess').run([__import__('sys').executable, '-c', 'import torch, ignite, tabulate,"
                " torchmetrics; print(torch.__file__, ignite.__file__, tabulate.__file__, torchmetrics.__file__)'],"
                " capture_output=True, text=True).stdout.split()")
            # !uv add: uv edits pyproject.toml and uv.lock itself but does not sync (UV_NO_SYNC): no torch comes
            # in; the restart installs the new requirement the uvkernel way
            uv_add = await k.run("!uv add -q humanize")
            await k.restart()
            added = await k.value("[__import__('humanize').__file__, __import__('torch').__file__]")
            return first, pip_magic, pip_shell, uv_shell, which, other_torch_pip, other_torch_uv, after, uv_add, added

    (first, pip_magic, pip_shell, uv_shell, which, other_torch_pip, other_torch_uv, after, uv_add,
     added) = run_async(scenario())
    assert first == [host_torch_file, str(env / "lib/python3.11/site-packages/tomli_w/__init__.py")]
    for cell in (pip_magic, pip_shell, uv_shell):
        assert cell.error is None and cell.status == "ok", cell
    assert which.stdout.strip() == str(env / "bin" / "pip")
    assert "ResolutionImpossible" in other_torch_pip.stdout + other_torch_pip.stderr
    assert other_torch_uv.error is None
    assert len(after) == 4, (after, pip_magic.stdout, pip_shell.stdout, uv_shell.stdout)
    torch_after, ignite, tabulate, torchmetrics = after
    assert torch_after == host_torch_file, (pip_magic.stdout, uv_shell.stdout)
    for path in (ignite, tabulate, torchmetrics):
        assert path.startswith(str(env) + "/"), path
    assert uv_add.error is None and "humanize" in (project / "pyproject.toml").read_text()
    assert (project / "uv.lock").exists()  # written by uv itself, as the user asked
    assert added[0].startswith(str(env) + "/") and added[1] == host_torch_file
    held = dists(env)
    assert {"tomli-w", "pytorch-ignite", "tabulate", "torchmetrics", "lightning-utilities", "humanize"} <= set(held)
    assert_no_stack(env)
    assert not {"pytorch-ignite", "tabulate", "torchmetrics", "humanize"} & set(host_dists(host_python))  # nor the host


def test_transitive_torch_through_torchmetrics_with_a_lock(tmp_path, install_spec, host_python, host_torch_file):
    project = make_project(tmp_path / "proj", ["torchmetrics<=1.9.0"], requires_python=">=3.10")
    uv("lock", "-q", "--python", host_python, cwd=project)
    lock = (project / "uv.lock").read_bytes()
    pyproject = (project / "pyproject.toml").read_bytes()
    assert b'name = "nvidia-' in lock or b'name = "torch"' in lock  # the lock itself lists torch's closure
    name = install_spec()

    async def scenario():
        async with Kernel(name, cwd=project) as k:
            return await k.value(
                "(lambda tm, t: [t.__file__, tm.__file__, float(tm.functional.accuracy(t.tensor([1, 0, 1]),"
                " t.tensor([1, 1, 1]), task='binary'))])(__import__('torchmetrics'), __import__('torch'))")

    torch_file, torchmetrics_file, accuracy = run_async(scenario())
    env = project / ".venv"
    assert torch_file == host_torch_file
    assert torchmetrics_file.startswith(str(env) + "/")
    assert abs(accuracy - 2 / 3) < 1e-6  # torchmetrics from the env really runs on the host's torch
    assert_no_stack(env)
    assert (project / "uv.lock").read_bytes() == lock and (project / "pyproject.toml").read_bytes() == pyproject


def test_conflicting_torch_pin_stops_the_start(tmp_path, install_spec, host_python):
    project = make_project(tmp_path / "proj", ["torch==2.5.*", "tomli-w"])
    kernel = Kernel(install_spec(), cwd=project)

    async def scenario():
        try:
            await kernel.__aenter__()
        except Exception:
            return kernel.km.provisioner.last_error  # what the provisioner reported to the server
        await kernel.__aexit__(None, None, None)
        return None

    error = run_async(scenario())
    assert error is not None, "the kernel started despite the conflict"
    text = str(error)
    assert error.code == "DEPENDENCY_CONFLICT" and "torch==2.5.*" in text
    assert host_dists(host_python)["torch"] in text and "allow_shadowing" in text
    assert dists(project / ".venv") == {}


def test_python_version_file_and_uv_python_never_change_the_env(tmp_path, install_spec, monkeypatch,
                                                                 host_python, host_torch_file):
    project = make_project(tmp_path / "proj", ["tomli-w"])
    (project / ".python-version").write_text("3.12\n")  # a CPython 3.12 exists on this machine
    monkeypatch.setenv("UV_PYTHON", "3.12")  # in the server's environment too
    name = install_spec()

    async def scenario():
        async with Kernel(name, cwd=project) as k:
            return await k.value("[__import__('torch').__file__, list(__import__('sys').version_info[:2])]")

    torch_file, version = run_async(scenario())
    assert torch_file == host_torch_file and version == [3, 11]
    cfg = (project / ".venv" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg and "version_info = 3.11" in cfg
    assert (project / ".python-version").read_text() == "3.12\n"
    assert_no_stack(project / ".venv")


def test_existing_uv_sync_venv_with_its_own_torch_is_reported_then_unshadowed(tmp_path, install_spec, host_python,
                                                                              host_torch_file):
    """A .venv as a plain `uv sync` leaves it: no system site-packages, its own torch (the CPU wheel by path, to
    stay cheap) and a newer typing-extensions; plus a package of the project's own that must survive."""
    project = make_project(tmp_path / "proj", ["torch", "tomli-w"])
    env = project / ".venv"
    uv("venv", "-q", "--python", host_python, str(env))
    uv("pip", "install", "-q", "--python", str(env / "bin" / "python"), "--no-deps",
       str(torch_wheel_file(host_python)), "tomli-w", "typing-extensions>4.15")
    hidden = {"torch", "typing-extensions"}
    assert hidden <= set(dists(env))

    checked = cli("check", str(project), "--host-python", host_python, check=False)
    assert checked.returncode == 1
    assert "TORCH_SHADOWED" in checked.stdout and "uvkernel unshadow" in checked.stdout
    assert "torch 2.13.0+cpu in the env hides the host's" in checked.stdout
    report = json.loads(cli("check", str(project), "--host-python", host_python, "--json", check=False).stdout)
    assert {s["name"].lower().replace("_", "-") for s in report["env"]["shadowing"]} == hidden

    dry = cli("unshadow", str(project), "--host-python", host_python, "--dry-run", check=True)
    assert "dry run, nothing removed" in dry.stdout and "torch" in dry.stdout
    assert hidden <= set(dists(env))

    done = cli("unshadow", str(project), "--host-python", host_python, check=True)
    # torch is the host's stack: its copy goes; typing-extensions is not: the env's own copy is kept, and said so
    assert "removed 1 package(s)" in done.stdout
    assert "kept on purpose (the env's own copy of a package outside the host's stack): typing_extensions" \
        in done.stdout.replace("typing-extensions", "typing_extensions")
    left = dists(env)
    assert "torch" not in left and "typing-extensions" in left and "tomli-w" in left
    assert_no_stack(env)
    assert "nothing to do" in cli("unshadow", str(project), "--host-python", host_python, check=True).stdout

    name = install_spec()

    async def scenario():
        async with Kernel(name, cwd=project) as k:
            return await k.value("__import__('torch').__file__")

    assert run_async(scenario()) == host_torch_file
    assert "include-system-site-packages = true" in (env / "pyvenv.cfg").read_text()
