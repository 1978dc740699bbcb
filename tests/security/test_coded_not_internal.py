"""Inputs that used to end in INTERNAL_ERROR, a raw traceback or a wrong code now get a
coded message (what, where, the command that fixes it) or just work.  Each runs the real CLI against real files,
a real second user's folder, real uv; each checks that nothing outside changed and nothing hung."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hardening_support import add_journal, wait_for_journal, assert_clear_error, check, snapshot
from helpers import make_project


def uvk(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uvkernel", *args], capture_output=True, text=True, cwd=cwd,
                          env=env or os.environ.copy(), timeout=timeout)


def no_traceback(done: subprocess.CompletedProcess) -> None:
    text = done.stdout + done.stderr
    assert "Traceback" not in text and "[INTERNAL_ERROR]" not in text, text


def kernels_dir() -> Path:
    return Path(os.environ["JUPYTER_DATA_DIR"]) / "kernels" if os.environ.get("JUPYTER_DATA_DIR") else \
        Path(os.environ["XDG_DATA_HOME"]) / "jupyter" / "kernels"


# --- the host interpreter answers JSON of another shape ----------------------------------------------------------

@pytest.mark.parametrize("answer", [
    '{"version": [3, 11, 7], "executable": "/x"}',             # fields missing
    '[1, 2, 3]',                                               # not an object
    '{"version": "3.11", "executable": "/x"}',                 # version of another type
    json.dumps({"executable": "/x", "version": [3, 11, 7], "implementation": "cpython", "prefix": "/p",
                "base_prefix": "/p", "base_executable": "/x", "site_packages": "/sp", "conda": False,
                "has_ipykernel": True}),                       # site_packages a string
])
def test_a_host_answering_json_of_another_shape(tmp_path, answer):
    fake = tmp_path / "python3"
    fake.write_text(f"#!/bin/sh\necho '{answer}'\n")
    fake.chmod(0o755)
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    status, report, stderr = check(notebooks, "--host-python", str(fake))
    assert status == 1
    assert_clear_error(report["message"], "HOST_PYTHON_NOT_PYTHON", str(fake), "did not answer like a Python")
    done = uvk("install", "--name", "fakehost", "--host-python", str(fake))
    assert done.returncode == 2 and "[HOST_PYTHON_NOT_PYTHON]" in done.stderr, done.stderr
    no_traceback(done)
    assert not (kernels_dir() / "fakehost").exists()


# --- install: names and variables that cannot work -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["..", "."])
def test_install_name_of_dots(tmp_path, host_python, name):
    parent = kernels_dir().parent
    parent.mkdir(parents=True, exist_ok=True)
    before = snapshot(parent)
    done = uvk("install", "--name", name, "--host-python", host_python)
    assert done.returncode == 2, done
    assert_clear_error(done.stderr, "KERNEL_NAME_INVALID", repr(name))
    no_traceback(done)
    assert snapshot(parent) == before


@pytest.mark.parametrize("key,value", [("A=B", "x"), ("", "x"), ("A", "x\0y")])
def test_install_env_that_no_start_could_use(host_python, key, value):
    if "\0" in value:  # an argv cannot carry NUL: the Python API is where it could come from
        from uvkernel import kernelspec
        from uvkernel.errors import SpecError

        with pytest.raises(SpecError) as caught:
            kernelspec.install(name="nul", host_python=host_python, env={key: value}, user=True)
        assert_clear_error(str(caught.value), "KERNEL_ENV_INVALID", "NUL")
        return
    done = uvk("install", "--name", "badenv", "--env", key, value, "--host-python", host_python)
    assert done.returncode == 2, done
    assert_clear_error(done.stderr, "KERNEL_ENV_INVALID", repr(key), "--env NAME VALUE")
    assert not (kernels_dir() / "badenv").exists()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_time_limit_that_is_not_a_finite_number(host_python, value):
    done = uvk("install", "--name", "nan", "--set", f"preflight_timeout={value}", "--host-python", host_python)
    assert done.returncode == 2, done
    assert_clear_error(done.stderr, "CONFIG_INVALID", "preflight_timeout", "finite")
    assert not (kernels_dir() / "nan").exists()


# --- cache_dir that is a device or a file --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["device", "file", "below-a-file"])
def test_cache_dir_that_is_not_a_folder(tmp_path, install_spec, kind):
    target = {"device": Path("/dev/null"), "file": tmp_path / "notes.txt",
              "below-a-file": tmp_path / "notes.txt" / "cache"}[kind]
    (tmp_path / "notes.txt").write_text("my notes\n")
    kernel = install_spec("uvk-devnull", cache_dir=str(target))
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    status, report, _ = check(notebooks, "--kernel", kernel)
    assert status == 1
    assert_clear_error(report["message"], "CACHE_DIR_NOT_FOLDER", "cache_dir", "not a folder")
    assert "mv /dev/null" not in report["message"]
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"


# --- another user's env in a shared project folder ------------------------------------------------------------------



def test_another_users_private_env_in_a_shared_project(tmp_path, host_python, uv_bin, other_user):
    """A shared project folder holds A's .venv, mode 0700.  B's check (root without the capability to override
    file permissions, so it reads as any other user) is refused with a coded message and changes nothing."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    project = make_project(shared / "proj")
    project.chmod(0o777)
    subprocess.run([uv_bin, "venv", "--system-site-packages", "--python", host_python, "--no-project",
                    str(project / ".venv")], check=True, capture_output=True)
    for folder, _dirs, files in os.walk(project / ".venv"):
        for name in [folder, *(os.path.join(folder, f) for f in files)]:
            os.lchown(name, other_user.pw_uid, other_user.pw_gid)
    (project / ".venv").chmod(0o700)
    before = snapshot(project / ".venv")
    done = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m",
                           "uvkernel", "check", str(project), "--json", "--host-python", host_python],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    report = json.loads(done.stdout)
    assert done.returncode == 1, report
    assert_clear_error(report["message"], "ENV_NOT_READABLE", str(project / ".venv"), other_user.pw_name,
                       "UV_PROJECT_ENVIRONMENT")
    assert snapshot(project / ".venv") == before
    assert os.stat(project / ".venv").st_uid == other_user.pw_uid


