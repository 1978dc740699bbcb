"""The project installed exactly as uv would, minus what the host provides: real uv, real host torch.

The PyTorch indexes are unreachable here: a local ``file://`` simple index of small wheels made by the tests
stands in for download.pytorch.org (``torch`` there is a fake that must never be installed: the host provides
torch; ``torchvision`` there records which build it is).  Each scenario runs through a real kernel start and
through ``uvkernel check``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from deps_support import assert_no_stack, dists, host_dists, uv
from hardening_support import assert_clear_error, check, snapshot
from helpers import Kernel, run_async
from index_support import make_wheel, serve, simple_index

HATCH = '\n[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'


@pytest.fixture(scope="module")
def indexes(tmp_path_factory) -> dict[str, str]:
    """Two stand-ins for download.pytorch.org (cpu and cu128 variants) and one for a newer torch."""
    base = tmp_path_factory.mktemp("indexes")
    wheels = base / "wheels"
    out = {}
    for variant in ("cpu", "cu128"):
        made = [make_wheel(wheels / variant, "torch", f"2.13.0+{variant}", code="raise ImportError('index torch')\n"),
                make_wheel(wheels / variant, "torchvision", f"0.28.0+{variant}", requires=["torch==2.13.0"])]
        out[variant] = simple_index(base / f"pytorch-{variant}", made)
    future = [make_wheel(wheels / "future", "torch", "2.15.0", code="raise ImportError('index torch')\n"),
              make_wheel(wheels / "future", "torchcomp", "2.0.0", requires=["torch>=2.15"]),
              make_wheel(wheels / "future", "torchcomp", "1.0.0", requires=["torch>=2.13,<2.15"])]
    out["future"] = simple_index(base / "future", future)
    return out


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(textwrap.dedent(text))
    return folder


def index_table(name: str, url: str) -> str:
    return f'\n[[tool.uv.index]]\nname = "{name}"\nurl = "{url}"\nexplicit = true\n'


def kernel_facts(name: str, cwd: Path, expression: str):
    async def scenario():
        async with Kernel(name, cwd=cwd) as k:
            return await k.value(expression)

    return run_async(scenario())


TORCH_AND_VISION = ("[__import__('torch').__file__, __import__('torchvision').BUILD, "
                    "__import__('torchvision').__file__]")


# --- the four patterns of uv's PyTorch guide ------------------------------------------------------------------

def _pattern(kind: str, folder: Path, indexes: dict[str, str]) -> tuple[Path, dict, str]:
    """(project, provisioner config, the torchvision build the kernel must get)."""
    head = '[project]\nname = "proj"\nversion = "0.1.0"\nrequires-python = ">=3.10"\n'
    if kind == "pypi":
        return write(folder, head + 'dependencies = ["torch==2.13.0", "six"]\n'), {}, ""
    if kind == "named-index":
        return write(folder, head + 'dependencies = ["torch==2.13.0", "torchvision"]\n'
                     '[tool.uv.sources]\ntorch = { index = "pytorch-cpu" }\ntorchvision = { index = "pytorch-cpu" }\n'
                     + index_table("pytorch-cpu", indexes["cpu"])), {}, "0.28.0+cpu"
    if kind == "markers":
        lists = ('[{ index = "pytorch-cpu", marker = "sys_platform == \'linux\'" }, '
                 '{ index = "pytorch-cu128", marker = "sys_platform != \'linux\'" }]')
        return write(folder, head + 'dependencies = ["torch==2.13.0", "torchvision"]\n'
                     f'[tool.uv.sources]\ntorch = {lists}\ntorchvision = {lists}\n'
                     + index_table("pytorch-cpu", indexes["cpu"]) + index_table("pytorch-cu128", indexes["cu128"])
                     ), {}, "0.28.0+cpu"
    assert kind == "extras-conflicts"
    lists = '[{ index = "pytorch-cpu", extra = "cpu" }, { index = "pytorch-cu128", extra = "cu128" }]'
    return write(folder, head + 'dependencies = []\n[project.optional-dependencies]\n'
                 'cpu = ["torch==2.13.0", "torchvision"]\ncu128 = ["torch==2.13.0", "torchvision"]\n'
                 '[tool.uv]\nconflicts = [[{ extra = "cpu" }, { extra = "cu128" }]]\n'
                 f'[tool.uv.sources]\ntorch = {lists}\ntorchvision = {lists}\n'
                 + index_table("pytorch-cpu", indexes["cpu"]) + index_table("pytorch-cu128", indexes["cu128"])
                 ), {"extras": ["cu128"]}, "0.28.0+cu128"


@pytest.mark.parametrize("locked", [True, False], ids=["uv.lock", "no-lock"])
@pytest.mark.parametrize("kind", ["pypi", "named-index", "markers", "extras-conflicts"])
def test_pytorch_guide_patterns_get_uvs_sources_and_the_hosts_torch(kind, locked, tmp_path, indexes, install_spec,
                                                                    host_python, host_torch_file):
    project, config, vision = _pattern(kind, tmp_path / "proj", indexes)
    if locked:
        uv("lock", "-q", "--python", host_python, cwd=project)
    files = snapshot(project)
    # the host provides torch: the index's torch is never even downloaded (gone from the index from here on)
    for wheel in Path(indexes["cpu"].removeprefix("file://")).glob("torch/torch-*.whl"):
        wheel.rename(wheel.with_suffix(".gone"))
    try:
        name = install_spec(**config)
        if vision:
            torch_file, build, vision_file = kernel_facts(name, project, TORCH_AND_VISION)
            assert build == vision, "the torchvision build the project's sources name"
            assert vision_file.startswith(str(project / ".venv") + "/")
        else:
            torch_file = kernel_facts(name, project, "__import__('torch').__file__")
        assert torch_file == host_torch_file
        assert_no_stack(project / ".venv")
        args = ["--host-python", host_python] + [a for e in config.get("extras", []) for a in ("--extra", e)]
        status, report, _ = check(project, *args) if not config else check(project, "--kernel", name)
        assert status == 0, report["message"]
        deps = report["env"]["dependencies"]
        assert "torch" in deps["from_host"]
        assert ("uv sync" in deps["how"]) == locked, deps["how"]
    finally:
        for wheel in Path(indexes["cpu"].removeprefix("file://")).glob("torch/torch-*.gone"):
            wheel.rename(wheel.with_suffix(".whl"))
    assert snapshot(project, skip=(".venv",)) == {k: v for k, v in files.items() if not k.startswith(".venv")}


# --- local code: path sources, workspaces, git and url sources ---------------------------------------------------

def _local_package(folder: Path, name: str, code: str, version: str = "0.0.1") -> Path:
    """A project of one module (src layout, hatchling) at ``folder``, for path sources."""
    module = name.replace("-", "_")
    write(folder, f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = []\n' + HATCH
          + f'\n[tool.hatch.build.targets.wheel]\npackages = ["src/{module}"]\n')
    (folder / "src" / module).mkdir(parents=True, exist_ok=True)
    (folder / "src" / module / "__init__.py").write_text(code)
    return folder


def _utils(folder: Path, who: str) -> Path:
    return _local_package(folder, "utils", f"WHO = {who!r}\n")


@pytest.mark.parametrize("locked", [True, False], ids=["uv.lock", "no-lock"])
def test_path_source_named_like_a_pypi_project_is_the_local_copy(locked, tmp_path, install_spec, host_python):
    _utils(tmp_path / "utils", "local")
    app = write(tmp_path / "app", '[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = ">=3.10"\n'
                'dependencies = ["utils", "torch"]\n'
                '[tool.uv.sources]\nutils = { path = "../utils", editable = true }\n')
    if locked:
        uv("lock", "-q", "--python", host_python, cwd=app)
    who, where = kernel_facts(install_spec(), app, "[__import__('utils').WHO, __import__('utils').__file__]")
    assert who == "local" and where == str(tmp_path / "utils" / "src" / "utils" / "__init__.py")
    assert_no_stack(app / ".venv")


def _workspace(root: Path) -> Path:
    write(root, '[tool.uv.workspace]\nmembers = ["packages/*"]\nexclude = ["packages/scratch"]\n')
    core = write(root / "packages" / "wscore", '[project]\nname = "wscore"\nversion = "0.0.1"\n'
                 'requires-python = ">=3.10"\ndependencies = ["six"]\n' + HATCH)
    (core / "src" / "wscore").mkdir(parents=True)
    (core / "src" / "wscore" / "__init__.py").write_text("WHERE = 'workspace member'\n")
    analysis = write(root / "packages" / "analysis", '[project]\nname = "analysis"\nversion = "0.0.1"\n'
                     'requires-python = ">=3.10"\ndependencies = ["wscore", "torch", "tomli-w"]\n'
                     '[tool.uv.sources]\nwscore = { workspace = true }\n' + HATCH)
    (analysis / "src" / "analysis").mkdir(parents=True)
    (analysis / "src" / "analysis" / "__init__.py").write_text("")
    (analysis / "notebooks").mkdir()
    # excluded from the workspace: its (broken) pyproject must not matter
    (root / "packages" / "scratch").mkdir()
    (root / "packages" / "scratch" / "pyproject.toml").write_text("[project]\nname = 5\n")
    return analysis


@pytest.mark.parametrize("locked", [True, False], ids=["uv.lock", "no-lock"])
def test_workspace_member_notebook_uses_the_workspace_env_and_its_members(locked, tmp_path, install_spec,
                                                                         host_python, host_torch_file):
    root = tmp_path / "ws"
    analysis = _workspace(root)
    (analysis / ".venv").mkdir()  # a member's own env left from before: reported, never used or deleted
    (analysis / ".venv" / "marker").write_text("mine")
    if locked:
        uv("lock", "-q", "--python", host_python, cwd=root)
    lock = (root / "uv.lock").read_bytes() if locked else None
    facts = kernel_facts(install_spec(), analysis / "notebooks",
                         "[__import__('wscore').WHERE, __import__('wscore').__file__, __import__('analysis').__file__,"
                         " __import__('torch').__file__, __import__('sys').prefix]")
    assert facts[0] == "workspace member"
    assert facts[1] == str(root / "packages" / "wscore" / "src" / "wscore" / "__init__.py")
    assert facts[2] == str(analysis / "src" / "analysis" / "__init__.py")
    assert facts[3] == host_torch_file
    assert facts[4] == str(root / ".venv")  # where uv puts a workspace's env
    assert {"wscore", "analysis", "tomli-w"} <= set(dists(root / ".venv"))
    assert "six" not in dists(root / ".venv")  # the host has it: left to the host
    assert_no_stack(root / ".venv")
    assert (analysis / ".venv" / "marker").read_text() == "mine"
    if locked:
        assert (root / "uv.lock").read_bytes() == lock
    else:
        assert not (root / "uv.lock").exists() and not (analysis / "uv.lock").exists()
    status, report, _ = check(analysis / "notebooks", "--host-python", host_python)
    assert status == 0, report["message"]
    assert report["project"]["workspace_root"] == str(root)
    assert any(str(analysis / ".venv") in n for n in report["project"]["notices"])


def test_uv_project_environment_is_relative_to_the_workspace_root(tmp_path, host_python, monkeypatch):
    root = tmp_path / "ws"
    analysis = _workspace(root)
    monkeypatch.setenv("UV_PROJECT_ENVIRONMENT", "envs/kernel")
    status, report, _ = check(analysis / "notebooks", "--host-python", host_python)
    assert status == 0, report["message"]
    assert report["project"]["env"] == str(root / "envs" / "kernel")
    assert "wscore" in dists(root / "envs" / "kernel")


def test_git_and_url_sources_from_local_repositories(tmp_path, install_spec, host_python):
    repo = tmp_path / "repo"
    pkg = write(repo / "sub" / "gitpkg", '[project]\nname = "gitpkg"\nversion = "1.0.0"\ndependencies = []\n' + HATCH)
    (pkg / "src" / "gitpkg").mkdir(parents=True)
    (pkg / "src" / "gitpkg" / "__init__.py").write_text("TAG = 'v1'\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "v1"], check=True)
    subprocess.run(git + ["tag", "v1"], check=True)
    (pkg / "src" / "gitpkg" / "__init__.py").write_text("TAG = 'after v1'\n")
    subprocess.run(git + ["commit", "-qam", "later"], check=True)
    wheel = make_wheel(tmp_path / "wheels", "urlpkg", "3.0.0")
    server = serve(tmp_path / "wheels")  # uv takes url sources over http(s) only
    url = f"http://127.0.0.1:{server.server_address[1]}/{wheel.name}"
    app = write(tmp_path / "app", '[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = ">=3.10"\n'
                'dependencies = ["gitpkg", "urlpkg", "torch"]\n[tool.uv.sources]\n'
                f'gitpkg = {{ git = "{repo.as_uri()}", tag = "v1", subdirectory = "sub/gitpkg" }}\n'
                f'urlpkg = {{ url = "{url}" }}\n')
    try:
        uv("lock", "-q", "--python", host_python, cwd=app)
        tag, build = kernel_facts(install_spec(), app, "[__import__('gitpkg').TAG, __import__('urlpkg').BUILD]")
    finally:
        server.shutdown()
    assert tag == "v1" and build == "3.0.0"
    assert_no_stack(app / ".venv")


# --- locks ---------------------------------------------------------------------------------------------------

def test_lock_made_for_a_newer_torch_re_resolves_only_what_needs_it(tmp_path, indexes, install_spec, host_python):
    project = write(tmp_path / "proj", '[project]\nname = "proj"\nversion = "0.1.0"\nrequires-python = ">=3.10"\n'
                    'dependencies = ["torch>=2.13", "torchcomp", "tomli-w"]\n[tool.uv.sources]\n'
                    'torch = { index = "future" }\ntorchcomp = { index = "future" }\n'
                    + index_table("future", indexes["future"]))
    uv("lock", "-q", "--python", host_python, cwd=project)
    lock = (project / "uv.lock").read_text()
    assert 'name = "torchcomp"\nversion = "2.0.0"' in lock and 'version = "2.15.0"' in lock
    name = install_spec()
    version = kernel_facts(name, project, "__import__('importlib.metadata').metadata.version('torchcomp')")
    assert version == "1.0.0"  # the version that works with the host's torch 2.13
    assert f'name = "tomli-w"\nversion = "{dists(project / ".venv")["tomli-w"]}"' in lock  # the rest as locked
    status, report, _ = check(project, "--kernel", name)
    assert status == 0, report["message"]
    deviations = report["env"]["dependencies"]["lock_deviations"]
    assert deviations == [{"name": "torchcomp", "locked": "2.0.0", "installed": "1.0.0",
                           "why": deviations[0]["why"]}] and "torch>=2.15" in deviations[0]["why"]
    assert (project / "uv.lock").read_text() == lock
    shown = subprocess.run([str(project / ".venv" / "bin" / "python"), "-c",
                            "from uvkernel.kernel_extension import render_text; import json, sys; "
                            "print(render_text(json.load(open(sys.argv[1]))))",
                            str(project / ".venv" / ".uvkernel-report.json")], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert "differs from uv.lock" in shown.stdout and "torchcomp 1.0.0 instead of 2.0.0" in shown.stdout, shown


# --- air-gapped: the user's wheelhouse is added to, never replaced --------------------------------------------

def test_offline_wheelhouse_from_uv_variables_is_used(tmp_path, host_python, monkeypatch):
    house = tmp_path / "wheelhouse"
    make_wheel(house, "offpkg", "1.2.3")
    project = write(tmp_path / "proj", '[project]\nname = "proj"\nversion = "0.1.0"\n'
                    'dependencies = ["offpkg", "torch"]\n')
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_FIND_LINKS", str(house))
    status, report, _ = check(project, "--host-python", host_python)
    assert status == 0, report["message"]
    assert dists(project / ".venv")["offpkg"] == "1.2.3"
    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text().replace(
        '"offpkg"', '"offpkg", "not-in-the-house"'))
    status, report, _ = check(project, "--host-python", host_python)
    assert status != 0
    assert_clear_error(report["message"], "PACKAGE_NOT_AVAILABLE_OFFLINE", "not-in-the-house", "UV_FIND_LINKS")


def test_offline_a_git_source_missing_from_uvs_cache_is_an_offline_miss_not_a_bad_address(tmp_path, host_python,
                                                                                          monkeypatch):
    # an air-gapped GPU server: uv refuses the clone because it is offline; "check the address and your network"
    # sent the user after the wrong cause
    project = write(tmp_path / "proj", '[project]\nname = "proj"\nversion = "0.1.0"\n'
                    'dependencies = ["gitonly"]\n\n[tool.uv.sources]\n'
                    'gitonly = { git = "https://github.com/example/uvkernel-offline-gitonly" }\n')
    monkeypatch.setenv("UV_OFFLINE", "1")
    status, report, _ = check(project, "--host-python", host_python)
    assert status != 0
    assert_clear_error(report["message"], "PACKAGE_NOT_AVAILABLE_OFFLINE", "gitonly",
                       f"{project / 'pyproject.toml'}:7", "declared in: the project's dependencies", "UV_OFFLINE")
    assert "SOURCE_UNREACHABLE" not in report["message"]


# --- bad input: named, located, nothing changed -------------------------------------------------------------------

def _refused(project: Path, code: str, *must: str, cwd: Path | None = None, host_python: str) -> None:
    before = snapshot(project)
    status, report, _ = check(cwd or project, "--host-python", host_python)
    assert status != 0
    assert_clear_error(report["message"], code, *must)
    after = snapshot(project)
    assert {k: v for k, v in after.items() if not k.startswith(".venv")} == \
        {k: v for k, v in before.items() if not k.startswith(".venv")}
    assert not any(k.startswith(".venv/lib") and "dist-info" in k for k in after if k not in before)


def test_missing_source_path_is_named_with_its_file_and_line(tmp_path, host_python):
    app = write(tmp_path / "app", '[project]\nname = "app"\nversion = "0.1.0"\ndependencies = ["utils"]\n\n'
                '[tool.uv.sources]\nutils = { path = "../nowhere" }\n')
    _refused(app, "SOURCE_NOT_FOUND", "../nowhere", f"{app}/pyproject.toml:7", host_python=host_python)


def test_unreachable_git_source_is_named_with_its_file_and_line(tmp_path, host_python):
    app = write(tmp_path / "app", '[project]\nname = "app"\nversion = "0.1.0"\ndependencies = ["gitpkg"]\n'
                f'[tool.uv.sources]\ngitpkg = {{ git = "{(tmp_path / "no-repo").as_uri()}" }}\n')
    _refused(app, "SOURCE_UNREACHABLE", "gitpkg", f"{app}/pyproject.toml:6", host_python=host_python)


def test_unreachable_index_is_named_with_its_file_and_line(tmp_path, host_python):
    app = write(tmp_path / "app", '[project]\nname = "app"\nversion = "0.1.0"\ndependencies = ["idxpkg"]\n'
                '[tool.uv.sources]\nidxpkg = { index = "private" }\n'
                + index_table("private", "http://127.0.0.1:9/simple"))
    _refused(app, "SOURCE_UNREACHABLE", "private", f"{app}/pyproject.toml", host_python=host_python)


def test_workspace_source_naming_no_member_is_refused(tmp_path, host_python):
    root = tmp_path / "ws"
    analysis = _workspace(root)
    text = (analysis / "pyproject.toml").read_text().replace('"wscore", "torch"', '"wscore", "ghost", "torch"')
    (analysis / "pyproject.toml").write_text(text + '\n[tool.uv.sources.ghost]\nworkspace = true\n')
    _refused(root, "SOURCE_FOR_UNKNOWN_PACKAGE", "ghost", f"{analysis}/pyproject.toml", cwd=analysis,
             host_python=host_python)


def test_uv_toml_with_a_typo_is_uvs_refusal_with_the_file(tmp_path, host_python):
    app = write(tmp_path / "app", '[project]\nname = "app"\nversion = "0.1.0"\ndependencies = ["six"]\n')
    (app / "uv.toml").write_text('index-strategy = "frist-index"\n')
    _refused(app, "UV_CONFIG_INVALID", "uv.toml", "frist-index", host_python=host_python)


def test_a_kernel_start_never_writes_or_creates_uv_lock(tmp_path, install_spec, host_python):
    app = write(tmp_path / "app", '[project]\nname = "app"\nversion = "0.1.0"\ndependencies = ["six"]\n')
    kernel_facts(install_spec(), app, "1")
    assert not (app / "uv.lock").exists()
    assert shutil.which("git") is not None  # the git-source test above needs it, as users do


def test_own_code_named_like_a_host_package_is_installed_and_reported(tmp_path, install_spec, host_python):
    # the host has typing-inspect; the project's own `typing-inspect` (a path source) is its code: installed, and
    # the report says which host package it hides
    assert "typing-inspect" in host_dists(host_python), "this test needs a host that has typing-inspect"
    _local_package(tmp_path / "ti", "typing-inspect", "MINE = True\n", version="99.0.0")
    app = write(tmp_path / "app", '[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = ">=3.10"\n'
                'dependencies = ["typing-inspect"]\n'
                '[tool.uv.sources]\ntyping-inspect = { path = "../ti", editable = true }\n')
    uv("lock", "-q", "--python", host_python, cwd=app)
    name = install_spec()
    assert kernel_facts(name, app, "__import__('typing_inspect').MINE") is True
    status, report, _ = check(app, "--kernel", name)
    assert status == 0, report["message"]
    hides = report["env"]["dependencies"]["own_code_shadows_host"]
    assert list(hides) == ["typing-inspect"] and hides["typing-inspect"]  # the host's version it hides


def test_per_group_source_and_managed_false(tmp_path, indexes, install_spec, host_python):
    # a source that applies to one dependency group only: the dev group (uv's default) gets the index build
    project = write(tmp_path / "proj", '[project]\nname = "proj"\nversion = "0.1.0"\nrequires-python = ">=3.10"\n'
                    'dependencies = []\n[dependency-groups]\ndev = ["torchvision"]\n'
                    '[tool.uv.sources]\ntorchvision = [{ index = "pytorch-cpu", group = "dev" }]\n'
                    + index_table("pytorch-cpu", indexes["cpu"]))
    uv("lock", "-q", "--python", host_python, cwd=project)
    assert kernel_facts(install_spec(), project, "__import__('torchvision').BUILD") == "0.28.0+cpu"
    # managed = false: uv would not manage the project, so nothing of it is installed; the report says why
    unmanaged = write(tmp_path / "unmanaged", '[project]\nname = "um"\nversion = "0.1.0"\ndependencies = ["tomli-w"]\n'
                      '[tool.uv]\nmanaged = false\n')
    status, report, _ = check(unmanaged, "--host-python", host_python)
    assert status == 0, report["message"]
    assert "tomli-w" not in dists(unmanaged / ".venv")
    assert "managed = false" in report["env"]["dependencies"]["how"]
