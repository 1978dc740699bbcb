"""A project's dependencies installed without a second torch: the stages, with real uv and the real CPU-torch host.

No kernel here (see test_deps_kernel.py): the pipeline is run directly, as the provisioner and `uvkernel check`
run it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from deps_support import assert_no_stack, dists, host_dists, uv
from helpers import make_project

from uvkernel import pipeline
from uvkernel.env import declarations, install, resolve, venv
from uvkernel.errors import DependencyError, EnvError, ProjectError
from uvkernel.env import list_host_distributions
from uvkernel.kernel_extension import render_text
from uvkernel.project import find_project
from uvkernel.settings import UvKernelSettings


def from_config(config: dict) -> UvKernelSettings:
    return UvKernelSettings(**config)


def prepare(host_python: str, project: Path, **config) -> pipeline.Prepared:
    settings = from_config({"host_python": host_python, **config})
    return asyncio.run(pipeline.prepare(settings, cwd=str(project), environ=dict(os.environ)))


def failure(host_python: str, project: Path, **config):
    with pytest.raises((DependencyError, ProjectError, EnvError)) as info:
        prepare(host_python, project, **config)
    return info.value


@pytest.fixture(scope="module")
def host_list(host_python):
    return asyncio.run(list_host_distributions(host_python, _site(host_python)))


def _site(python: str) -> list[str]:
    import subprocess

    out = subprocess.run([python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return [out]


# --- the planner: direct requirements against the host's versions ----------------------------------------------

def test_plan_leaves_satisfied_host_packages_and_refuses_conflicts(host_list):
    torch = host_list["torch"]
    plan = resolve.plan(["torch>=2.0", "tomli-w", "numpy; python_version < '3'"], host_list, (3, 11, 7))
    assert plan.from_host == {"torch": torch.version}
    assert plan.requirements == ["torch>=2.0", "tomli-w"]  # the marker-excluded numpy is dropped

    with pytest.raises(DependencyError) as info:
        resolve.plan(["torch==2.5.*"], host_list, (3, 11, 7), root="/p")
    text = str(info.value)
    assert info.value.code == "DEPENDENCY_CONFLICT"
    assert "torch==2.5.*" in text and torch.version in text  # both versions
    assert "/p/pyproject.toml" in text and "--host-python" in text and "allow_shadowing='[\"torch\"]'" in text
    assert "installed: nothing" in text and "%" not in text

    # a URL for a host package is a request for another copy: a conflict too, unless allowed
    url = "torch @ https://download.pytorch.org/whl/cpu/torch-2.5.0-cp311-cp311-linux_x86_64.whl"
    with pytest.raises(DependencyError):
        resolve.plan([url], host_list, (3, 11, 7))
    allowed = resolve.plan([url], host_list, (3, 11, 7), allow_shadowing=["nvidia-*", "tor*"])
    assert allowed.shadowed_on_purpose == {"torch": torch.version}

    with pytest.raises(DependencyError) as info:
        resolve.plan(["torch>=2,,"], host_list, (3, 11, 7))
    assert info.value.code == "REQUIREMENT_INVALID" and "torch>=2,," in str(info.value)


def test_requirements_from_pyproject_groups_extras_and_self_references(tmp_path):
    root = make_project(tmp_path / "proj", ["tomli-w"], name="proj", extra="""
[project.optional-dependencies]
plot = ["tabulate"]
all = ["proj[plot]", "termcolor"]

[dependency-groups]
dev = ["humanize"]
lint = ["toolz", {include-group = "dev"}]

