"""A host that is itself a venv (GPU images keep torch in e.g. /opt/…/.venv).

``--system-site-packages`` would inherit the venv's BASE, not the venv (the flag points at the base
prefix), so the child env is built on the same base interpreter and the host venv's site-packages are layered
below the env's own with a .pth file; the layer and the flag are verified on every start.  The host here is a real venv made by uv from the
host interpreter, holding the real CPU torch wheel and ipykernel, without system site-packages (as images build
them).  Conda prefixes are not simulated: see docs/dependencies.md.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from deps_support import assert_no_stack, dists, torch_wheel_file, uv
from helpers import Kernel, make_project, run_async

from uvkernel import pipeline
from uvkernel.env import venv
from uvkernel.settings import UvKernelSettings


@pytest.fixture(scope="module")
def venv_host(tmp_path_factory, host_python) -> Path:
    """/opt/torch/.venv, as a GPU image has it: torch (CPU wheel here) and ipykernel, no pip, no system site."""
    base = subprocess.run([host_python, "-I", "-c", "import sys; print(sys._base_executable)"], capture_output=True,
                          text=True, check=True).stdout.strip()
    venv = tmp_path_factory.mktemp("opt") / "torch" / ".venv"
    uv("venv", "-q", "--python", base, str(venv))
    uv("pip", "install", "-q", "--python", str(venv / "bin" / "python"), str(torch_wheel_file(host_python)),
       "ipykernel")
    return venv


def test_venv_host_is_layered_below_the_env(tmp_path, install_spec, venv_host):
    host_site = next(venv_host.glob("lib/python3*/site-packages"))
    project = make_project(tmp_path / "proj", ["torch", "tomli-w"])
    env = project / ".venv"
    name = install_spec(host=str(venv_host / "bin" / "python"))

    async def scenario():
        async with Kernel(name, cwd=project) as k:
            return await k.value(
                "(lambda sys, torch, ipykernel, tomli_w, pip: [torch.__file__, ipykernel.__file__, tomli_w.__file__,"
                " pip.__file__, sys.prefix, [p for p in sys.path if p.endswith('site-packages')]])"
                "(*map(__import__, ['sys', 'torch', 'ipykernel', 'tomli_w', 'pip']))")

    torch_file, ipykernel_file, tomli_file, pip_file, prefix, site_order = run_async(scenario())
    assert torch_file == str(host_site / "torch" / "__init__.py")
    assert ipykernel_file.startswith(str(host_site) + "/")
    assert tomli_file.startswith(str(env) + "/") and prefix == str(env)
    assert pip_file.startswith(str(env) + "/")  # the host venv has no pip: %pip gets one in the env
    env_site = str(venv.site_packages_of(env, (3, 11)))
    assert site_order[:2] == [env_site, str(host_site)]  # the env's own packages win, then the host venv
    cfg = (env / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg  # as the host venv: its base stays invisible
    assert_no_stack(env)
    assert "torch" not in dists(env)


def test_venv_host_layer_and_flag_are_verified_every_start(tmp_path, venv_host):
    project = make_project(tmp_path / "proj", [])
    settings = UvKernelSettings(host_python=str(venv_host / "bin" / "python"))

    def prepare() -> pipeline.Prepared:
        return asyncio.run(pipeline.prepare(settings, cwd=str(project), environ=dict(os.environ)))

    first = prepare()
    env = project / ".venv"
    pth = venv.site_packages_of(env, (3, 11)) / venv.LAYER_PTH
    layer = pth.read_text()
    assert str(next(venv_host.glob("lib/python3*/site-packages"))) in layer
    assert first.env.layer and first.preflight.ok

    pth.unlink()
    cfg = env / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace("include-system-site-packages = false",
                                           "include-system-site-packages = true"))
    again = prepare()
    assert pth.read_text() == layer
    assert "include-system-site-packages = false" in cfg.read_text()
    assert any(a.startswith("layered the host venv") for a in again.env.actions)
    assert "repaired: system-site-packages turned off" in again.env.actions
    assert again.preflight.ok
    assert prepare().env.actions == []  # and nothing to do the time after
