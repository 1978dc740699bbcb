"""The kernel-spec generator, the shipped spec, settings from config, the argv-only path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, Kernel, make_project, run_async, uvkernel_cli

from uvkernel import host as host_mod


def _specs(kind: str = "uvkernel") -> dict:
    return json.loads(uvkernel_cli("list", "--json").stdout)["kernelspecs"]


@pytest.mark.parametrize("where", ["user", "sys-prefix", "prefix"])
def test_install_list_uninstall(where, tmp_path, host_python, isolated, monkeypatch):
    name = f"uvk-{where}-{os.getpid()}"
    if where == "user":
        flags, expected = ["--user"], isolated / "data" / "kernels" / name
    elif where == "sys-prefix":
        flags, expected = ["--sys-prefix"], Path(sys.prefix) / "share" / "jupyter" / "kernels" / name
    else:
        prefix = tmp_path / "pfx"
        flags, expected = ["--prefix", str(prefix)], prefix / "share" / "jupyter" / "kernels" / name
        monkeypatch.setenv("JUPYTER_PATH", f"{isolated / 'data'}{os.pathsep}{prefix / 'share' / 'jupyter'}")
    try:
        out = uvkernel_cli("install", *flags, "--name", name, "--display-name", "GPU project",
                           "--host-python", host_python, "--env", "FOO", "bar", "--set", "min_gpus=0")
        assert str(expected) in out.stdout
        spec = json.loads((expected / "kernel.json").read_text())
        assert spec["display_name"] == "GPU project"
        assert spec["env"] == {"FOO": "bar"}
        assert spec["metadata"]["kernel_provisioner"] == {
            "provisioner_name": "uvkernel", "config": {"host_python": host_python, "min_gpus": 0}}
        assert spec["argv"][0] == sys.executable and "{connection_file}" in spec["argv"]
        assert (expected / "logo-64x64.png").is_file()
        listed = {s["name"]: s for s in _specs()}
        assert listed[name]["host_python"] == host_python
        assert Path(listed[name]["resource_dir"]) == expected
        # jupyter's own view agrees
        ks = subprocess.run([sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"], capture_output=True,
                            text=True, check=True)
        assert name in json.loads(ks.stdout)["kernelspecs"]
        out = uvkernel_cli("uninstall", name, *flags[:1] if where != "prefix" else flags)
        assert not expected.exists()
        assert name not in {s["name"] for s in _specs()}
    finally:
        if expected.exists():
            import shutil

            shutil.rmtree(expected)


def test_jupyter_subcommand_works(host_python):
    done = subprocess.run([sys.executable, "-m", "jupyter", "uvkernel", "install", "--user", "--name", "via-jupyter",
                           "--host-python", host_python], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "via-jupyter" in {s["name"] for s in _specs()}


@pytest.mark.parametrize("name", ["Bad Name", "ümlaut", "a/b", ""])
def test_invalid_names_refused(name, host_python):
    done = uvkernel_cli("install", "--user", "--name", name, "--host-python", host_python, check=False)
    assert done.returncode == 2
    assert "KERNEL_NAME_INVALID" in done.stderr and "uvkernel install --name" in done.stderr


def test_bad_host_python_refused_at_install(tmp_path):
    missing = uvkernel_cli("install", "--user", "--host-python", str(tmp_path / "nope" / "python"), check=False)
    assert missing.returncode == 2 and "HOST_PYTHON_MISSING" in missing.stderr
    assert str(tmp_path / "nope" / "python") in missing.stderr
    not_python = tmp_path / "fake-python"
    not_python.write_text("#!/bin/sh\necho hello\n")
    not_python.chmod(0o755)
    bad = uvkernel_cli("install", "--user", "--host-python", str(not_python), check=False)
    assert bad.returncode == 2 and "HOST_PYTHON_NOT_PYTHON" in bad.stderr
    old = tmp_path / "old-python"
    old.write_text("#!/bin/sh\necho '{\"executable\": \"/x\", \"version\": [3, 7, 9], \"implementation\": "
                   "\"cpython\", \"prefix\": \"/x\", \"base_prefix\": \"/x\", \"base_executable\": \"/x\", "
                   "\"site_packages\": [], \"conda\": false, \"has_ipykernel\": false}'\n")
    old.chmod(0o755)
    too_old = uvkernel_cli("install", "--user", "--host-python", str(old), check=False)
    assert too_old.returncode == 2 and "HOST_PYTHON_TOO_OLD" in too_old.stderr and "3.7.9" in too_old.stderr
    assert not [s for s in _specs() if s["name"] != "uvkernel"]  # nothing written besides the shipped spec


def test_host_choice_rule(host_python):
    assert host_mod.choose("/explicit/python", {"UVKERNEL_HOST_PYTHON": "/env/python"})[0] == "/explicit/python"
    path, reason = host_mod.choose("", {"UVKERNEL_HOST_PYTHON": "/env/python"})
    assert path == "/env/python" and "UVKERNEL_HOST_PYTHON" in reason
    path, reason = host_mod.choose("", {})
    assert path == sys.executable and "interpreter running Jupyter" in reason


def test_settings_from_jupyter_config_file(tmp_path, install_spec, isolated):
    """A trait set in jupyter_config.py applies; the spec's config wins over it."""
    project = make_project(tmp_path / "proj")
    (isolated / "config" / "jupyter_config.py").write_text(
        "c.UvKernelProvisioner.required_packages = ['torch', 'surely_not_installed_pkg']\n")
    name = install_spec()

    async def start():
        k = Kernel(name, cwd=project)
        try:
            await k.km.start_kernel(cwd=str(project))
        except Exception as exc:  # noqa: BLE001 - the error text is what we check
            return str(exc)
        await k.km.shutdown_kernel(now=True)
        return ""

    from jupyter_client.manager import AsyncKernelManager
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    cfg = PyFileConfigLoader("jupyter_config.py", str(isolated / "config")).load_config()
    assert isinstance(cfg, Config)

    async def start_with_config():
        km = AsyncKernelManager(kernel_name=name, config=cfg)
        try:
            await km.start_kernel(cwd=str(project))
        except Exception as exc:  # noqa: BLE001
            return str(exc)
        await km.shutdown_kernel(now=True)
        return ""

    message = run_async(start_with_config())
    assert "surely_not_installed_pkg" in message and "TORCH_NOT_FOUND" in message
    # the spec's own config wins over the config file
    install_spec(name=name, required_packages=["torch"])
    assert run_async(start_with_config()) == ""