[tool.uv]
dev-dependencies = ["wcwidth"]
""")
    project = find_project(str(root), {}, cache_root=tmp_path / "cache", host_key="h")

    def declared(**config):
        return declarations.declared(project, from_config(config))[0]

    assert declared() == ["tomli-w", "humanize", "wcwidth"]  # uv's default group: dev (+ legacy dev-dependencies)
    assert declared(extras=["all"], dependency_groups=["lint"]) == [
        "tomli-w", "tabulate", "termcolor", "humanize", "wcwidth", "toolz"]
    with pytest.raises(DependencyError) as info:
        declared(dependency_groups=["gpu"])
    assert info.value.code == "DEPENDENCY_SELECTION_MISSING" and "dev, lint" in str(info.value)
    with pytest.raises(DependencyError) as info:
        declared(extras=["cuda"])
    assert "all, plot" in str(info.value)

    (root / "pyproject.toml").write_text((root / "pyproject.toml").read_text().replace(
        "[tool.uv]", "[tool.uv]\ndefault-groups = []"))
    project = find_project(str(root), {}, cache_root=tmp_path / "cache", host_key="h")
    assert declarations.declared(project, from_config({}))[0] == ["tomli-w"]


# --- through the pipeline: conflicts stop before anything is installed ------------------------------------------

def test_conflicting_pin_fails_before_installing(tmp_path, host_python):
    project = make_project(tmp_path / "proj", ["torch==2.5.*", "tomli-w"])
    before = (project / "pyproject.toml").read_bytes()
    error = failure(host_python, project)
    assert error.code == "DEPENDENCY_CONFLICT"
    assert "torch==2.5.*" in str(error) and host_dists(host_python)["torch"] in str(error)
    assert dists(project / ".venv") == {}  # tomli-w was not installed either
    assert (project / "pyproject.toml").read_bytes() == before


def test_transitive_conflict_is_explained_before_installing(tmp_path, host_python):
    # torchvision<0.20 needs torch<=2.4: uv explains it against the host's torch, nothing is installed
    project = make_project(tmp_path / "proj", ["torchvision<0.20", "tomli-w"])
    error = failure(host_python, project)
    assert error.code == "DEPENDENCY_CONFLICT_TRANSITIVE", str(error)
    facts = dict(error.facts)
    assert facts["the host provides torch"] == host_dists(host_python)["torch"]
    assert facts["without the host, uv picks torch"].startswith("2.4.") and "torchvision" in str(error)
    assert "torchvision" in error.detail  # uv's own explanation
    assert dists(project / ".venv") == {}


def test_allow_shadowing_installs_the_projects_copy_on_purpose(tmp_path, host_python):
    host_idna = host_dists(host_python)["idna"]
    project = make_project(tmp_path / "proj", [f"idna<{host_idna}"])
    # idna is outside the host's stack: only protected (here by name) is it a conflict
    assert failure(host_python, project, protected_packages=["idna"]).code == "DEPENDENCY_CONFLICT"

    prepared = prepare(host_python, project, protected_packages=["idna"], allow_shadowing=["idna"])
    env = project / ".venv"
    assert dists(env)["idna"] != host_idna
    assert prepared.env.plan["shadowed_on_purpose"] == {"idna": host_idna}
    assert [(s["name"], s["on_purpose"]) for s in prepared.env.shadowing] == [("idna", True)]
    text = render_text(prepared.report())
    assert "shadowed on purpose" in text and "(on purpose)" in text
    # the kernel's installers may replace it too, and only it
    assert "idna" not in (env / install.HOST_EXCLUDES).read_text().split()
    assert "torch" in (env / install.HOST_EXCLUDES).read_text().split()


# --- uv.lock: read, honoured for what the host does not provide, never written ----------------------------------

def test_locked_versions_are_honoured_and_the_lock_is_not_written(tmp_path, host_python):
    project = make_project(tmp_path / "proj", ["torchmetrics==1.8.0", "torch>=2"], requires_python=">=3.10")
    uv("lock", "-q", "--python", host_python, cwd=project)
    # the project now asks for any torchmetrics: the lock (stale, as users' locks are) still says 1.8.0
    pyproject = (project / "pyproject.toml").read_text().replace("torchmetrics==1.8.0", "torchmetrics")
    (project / "pyproject.toml").write_text(pyproject)
    lock = (project / "uv.lock").read_bytes()

    prepared = prepare(host_python, project)
    env = project / ".venv"
    # as `uv lock` would on the next `uv sync`: the stale lock's versions are preferred where they still fit
    assert dists(env)["torchmetrics"] == "1.8.0"
    assert prepared.env.plan["from_host"]["torch"] == host_dists(host_python)["torch"]
    assert any("out of date" in n and "uv lock" in n for n in prepared.env.plan["notes"])
    assert_no_stack(env)  # the lock lists torch 2.x + its CUDA wheels: none of it came in
    assert (project / "uv.lock").read_bytes() == lock
    assert (project / "pyproject.toml").read_text() == pyproject


def test_lock_that_does_not_fit_the_host_is_re_resolved_and_each_deviation_reported(tmp_path, host_python):
    # a lock made for torch 2.10 (its torchvision needs exactly that torch), then the pin relaxed: the
    # torchvision that works with the host's torch is installed instead, and the report says so
    project = make_project(tmp_path / "proj", ["torch==2.10.*", "torchvision"], requires_python=">=3.11")
    uv("lock", "-q", "--python", host_python, cwd=project)
    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text().replace("torch==2.10.*",
                                                                                             "torch>=2"))
    lock = (project / "uv.lock").read_bytes()
    # PyPI's torchvision is built for PyPI's torch, not the host's +cpu build: the companion check would refuse it
    # (test_companions.py); here only the choice of versions matters
    prepared = prepare(host_python, project, allow_companion_mismatch=["torchvision"])
    env = project / ".venv"
    host_torch = host_dists(host_python)["torch"].split("+")[0]
    import subprocess

    requires = subprocess.run([str(env / "bin" / "python"), "-c", "from importlib import metadata as m; "
                               "print(m.requires('torchvision'))"], capture_output=True, text=True).stdout
    assert f"torch (=={host_torch})" in requires or f"torch=={host_torch}" in requires, requires
    assert_no_stack(env)
    assert (project / "uv.lock").read_bytes() == lock
    assert any("out of date" in note for note in prepared.env.plan["notes"]), prepared.env.plan


def test_lock_whose_pins_cannot_fit_the_host_says_how_to_relock(tmp_path, host_python):
    # the project itself forbids the host's torch for its torchvision: no version fits, nothing installed
    project = make_project(tmp_path / "proj", ["torch>=2", "torchvision==0.25.*"], requires_python=">=3.11")
    uv("lock", "-q", "--python", host_python, cwd=project)
    error = failure(host_python, project)
    assert error.code in ("DEPENDENCY_CONFLICT_TRANSITIVE", "LOCK_CONFLICTS_WITH_HOST"), str(error)
    facts = dict(error.facts)
    assert facts["the host provides torch"] == host_dists(host_python)["torch"]
    assert "torchvision" in facts["without the host, uv picks torch"], facts
    assert (project / "uv.lock").read_bytes()


# --- the env's interpreter and state ---------------------------------------------------------------------------

def test_requires_python_that_excludes_the_host_is_a_clear_error(tmp_path, host_python):
    project = make_project(tmp_path / "proj", ["tomli-w"], requires_python=">=3.12")
    error = failure(host_python, project)
    assert error.code == "REQUIRES_PYTHON_EXCLUDES_HOST"
    assert ">=3.12" in str(error) and "3.11" in str(error) and "--host-python" in str(error)
    assert not (project / ".venv").exists()


def test_env_state_is_checked_and_repaired_every_start_keeping_packages(tmp_path, host_python):
    project = make_project(tmp_path / "proj", ["tomli-w"])
    prepare(host_python, project)
    env = project / ".venv"
    cfg = env / "pyvenv.cfg"
    # what a plain `uv venv --allow-existing` (or an edit) leaves: the flag off, inputs unchanged
    cfg.write_text(cfg.read_text().replace("include-system-site-packages = true",
                                           "include-system-site-packages = false"))
    (venv.site_packages_of(env, (3, 11)) / "user_extra.py").write_text("X = 1\n")
    again = prepare(host_python, project)
    assert "repaired: system-site-packages turned on" in again.env.actions
    assert "include-system-site-packages = true" in cfg.read_text()
    assert "tomli-w" in dists(env) and (venv.site_packages_of(env, (3, 11)) / "user_extra.py").exists()
    third = prepare(host_python, project)
    assert third.env.reused and third.env.actions == []


def test_env_from_another_interpreter_is_reported_not_replaced(tmp_path, host_python):
    other = Path("/root/.pyenv/versions/3.12.1/bin/python3.12")
    if not other.exists():
        pytest.fail(f"this test needs a second interpreter at {other}")
    project = make_project(tmp_path / "proj", ["tomli-w"])
    uv("venv", "-q", "--python", str(other), str(project / ".venv"))
    before = (project / ".venv" / "pyvenv.cfg").read_text()
    error = failure(host_python, project)
    assert error.code == "ENV_OTHER_INTERPRETER" and "mv " in str(error)
    assert (project / ".venv" / "pyvenv.cfg").read_text() == before


def test_packaged_project_is_installed_editable_without_its_dependencies(tmp_path, host_python):
    project = make_project(tmp_path / "proj", ["torch", "tomli-w"], name="mypkg", extra="""
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
""")
    (project / "src" / "mypkg").mkdir(parents=True)
    (project / "src" / "mypkg" / "__init__.py").write_text("VALUE = 1\n")
    prepared = prepare(host_python, project)
    env = project / ".venv"
    assert f"{project} (editable)" in prepared.env.plan["installed"]
    assert {"mypkg", "tomli-w"} <= set(dists(env))
    assert_no_stack(env)
    import subprocess

    (project / "src" / "mypkg" / "__init__.py").write_text("VALUE = 2\n")  # editable: the source is what runs
    out = subprocess.run([str(env / "bin" / "python"), "-c", "import mypkg; print(mypkg.VALUE, mypkg.__file__)"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.split() == ["2", str(project / "src" / "mypkg" / "__init__.py")], out.stderr


def test_malformed_dependency_tables_are_clear_errors(tmp_path, host_python):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\ndependencies = "torch"\n')
    error = failure(host_python, project)
    assert error.code == "DEPENDENCY_TABLE_INVALID" and "[project].dependencies must be a list" in str(error)
    assert (project / "pyproject.toml").read_text().endswith('dependencies = "torch"\n')
