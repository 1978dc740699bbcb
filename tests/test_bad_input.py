"""Bad input: each case ends in a clear error (what, where, the fix) and nothing of the user's is deleted or
rewritten.  Real uv, real host interpreter, real `uvkernel check` and real kernel starts through jupyter_client."""

from __future__ import annotations

import glob
import json
import os
import subprocess
from pathlib import Path

import pytest
from hardening_support import assert_clear_error, check, env_packages, file_hash, snapshot
from helpers import Kernel, make_project, run_async, start_refusal


def _fails(folder: Path, code: str, *facts: str, args: tuple[str, ...] = ()) -> dict:
    status, report, stderr = check(folder, *args)
    assert status == 1, f"expected a failure, got {status}: {report}\n{stderr}"
    assert report["ok"] is False
    assert report["error"]["code"] == code, report["error"]
    assert_clear_error(report["message"], code, *facts)
    return report


def test_malformed_pyproject(tmp_path, host_python):
    project = tmp_path / "broken"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "broken\nversion = "1"\n')
    (project / "uv.lock").write_text("version = 1\n")
    before = snapshot(project)
    _fails(project, "PYPROJECT_INVALID", str(project / "pyproject.toml"), "line 2",
           args=("--host-python", host_python))
    assert snapshot(project) == before, "the project folder changed"
    assert not (project / ".venv").exists()


def test_kernel_json_config_wrong_types_and_unknown_keys_refused_at_a_real_start(tmp_path, host_python,
                                                                                 install_spec):
    from jupyter_client.kernelspec import KernelSpecManager

    name = install_spec("uvk-badconfig")
    spec_file = Path(KernelSpecManager().get_kernel_spec(name).resource_dir) / "kernel.json"
    spec = json.loads(spec_file.read_text())
    spec["metadata"]["kernel_provisioner"]["config"].update(
        {"min_gpus": "two", "required_packages": "torch", "preflight_timout": 5})  # hand-edited, as users do
    spec_file.write_text(json.dumps(spec, indent=1))
    spec_hash = file_hash(spec_file)
    project = make_project(tmp_path / "proj")
    before = snapshot(project)

    message = start_refusal(name, project)
    assert_clear_error(message, "CONFIG_INVALID", str(spec_file), "min_gpus = 'two'",
                       "required_packages = 'torch'", "'preflight_timout'", "preflight_timeout")
    assert file_hash(spec_file) == spec_hash, "uvkernel rewrote kernel.json"
    assert snapshot(project) == before and not (project / ".venv").exists()


def test_kernel_json_config_keys_named_like_jupyters_own_options_are_refused_with_a_code(tmp_path, install_spec):
    # the spec's config reaches the provisioner as keywords: "config" and "log" would replace jupyter's own and
    # end the start with a bare TraitError (TypeError for a bool) instead of a message that says where
    from jupyter_client.kernelspec import KernelSpecManager

    name = install_spec("uvk-posing")
    spec_file = Path(KernelSpecManager().get_kernel_spec(name).resource_dir) / "kernel.json"
    spec = json.loads(spec_file.read_text())
    spec["metadata"]["kernel_provisioner"]["config"].update({"config": True, "log": 5})
    spec_file.write_text(json.dumps(spec, indent=1))
    project = make_project(tmp_path / "proj")
    message = start_refusal(name, project)
    assert_clear_error(message, "CONFIG_INVALID", str(spec_file), "config = True is not a uvkernel setting",
                       "log = 5 is not a uvkernel setting")


def _old_python() -> str:
    for pattern in ("/root/.pyenv/versions/3.[5678].*/bin/python3.[5678]", "/usr/bin/python3.[5678]",
                    "/usr/local/bin/python3.[5678]"):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    pytest.fail("no Python older than 3.9 on this machine to test HOST_PYTHON_TOO_OLD with")


@pytest.mark.parametrize("case", ["missing", "not-python-binary", "a-folder", "too-old"])
def test_bad_host_interpreter(tmp_path, case):
    project = make_project(tmp_path / "proj", ["tomli-w"])
    before = snapshot(project)
    if case == "missing":
        host, code, facts = str(tmp_path / "no" / "python3"), "HOST_PYTHON_MISSING", ["does not exist"]
    elif case == "not-python-binary":
        host, code, facts = "/bin/true", "HOST_PYTHON_NOT_PYTHON", ["not a working Python"]
    elif case == "a-folder":
        host, code, facts = str(tmp_path), "HOST_PYTHON_NOT_PYTHON", ["not an executable file"]
    else:
        host, code = _old_python(), "HOST_PYTHON_TOO_OLD"
        facts = ["needs 3.9 or newer"]
    _fails(project, code, host, "--host-python", *facts, args=("--host-python", host))
    assert snapshot(project) == before and not (project / ".venv").exists()


def test_bad_host_interpreter_through_a_real_start(tmp_path, install_spec):
    missing = str(tmp_path / "gone" / "bin" / "python3")
    from uvkernel import kernelspec

    # written by hand as an admin would (uvkernel install refuses a missing host itself)
    folder = tmp_path / "spec" / "uvk-gonehost"
    folder.mkdir(parents=True)
    data = kernelspec.spec_dict(display_name="gone", config={"host_python": missing}, env={}, name="uvk-gonehost")
    (folder / "kernel.json").write_text(json.dumps(data))
    from jupyter_client.kernelspec import KernelSpecManager

    KernelSpecManager().install_kernel_spec(str(folder), "uvk-gonehost", user=True)
    project = make_project(tmp_path / "proj")

    assert_clear_error(start_refusal("uvk-gonehost", project), "HOST_PYTHON_MISSING", missing, "--host-python")


