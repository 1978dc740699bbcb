"""Inputs one step off the catalogue, one regression test each: each once crashed, or was accepted where uv
refuses it.  Real `uvkernel check`, real uv, a real kernel start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hardening_support import assert_clear_error, check, snapshot
from helpers import start_refusal

PROJECT = '[project]\nname = "p"\nversion = "0.1.0"\nrequires-python = ">=3.9"\n'


def _project(tmp_path: Path, text: str | bytes) -> Path:
    project = tmp_path / "proj"
    project.mkdir()
    data = text.encode() if isinstance(text, str) else text
    (project / "pyproject.toml").write_bytes(data)
    return project


def _refused(project: Path, host_python: str, code: str, *facts: str) -> str:
    before = snapshot(project)
    status, report, stderr = check(project, "--host-python", host_python)
    assert status == 1, (report, stderr)
    assert "Traceback" not in stderr, stderr
    assert report["error"]["code"] == code, report["error"]
    assert_clear_error(report["message"], code, str(project / "pyproject.toml"), *facts)
    assert snapshot(project) == before and not (project / ".venv").exists()
    return report["message"]


def _uv_refuses(project: Path, uv_bin: str, host_python: str, reason: str) -> None:
    """uv's own verdict on the same file (offline: nothing is looked up)."""
    done = subprocess.run([uv_bin, "lock", "--offline", "--python", host_python], cwd=project, capture_output=True,
                          text=True)
    assert done.returncode != 0 and reason in done.stderr, done.stderr
    (project / "uv.lock").unlink(missing_ok=True)


def test_non_utf8_byte_in_a_comment(tmp_path, host_python):
    project = _project(tmp_path, b"# caf\xe9 (latin-1)\n" + PROJECT.encode())
    _refused(project, host_python, "PYPROJECT_INVALID", "not UTF-8", "byte 0xe9 on line 1")


def test_non_utf8_pyproject_through_a_real_kernel_start(tmp_path, install_spec):
    project = _project(tmp_path, PROJECT.encode() + b"# \xff\n")
    name = install_spec()

    message = start_refusal(name, project)
    assert_clear_error(message, "PYPROJECT_INVALID", str(project / "pyproject.toml"), "not UTF-8")
    assert "UnicodeDecodeError" not in message


UV_REASON = object()  # in a case's facts: uvkernel's message says it in uv's own words

# what pyproject.toml says: (uvkernel's code, the facts its message names, uv's reason for refusing the same file)
UV_REFUSES = {
    PROJECT.replace('name = "p"', "name = 5"): (
        "PYPROJECT_INVALID", ["[project].name must be a string, not 5"],
        "invalid type: integer `5`, expected a string"),
    PROJECT.replace('requires-python = ">=3.9"', "requires-python = 3.11"): (
        "PYPROJECT_INVALID", ["[project].requires-python must be a string", "3.11"],
        "invalid type: floating point `3.11`, expected a string"),
    PROJECT + '[dependency-groups]\ndev = [{include-group = "dev"}]\n': (
        "DEPENDENCY_TABLE_INVALID", [UV_REASON], "Detected a cycle in `dependency-groups`: `dev` -> `dev`"),
    PROJECT + '[dependency-groups]\ndev = [{include-group = "nosuch"}]\n': (
        "DEPENDENCY_TABLE_INVALID", [UV_REASON], "Failed to find group `nosuch` included by `dev`"),
    PROJECT + '[tool.uv]\ndefault-groups = "nope"\n': (
        "PYPROJECT_INVALID", ["[tool.uv].default-groups", UV_REASON],
        'default-groups must be "all" or a ["list", "of", "groups"]'),
    PROJECT + '[tool.uv]\ndefault-groups = ["nosuch"]\n': (
        "PYPROJECT_INVALID", [UV_REASON], "Default group `nosuch` (from `tool.uv.default-groups`) is not defined"),
}


@pytest.mark.parametrize("text", list(UV_REFUSES), ids=["name-number", "requires-python-number",
                                                        "group-includes-itself", "group-includes-unknown",
                                                        "default-groups-string", "default-group-undefined"])
def test_a_pyproject_uv_refuses_is_refused_with_the_field_and_the_reason(tmp_path, host_python, uv_bin, text):
    code, facts, uv_reason = UV_REFUSES[text]
    project = _project(tmp_path, text)
    _refused(project, host_python, code, *(uv_reason if f is UV_REASON else f for f in facts))
    _uv_refuses(project, uv_bin, host_python, uv_reason)


def test_deeply_nested_arrays(tmp_path, host_python):
    project = _project(tmp_path, PROJECT + "x = " + "[" * 5000 + "]" * 5000 + "\n")
    _refused(project, host_python, "PYPROJECT_INVALID", "nested too deeply")


def test_tool_table_that_is_not_a_table(tmp_path, host_python):
    project = _project(tmp_path, "tool = 5\n" + PROJECT)
    _refused(project, host_python, "PYPROJECT_INVALID", "[tool] must be a table")


def test_state_file_that_is_not_an_object_is_rewritten_not_fatal(tmp_path, host_python):
    """Found by the fuzz suite: a state file holding `[]` raised AttributeError."""
    project = _project(tmp_path, PROJECT)
    status, report, stderr = check(project, "--host-python", host_python)
    assert status == 0, (report["message"], stderr)
    (project / ".venv" / ".uvkernel-state.json").write_text("[]")
    (project / ".venv" / "pyvenv.cfg").write_bytes((project / ".venv" / "pyvenv.cfg").read_bytes() + b"# \x80\n")
    status, report, stderr = check(project, "--host-python", host_python)
    assert status == 0, (report["message"], stderr)
    assert "repaired: rewrote pyvenv.cfg, which was not UTF-8 text" in report["env"]["actions"]


def test_jupyter_config_value_of_the_wrong_type(tmp_path):
    """Found by the fuzz suite: c.UvKernelProvisioner.allow_shadowing = False raised a bare TraitError."""
    from jupyter_client.kernelspec import KernelSpec
    from traitlets.config import Config

    from uvkernel.provisioner import UvKernelProvisioner

    spec = KernelSpec(argv=["python"], display_name="x", resource_dir=str(tmp_path))
    provisioner = UvKernelProvisioner(kernel_id="k", kernel_spec=spec, parent=None, config=Config(
        {"UvKernelProvisioner": {"allow_shadowing": False, "min_gpus": 1}}))
    error = provisioner._config_error
    assert error is not None
    assert_clear_error(str(error), "JUPYTER_CONFIG_INVALID", "c.UvKernelProvisioner", "allow_shadowing = False",
                       "jupyter_server_config.py")


def test_kernel_json_that_is_not_json(tmp_path, host_python, install_spec):
    import json
    import os

    name = install_spec("uvk-garbled")
    spec_file = Path(os.environ["JUPYTER_DATA_DIR"]) / "kernels" / name / "kernel.json"
    spec_file.write_text(json.dumps({"argv": ["python"], "display_name": "x", "metadata": False}))
    project = _project(tmp_path, PROJECT)
    status, report, stderr = check(project, "--kernel", name)
    assert status == 1 and report["error"]["code"] in ("KERNEL_SPEC_INVALID", "CONFIG_INVALID"), (report, stderr)
    assert_clear_error(report["message"], report["error"]["code"], str(spec_file))