# --- a workspace member glob given as an absolute path (uv accepts it) -------------------------------------------

def test_an_absolute_workspace_member_glob_works(tmp_path, host_python, uv_bin):
    root = make_project(tmp_path / "ws", extra=f'\n[tool.uv.workspace]\nmembers = ["{tmp_path / "ws" / "packages"}/*"]\n')
    member = make_project(root / "packages" / "lib", name="lib")
    status, report, _ = check(member, "--host-python", host_python)
    assert status == 0, report["message"]
    assert report["project"]["workspace_root"] == str(root), report["project"]
    assert report["project"]["env"] == str(root / ".venv"), report["project"]
    # uv agrees: the member is in the workspace it locks
    done = subprocess.run([uv_bin, "lock", "--offline"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0 and 'name = "lib"' in (root / "uv.lock").read_text(), done.stderr


# --- a folder named like an option ----------------------------------------------------------------------------

def test_a_project_folder_named_like_an_option(tmp_path, host_python):
    project = make_project(tmp_path / "-myproj", name="myproj")
    status, report, _ = check(project, "--host-python", host_python)
    assert status == 0, report["message"]
    assert "prompt = -myproj" in (project / ".venv" / "pyvenv.cfg").read_text()


# --- a "uv" that exits 0 and does nothing; a project that requires another uv ------------------------------------

def test_a_uv_that_exits_0_and_does_nothing(tmp_path, install_spec):
    stub = tmp_path / "uv"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    kernel = install_spec("uvk-stubuv", uv_path=str(stub))
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    status, report, _ = check(notebooks, "--kernel", kernel)
    assert status == 1
    assert_clear_error(report["message"], "UV_DID_NOTHING", str(stub), f"{stub} --version")
    assert "ENV_NOT_WRITABLE" not in report["message"]


@pytest.mark.parametrize("where", ["pyproject.toml", "uv.toml"])
def test_a_required_uv_version_is_about_uv_not_dependencies(tmp_path, host_python, where):
    if where == "pyproject.toml":
        project = make_project(tmp_path / "proj", extra='\n[tool.uv]\nrequired-version = ">=99"\n')
    else:
        project = make_project(tmp_path / "proj")
        (project / "uv.toml").write_text('required-version = ">=99"\n')
    status, report, _ = check(project, "--host-python", host_python)
    assert status == 1
    assert_clear_error(report["message"], "UV_VERSION_REQUIRED", ">=99", str(project / where), "uv_path")
    assert "DEPENDENC" not in report["message"]
    assert not (project / ".venv").exists()


# --- uvkernel kernel -f with a malformed connection file ----------------------------------------------------------

@pytest.mark.parametrize("content", ["garbage", "[1]", '{"shell_port": "x"}', '{"ip": "999.1.1.1"}',
                                     '{"transport": "udp"}', '{"key": 5}'])
def test_kernel_with_a_malformed_connection_file(tmp_path, host_python, content):
    connection = tmp_path / "kernel-1.json"
    connection.write_text(content)
    t0 = time.monotonic()
    done = uvk("kernel", "-f", str(connection), cwd=tmp_path, timeout=120)
    assert time.monotonic() - t0 < 60
    assert done.returncode == 2, done
    assert_clear_error(done.stderr, "CONNECTION_FILE_INVALID", str(connection))
    no_traceback(done)
    assert connection.read_text() == content


# --- SIGTERM and SIGKILL during `uvkernel add`, after the intermediate pin ------------------------------------



def _killed_after_the_pin(project: Path, host_python: str, sig: int) -> subprocess.Popen:
    """Killed as soon as the journal holds uv's first write: where `uvkernel add` bounds a package it writes
    `X==V` first (so uv.lock gets V), then `X>=V`, and the kill lands between the two; otherwise while the env
    is prepared.  Either way no intermediate pin may stay."""
    journal = add_journal(project)
    proc = subprocess.Popen([sys.executable, "-m", "uvkernel", "add", "--host-python", host_python, "tomli-w"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for_journal(proc, journal, lambda data: data["uv_wrote"]["pyproject.toml"], "uv never wrote the pin")
    proc.send_signal(sig)
    proc.wait(120)
    return proc


def test_sigterm_during_add_puts_the_files_back(tmp_path, host_python):
    project = make_project(tmp_path / "proj")
    assert uvk("sync", "--project", str(project), "--host-python", host_python).returncode == 0
    original = (project / "pyproject.toml").read_bytes()
    proc = _killed_after_the_pin(project, host_python, signal.SIGTERM)
    output = proc.stdout.read().decode()
    assert proc.returncode != 0, output
    assert (project / "pyproject.toml").read_bytes() == original, output
    assert not (project / "uv.lock").exists() or b"tomli-w" not in (project / "uv.lock").read_bytes()
    assert not add_journal(project).exists()


def test_sigkill_during_add_leaves_no_pin_behind(tmp_path, host_python):
    project = make_project(tmp_path / "proj")
    assert uvk("sync", "--project", str(project), "--host-python", host_python).returncode == 0
    original = (project / "pyproject.toml").read_bytes()
    _killed_after_the_pin(project, host_python, signal.SIGKILL)
    time.sleep(2)  # uv, in its own process group, may still finish its write
    done = uvk("check", str(project), "--host-python", host_python)
    assert "[EDIT_RECOVERED]" in done.stderr, done.stderr
    assert not add_journal(project).exists()
    now = (project / "pyproject.toml").read_bytes()
    assert b"tomli-w==" not in now, "the intermediate pin was left in pyproject.toml"
    if now != original:  # what uv wrote after uvkernel died: left, and the copy from before named, never lost
        assert "[EDIT_NOT_RESTORED]" in done.stderr, done.stderr
