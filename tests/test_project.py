"""Stage 1 without Jupyter: where the notebook is, which project, which env."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_project

from uvkernel.errors import ProjectError
from uvkernel.project import find_project, notebook_folder


def _find(cwd, environ=None, base=None, cache=Path("/cache")):
    return find_project(cwd, environ or {}, cache_root=cache, host_key="/host/python", base=base)


def test_folder_from_absolute_relative_and_missing_cwd(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    assert notebook_folder(str(tmp_path / "sub"), {}) == tmp_path / "sub"
    assert notebook_folder("sub/deeper", {}, base=str(tmp_path)) == tmp_path / "sub" / "deeper"  # nbconvert
    assert notebook_folder(None, {}, base=str(tmp_path)) == tmp_path  # papermill, console
    session = {"JPY_SESSION_NAME": str(tmp_path / "sub" / "nb.ipynb")}
    assert notebook_folder(None, session, base="/") == tmp_path / "sub"
    assert notebook_folder(None, {"JPY_SESSION_NAME": "sub/deeper/nb.ipynb"}, base=str(tmp_path)) == (
        tmp_path / "sub" / "deeper")
    # a folder renamed away while the server ran: its nearest existing parent
    assert notebook_folder(str(tmp_path / "sub" / "gone" / "away"), {}) == tmp_path / "sub"


def test_walks_up_to_the_project(tmp_path):
    root = make_project(tmp_path / "my proj")
    (root / "a" / "b").mkdir(parents=True)
    project = _find(str(root / "a" / "b"))
    assert project.root == root and project.env_path == root / ".venv"
    assert project.notebook_dir == root / "a" / "b"


def test_tool_only_pyproject_is_not_a_project(tmp_path):
    root = make_project(tmp_path / "outer")
    inner = tmp_path / "outer" / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text("[tool.black]\nline-length = 100\n")
    assert _find(str(inner)).root == root
    lock_only = tmp_path / "outer" / "locked"
    lock_only.mkdir()
    (lock_only / "uv.lock").write_text("version = 1\n")
    assert _find(str(lock_only)).root == lock_only


def test_outside_any_project_uses_the_cache(tmp_path):
    folder = tmp_path / "loose"
    folder.mkdir()
    a = _find(str(folder), cache=tmp_path / "cache")
    assert a.root is None and a.env_path.parent == tmp_path / "cache" / "envs"
    assert a.env_path.name.startswith("loose-")
    other = tmp_path / "loose2"
    other.mkdir()
    assert _find(str(other), cache=tmp_path / "cache").env_path != a.env_path
    # a different host gets a different env for the same folder
    b = find_project(str(folder), {}, cache_root=tmp_path / "cache", host_key="/other/python")
    assert b.env_path != a.env_path


def test_uv_project_environment(tmp_path):
    root = make_project(tmp_path / "p")
    assert _find(str(root), {"UV_PROJECT_ENVIRONMENT": "envs/x"}).env_path == root / "envs" / "x"
    assert _find(str(root), {"UV_PROJECT_ENVIRONMENT": str(tmp_path / "abs")}).env_path == tmp_path / "abs"


def test_malformed_pyproject_is_a_clear_error(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project\nname = 'x'\n")
    with pytest.raises(ProjectError) as info:
        _find(str(root))
    text = str(info.value)
    assert "PYPROJECT_INVALID" in text and str(root / "pyproject.toml") in text and "line 1" in text