def test_argv_alone_starts_the_kernel(tmp_path, install_spec, host_torch_file, isolated):
    """Clients that ignore provisioners (VS Code) run kernel.json's argv: it must still work."""
    project = make_project(tmp_path / "proj")
    name = install_spec()
    spec_dir = isolated / "data" / "kernels" / name
    spec = json.loads((spec_dir / "kernel.json").read_text())
    del spec["metadata"]["kernel_provisioner"]
    plain = isolated / "data" / "kernels" / "plain-argv"
    plain.mkdir()
    # the argv names the spec to read settings from: keep it pointing at the full one
    (plain / "kernel.json").write_text(json.dumps(spec))

    # a folder named like our package next to the notebook must not run in Jupyter's interpreter
    decoy = project / "uvkernel"
    decoy.mkdir()
    (decoy / "__init__.py").write_text(f"open({str(tmp_path / 'hijacked')!r}, 'w').write('yes')\n")

    async def scenario():
        async with Kernel("plain-argv", cwd=project) as k:
            return await k.value("[__import__('torch').__file__, __import__('sys').prefix]")

    torch_file, prefix = run_async(scenario())
    assert torch_file == host_torch_file
    assert prefix == str(project / ".venv")
    assert not (tmp_path / "hijacked").exists()


def test_shipped_spec_matches_the_generator():
    from uvkernel import kernelspec

    shipped = json.loads((REPO / "share" / "jupyter" / "kernels" / "uvkernel" / "kernel.json").read_text())
    generated = kernelspec.spec_dict(display_name=kernelspec.DEFAULT_DISPLAY_NAME, config={}, env={},
                                     name="uvkernel", python="python")
    assert shipped == generated


def test_wheel_ships_a_spec(tmp_path, uv_bin, host_python):
    """After `pip install` of the wheel, `jupyter kernelspec list` shows the shipped uvkernel spec."""
    venv = tmp_path / "site"
    subprocess.run([uv_bin, "venv", "-q", "--python", host_python, str(venv)], check=True)
    subprocess.run([uv_bin, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), str(REPO),
                    "jupyter_core"], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_PATH")}
    listing = subprocess.run([str(venv / "bin" / "jupyter"), "kernelspec", "list", "--json"], capture_output=True,
                             text=True, env=env, check=True)
    specs = json.loads(listing.stdout)["kernelspecs"]
    assert "uvkernel" in specs
    assert Path(specs["uvkernel"]["resource_dir"]) == venv / "share" / "jupyter" / "kernels" / "uvkernel"
    assert specs["uvkernel"]["spec"]["metadata"]["kernel_provisioner"]["provisioner_name"] == "uvkernel"
    # the provisioner entry point is registered in that install
    eps = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "from importlib.metadata import entry_points;"
                          "print([e.value for e in entry_points(group='jupyter_client.kernel_provisioners')"
                          " if e.name == 'uvkernel'])"], capture_output=True, text=True, check=True)
    assert "uvkernel.provisioner:UvKernelProvisioner" in eps.stdout
