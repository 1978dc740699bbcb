"""The preflight on the real host: CPU torch 2.13.0 in the host interpreter's site-packages.

Also ``uvkernel check`` (subprocess: table, colour, JSON, exit codes) and ``%uvkernel`` in a real kernel.
One project env serves the module.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from doubles import fake_torch
from helpers import Kernel, make_project, run_async, uvkernel_cli


@pytest.fixture(scope="module")
def cpu_project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("cpu") / "proj")


def prepare(host_python: str, folder: Path, cache: Path, recheck: bool = False, **settings):
    from uvkernel import pipeline
    from uvkernel.errors import UvkernelError
    from uvkernel.settings import from_config

    config = {"host_python": host_python, "cache_dir": str(cache), **settings}
    environ = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "PYTHONPATH")}
    try:
        return asyncio.run(pipeline.prepare(from_config(config), cwd=str(folder), environ=environ, recheck=recheck,
                                            log=lambda _m: None)), None
    except UvkernelError as exc:
        return None, exc


def test_cpu_torch_auto_passes_with_a_notice(host_python, host_torch_file, cpu_project, tmp_path):
    prepared, error = prepare(host_python, cpu_project, tmp_path)
    assert error is None, str(error)
    result = prepared.preflight
    assert result.ok and not result.gpu_expected and result.deep == "ran"
    assert "torch 2.13.0+cpu is a CPU-only build: the kernel runs without CUDA (require_cuda = auto)" in result.notices
    facts = result.facts
    assert facts["packages"]["torch"]["origin"] == "host"
    assert facts["packages"]["torch"]["location"] == os.path.dirname(host_torch_file)
    assert facts["torch"]["build"] == "cpu" and facts["torch"]["cuda"] is None
    deep = facts["deep"]
    assert deep["imports"]["torch"]["ok"] and deep["imports"]["torch"]["version"] == "2.13.0+cpu"
    assert deep["torch"]["file"] == host_torch_file and deep["torch"]["cudnn"] is None
    assert "cuda_init" not in deep["torch"]  # nothing to initialise on a CPU build
    # the next start takes the deep facts from the cache: no torch import, well under the import's time
    again, error = prepare(host_python, cpu_project, tmp_path)
    assert error is None and again.preflight.cached and again.preflight.deep == "cached"
    assert again.preflight.timings.get("deep_s") is None
    assert again.preflight.timings["cheap_s"] < result.timings["deep_s"]


def test_cpu_torch_with_require_cuda_fails(host_python, cpu_project, tmp_path):
    _, error = prepare(host_python, cpu_project, tmp_path, require_cuda="true")
    assert error is not None and error.code == "TORCH_NOT_CUDA_BUILD"
    text = str(error)
    assert text.startswith("uvkernel: the host's torch 2.13.0+cpu is a CPU-only build, but CUDA is required "
                           "(require_cuda = true) [TORCH_NOT_CUDA_BUILD]")
    assert "torch.version.cuda: None" in text
    assert f"How to fix: install a CUDA build of torch into the host (`{host_python} -m pip install" in text
    assert "%" not in text


def test_torch_installed_into_the_env_is_shadowed(host_python, cpu_project, tmp_path):
    prepared, error = prepare(host_python, cpu_project, tmp_path)
    assert error is None, str(error)
    site = prepared.env.site_packages
    fake_torch.install(site, version="2.15.0", cuda="12.8")  # what `uv pip install torch` into the env would do
    try:
        _, error = prepare(host_python, cpu_project, tmp_path)
        assert error is not None and error.code == "TORCH_SHADOWED"
        text = str(error)
        assert f"torch in the kernel would come from {site / 'torch'} (env), which hides the host's copy" in text
        assert f"How to fix: remove the env's copy and keep the host's: uvkernel unshadow {cpu_project}" in text
        copies = error.result.facts["packages"]["torch"]["copies"]
        assert [(c["origin"], c["version"]) for c in copies] == [("env", "2.15.0"), ("host", "2.13.0+cpu")]
        assert error.result.deep.startswith("not run")  # the env's torch is never imported
    finally:
        fake_torch.remove(site)
    prepared, error = prepare(host_python, cpu_project, tmp_path)
    assert error is None, str(error)


def test_torch_py_in_the_notebook_folder(host_python, cpu_project, tmp_path):
    notebooks = cpu_project / "notebooks"
    notebooks.mkdir(exist_ok=True)
    (notebooks / "torch.py").write_text("print('my notes about torch')\n")
    try:
        _, error = prepare(host_python, notebooks, tmp_path)
        assert error is not None and error.code == "LOCAL_MODULE_SHADOWS"
        text = str(error)
        assert f"{notebooks / 'torch.py'} in the notebook's folder would be imported instead of the host's torch" in text
        assert f"mv {notebooks / 'torch.py'} {notebooks}/my_torch_notes" in text
    finally:
        (notebooks / "torch.py").unlink()


# --- uvkernel check ------------------------------------------------------------------------------------
def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "CUDA_VISIBLE_DEVICES")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")  # the preflight cache of these runs
    env.update(extra)
    return env


def test_check_table_json_and_exit_codes(host_python, cpu_project, tmp_path):
    env = _cli_env(tmp_path)
    done = uvkernel_cli("check", str(cpu_project), "--host-python", host_python, env=env)
    table = done.stdout
    assert "\033[" not in table  # not a terminal: no colour
    for line in ("packages", "torch", "driver", "preflight", "[ok] passed",
                 "[note] torch 2.13.0+cpu is a CPU-only build", "2.13.0+cpu (CPU-only build, read from version.py)",
                 "NVML", "CUDA_VISIBLE_DEVICES", "GPU expected"):
        assert line in table, line
    assert "deep checks          ran" in table

    done = uvkernel_cli("check", str(cpu_project), "--host-python", host_python, "--json", env=env)
    report = json.loads(done.stdout)
    assert report["ok"] and report["preflight"]["deep"] == "cached"  # the run above filled the cache
    facts = report["preflight"]["facts"]
    for key in ("python", "sys_path", "pyvenv_cfg", "packages", "local_shadows", "torch", "nvidia_distributions",
                "environment", "visible", "device_files", "nvml", "identity", "timings", "deep"):
        assert key in facts, key
    assert report["host"]["executable"] == host_python and report["env"]["path"] == str(cpu_project / ".venv")

    done = uvkernel_cli("check", str(cpu_project), "--host-python", host_python, "--json", "--recheck", env=env)
    assert json.loads(done.stdout)["preflight"]["deep"] == "ran"

    failed = uvkernel_cli("check", str(cpu_project), "--host-python", host_python, "--require-cuda", env=env,
                          check=False)
    assert failed.returncode == 1
    assert "[FAIL] the host's torch 2.13.0+cpu is a CPU-only build" in failed.stdout
    assert "How to fix: install a CUDA build of torch into the host" in failed.stdout
    failed = uvkernel_cli("check", str(cpu_project), "--host-python", host_python, "--require-cuda", "--json",
                          env=env, check=False)
    assert failed.returncode == 1
    report = json.loads(failed.stdout)
    assert not report["ok"] and report["error"]["code"] == "TORCH_NOT_CUDA_BUILD"
    assert report["preflight"]["failures"][0]["facts"]["torch"] == "2.13.0+cpu"
    assert report["preflight"]["facts"]["torch"]["build"] == "cpu"  # every fact, also when it fails


def _on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run with stdout on a pseudo-terminal; return what it printed there."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=slave, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_check_colour_only_on_a_terminal_and_never_with_no_color(host_python, cpu_project, tmp_path):
    args = [sys.executable, "-m", "uvkernel", "check", str(cpu_project), "--host-python", host_python]
    coloured = _on_a_terminal(args, _cli_env(tmp_path, TERM="xterm"))
    assert "\033[32m[ok] \033[0m" in coloured and "passed" in coloured
    plain = _on_a_terminal(args, _cli_env(tmp_path, TERM="xterm", NO_COLOR="1"))
    assert "\033[" not in plain and "[ok] passed" in plain


def test_check_uses_a_kernel_specs_settings(host_python, cpu_project, install_spec, tmp_path):
    name = install_spec("uvk-needs-cuda", require_cuda="true")
    done = uvkernel_cli("check", str(cpu_project), "--kernel", name, env=_cli_env(tmp_path), check=False)
    assert done.returncode == 1 and "[TORCH_NOT_CUDA_BUILD]" in done.stdout
    assert "CUDA expected because: require_cuda = true" in done.stdout


def test_check_reports_errors_before_the_preflight(tmp_path):
    done = uvkernel_cli("check", str(tmp_path), "--host-python", str(tmp_path / "missing-python"),
                        env=_cli_env(tmp_path), check=False)
    assert done.returncode == 1
    assert "[HOST_PYTHON_MISSING]" in done.stdout and "How to fix:" in done.stdout


# --- %uvkernel in a real kernel -------------------------------------------------------------------------
def test_uvkernel_magic_shows_the_report(install_spec, cpu_project):
    name = install_spec("uvk-preflight-report")

    async def scenario():
        async with Kernel(name, cwd=cpu_project) as kernel:
            shown = await kernel.run("%uvkernel")
            as_json = await kernel.run("%uvkernel --json")
            namespace = await kernel.value("sorted(k for k in globals() if not k.startswith('_'))")
            has_file = await kernel.value("'__file__' in globals()")
            return shown, as_json, namespace + [has_file]

    shown, as_json, namespace = run_async(scenario())
    assert shown.error is None, shown.error
    data = shown.data[0]
    html, text = data["text/html"], data["text/plain"]
    assert html.startswith("<table class='uvkernel-report'")
    for fragment in ("2.13.0+cpu (CPU-only build, read from version.py)", "GPU expected", "CUDA_VISIBLE_DEVICES"):
        assert fragment in html and fragment in text, fragment
    assert "<th colspan='3'" in html and "[ok]</span> passed" in html
    assert "[ok] passed" in text and "<table" not in text
    report = json.loads(as_json.stdout)
    assert report["ok"] and report["preflight"]["facts"]["torch"]["build"] == "cpu"
    # nothing leaks into the user's namespace, not even the stub file's __file__ (a plain kernel has none)
    assert "uvkernel" not in namespace and "render_html" not in namespace and namespace[-1] is False


def test_a_new_env_on_the_same_host_reuses_the_deep_result(tmp_path, host_python):
    """A new project's first start does not import torch again when another env on the host already did."""
    import asyncio

    from helpers import make_project

    from uvkernel import pipeline
    from uvkernel.settings import from_config

    settings = from_config({"host_python": host_python, "cache_dir": str(tmp_path / "cache")})
    first = asyncio.run(pipeline.prepare(settings, cwd=str(make_project(tmp_path / "a")), environ=dict(os.environ)))
    second = asyncio.run(pipeline.prepare(settings, cwd=str(make_project(tmp_path / "b")), environ=dict(os.environ)))
    assert first.env.actions and second.env.actions  # both envs were created by these starts
    assert first.preflight.to_json()["deep"] == "ran"
    assert second.preflight.to_json()["deep"] == "cached"
    # a start that asks the deep layer for more is a miss
    own = make_project(tmp_path / "c")
    third = asyncio.run(pipeline.prepare(from_config({"host_python": host_python, "cache_dir": str(tmp_path / "cache"),
                                                      "required_packages": ["torch", "ipykernel"]}),
                                         cwd=str(own), environ=dict(os.environ)))
    assert third.preflight.to_json()["deep"] == "ran"
