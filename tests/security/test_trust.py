"""With require_trust, a project's build backend runs only after `uvkernel trust DIR`, and again
only after the user trusts its changed dependency files.  A real in-tree build backend that leaves a mark when it
runs, real uv, the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from hardening_support import assert_clear_error, check

BACKEND = Path(__file__).parent / "data" / "marking_backend.py"


def uvk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uvkernel", *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=600)


def built_project(folder: Path, extra: str = "") -> Path:
    """A project whose build backend (in the project, as a cloned repository may ship one) marks that it ran."""
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(textwrap.dedent("""\
        [project]
        name = "bk"
        version = "0.1.0"
        requires-python = ">=3.9"
        dependencies = []

        [build-system]
        requires = []
        build-backend = "marking_backend"
        backend-path = ["."]
        """) + extra)
    shutil.copy(BACKEND, folder / "marking_backend.py")
    return folder


def test_an_untrusted_project_is_never_built(tmp_path, install_spec):
    kernel = install_spec("uvk-trust", require_trust=True)
    project = built_project(tmp_path / "clone")
    mark = project / "BUILD-BACKEND-RAN"

    status, report, _ = check(project, "--kernel", kernel)
    assert status == 1
    assert_clear_error(report["message"], "TRUST_REQUIRED", str(project), f"uvkernel trust {project}", "pyproject.toml")
    assert not mark.exists(), "the build backend ran before the project was trusted"
    assert not (project / ".venv").exists(), "an env was made for an untrusted project"
    # the terminal commands are refused the same way, before uv runs anything
    for args in (("sync", "--project", str(project)), ("add", "--project", str(project), "tomli-w")):
        done = uvk(*args, "--kernel", kernel)
        assert done.returncode != 0 and "[TRUST_REQUIRED]" in done.stderr, done.stderr
    assert not mark.exists()
    assert "tomli" not in (project / "pyproject.toml").read_text()

    done = uvk("trust", str(project), "--kernel", kernel)
    assert done.returncode == 0 and "[TRUST_RECORDED]" in done.stdout, done
    status, report, _ = check(project, "--kernel", kernel)
    assert status == 0, report["message"]
    assert mark.exists(), "the trusted project was not installed (its backend never ran)"

    # a changed dependency file asks again, and nothing is built meanwhile
    mark.unlink()
    with (project / "pyproject.toml").open("a") as fh:
        fh.write('\n[tool.uv]\nconstraint-dependencies = ["numpy<99"]\n')
    status, report, _ = check(project, "--kernel", kernel)
    assert status == 1
    assert_clear_error(report["message"], "TRUST_REQUIRED", "changed since you trusted it")
    assert not mark.exists()
    (project / "uv.toml").write_text("")  # a new uv.toml counts too
    assert uvk("trust", str(project), "--kernel", kernel).returncode == 0
    (project / "uv.toml").write_text('index-url = "https://example.invalid/simple"\n')
    assert check(project, "--kernel", kernel)[0] == 1

    # --revoke takes it back
    assert uvk("trust", str(project), "--kernel", kernel).returncode == 0
    (project / "uv.toml").unlink()
    assert uvk("trust", str(project), "--kernel", kernel).returncode == 0
    assert check(project, "--kernel", kernel)[0] == 0
    done = uvk("trust", "--revoke", str(project), "--kernel", kernel)
    assert "[TRUST_REVOKED]" in done.stdout, done
    assert check(project, "--kernel", kernel)[0] == 1


def test_a_workspace_members_pyproject_is_part_of_the_trust(tmp_path, install_spec):
    kernel = install_spec("uvk-trust-ws", require_trust=True)
    root = built_project(tmp_path / "ws", extra='\n[tool.uv.workspace]\nmembers = ["packages/*"]\n')
    member = root / "packages" / "lib"
    member.mkdir(parents=True)
    (member / "pyproject.toml").write_text('[project]\nname = "lib"\nversion = "0.1.0"\ndependencies = []\n')
    assert uvk("trust", str(root), "--kernel", kernel).returncode == 0
    from uvkernel import trust
    from uvkernel.project import find_project

    project = find_project(str(root), {}, cache_root=tmp_path / "c", host_key="h")
    assert member / "pyproject.toml" in trust.dependency_files(project)
    before = trust.digest(project)[0]
    (member / "pyproject.toml").write_text('[project]\nname = "lib"\nversion = "0.1.0"\ndependencies = ["x"]\n')
    assert trust.digest(project)[0] != before


def test_a_project_cannot_trust_itself(tmp_path, install_spec):
    kernel = install_spec("uvk-trust-self", require_trust=True)
    project = built_project(tmp_path / "clone", extra="\n[tool.uvkernel]\nrequire_trust = false\n")
    status, report, _ = check(project, "--kernel", kernel)
    assert status == 1
    assert_clear_error(report["message"], "PROJECT_SETTING_REFUSED", "require_trust")
    assert not (project / "BUILD-BACKEND-RAN").exists()


def test_without_require_trust_a_start_builds_as_uv_sync_does(tmp_path, host_python):
    project = built_project(tmp_path / "proj")
    status, report, _ = check(project, "--host-python", host_python)
    assert status == 0, report["message"]
    assert (project / "BUILD-BACKEND-RAN").exists()