def test_env_path_is_a_file(tmp_path, host_python):
    project = make_project(tmp_path / "proj")
    (project / ".venv").write_text("my notes, not an env\n")
    before = snapshot(project)
    _fails(project, "ENV_IS_FILE", str(project / ".venv"), "mv ", args=("--host-python", host_python))
    assert snapshot(project) == before


def test_env_path_is_a_broken_symlink(tmp_path, host_python):
    project = make_project(tmp_path / "proj")
    target = tmp_path / "elsewhere" / "venv"
    os.symlink(target, project / ".venv")
    before = snapshot(project)
    _fails(project, "ENV_BROKEN_LINK", str(project / ".venv"), str(target), f"mkdir -p {target}",
           args=("--host-python", host_python))
    assert snapshot(project) == before
    assert os.readlink(project / ".venv") == str(target) and not target.exists()


def test_requires_python_excludes_the_host(tmp_path, host_python):
    project = make_project(tmp_path / "proj", requires_python=">=3.99")
    before = snapshot(project)
    report = _fails(project, "REQUIRES_PYTHON_EXCLUDES_HOST", str(project), ">=3.99", "requires-python",
                    args=("--host-python", host_python))
    assert report["error"]["summary"].count(".") >= 2  # names the host's version
    assert snapshot(project) == before and not (project / ".venv").exists()


def test_unresolvable_dependencies_show_uvs_own_message(tmp_path, host_python, uv_bin):
    project = make_project(tmp_path / "proj", ["tomli-w"])
    status, report, stderr = check(project, "--host-python", host_python)
    assert status == 0, report["message"]
    # the user installs something by hand, and the project has a lock file of its own
    subprocess.run([uv_bin, "pip", "install", "-q", "--python", str(project / ".venv" / "bin" / "python"),
                    "humanize"], check=True)
    subprocess.run([uv_bin, "lock", "-q", "--python", host_python], cwd=project, check=True)  # the user's lock
    make_project(project, ["tomli-w==1.0.0", "tomli-w>=1.2"], name="proj")  # impossible together
    before_files = snapshot(project, skip=(".venv",))
    before_env = env_packages(project / ".venv")
    assert "humanize" in before_env and "tomli-w" in before_env

    report = _fails(project, "DEPENDENCIES_UNRESOLVABLE", "tomli-w==1.0.0", args=("--host-python", host_python))
    message = report["message"]
    # uv's own explanation reaches the user, not only the server log
    assert "No solution found" in message and "unsatisfiable" in message, message
    assert snapshot(project, skip=(".venv",)) == before_files
    assert env_packages(project / ".venv") == before_env


def _odd_folder(base: Path) -> Path:
    return base / "q'uote \"dq\" $HOME $(touch PWNED) `touch PWNED2` ; sp ace\nnew-line é 日本"


def test_notebook_paths_with_quotes_dollars_spaces_newlines_and_non_ascii(tmp_path, install_spec):
    """The real kernel starts in such a folder, runs from that folder's env, and nothing in the path is run."""
    project = make_project(_odd_folder(tmp_path), ["tomli-w"], name="odd")
    name = install_spec("uvk-odd")

    async def run() -> tuple[str, str, bool]:
        async with Kernel(name, project) as k:
            return (await k.value("__import__('os').getcwd()"), await k.value("__import__('sys').prefix"),
                    await k.value("__import__('importlib').util.find_spec('tomli_w') is not None"))

    cwd, prefix, has_dep = run_async(run())
    assert cwd == str(project)
    assert prefix == str(project / ".venv")
    assert has_dep
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


def test_odd_notebook_folder_outside_a_project_gets_a_cache_env(tmp_path, host_python):
    folder = _odd_folder(tmp_path / "notebooks")
    folder.mkdir(parents=True)
    status, report, _ = check(folder, "--host-python", host_python)
    assert status == 0, report["message"]
    env = Path(report["project"]["env"])
    assert env.is_dir() and not (folder / ".venv").exists()
    assert "\n" not in env.name and "$" not in env.name and "'" not in env.name
    assert not list(tmp_path.rglob("PWNED*"))


def test_garbage_cuda_visible_devices_reaches_the_kernel_verbatim(tmp_path, install_spec):
    garbage = "garbage,;$(touch PWNED)`id` -1 ,,"
    project = make_project(tmp_path / "proj")
    name = install_spec("uvk-cvd", env={"CUDA_VISIBLE_DEVICES": garbage})

    async def run() -> tuple[str, bool]:
        async with Kernel(name, project) as k:
            return (await k.value("__import__('os').environ['CUDA_VISIBLE_DEVICES']"),
                    await k.value("__import__('torch').cuda.is_available()"))

    seen, available = run_async(run())
    assert seen == garbage
    assert available is False  # CPU torch here; the value never crashed the preflight or the kernel
    assert not list(tmp_path.rglob("PWNED*"))
