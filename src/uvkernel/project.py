"""Stage 1: find the notebook's project and where its env lives.

Where the notebook is: the provisioner's ``cwd`` (absolute from JupyterLab and ``jupyter execute``,
relative from ``nbconvert --execute sub/nb.ipynb``, None from papermill and ``jupyter console``), else the
folder of ``JPY_SESSION_NAME``, else the server's working directory.  Relative paths resolve against
the server's working directory.

A project is the nearest folder, walking up, holding a ``uv.lock`` or a ``pyproject.toml`` with a
``[project]`` or ``[tool.uv]`` table (a pyproject.toml that only configures tools, e.g. black, is not a
project).  As uv does, a project that is a member of a uv workspace (an ancestor's ``[tool.uv.workspace]``
``members`` globs match it and its ``exclude`` globs do not) shares the workspace's env and lock: ``.venv``
and ``uv.lock`` at the workspace root.  The env is ``.venv`` there, or ``UV_PROJECT_ENVIRONMENT`` (relative
to the workspace root).
A notebook outside any project gets an env in the per-user cache keyed by its folder and the host, so
nothing is written into a folder that is not a project.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ProjectError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pythons only
    import tomli as tomllib


@dataclass
class Project:
    notebook_dir: Path  # where the notebook (and the kernel's cwd) is
    root: Path | None  # the project folder, None for a notebook outside any project
    env_path: Path  # the env the kernel runs from
    env_reason: str  # why that env path
    pyproject: dict[str, Any] = field(default_factory=dict)
    in_cache: bool = False  # the env lives in the per-user cache (no project, or a read-only project folder)
    workspace_root: Path | None = None  # where uv.lock and the env live: the workspace's root, else ``root``
    workspace: dict[str, Any] = field(default_factory=dict)  # the workspace root's pyproject.toml
    notices: list[str] = field(default_factory=list)  # facts for the report (a member's stray .venv …)

    @property
    def is_project(self) -> bool:
        return self.root is not None

    @property
    def top(self) -> Path | None:
        """The folder uv treats as the workspace root (the project itself when it is not a member)."""
        return self.workspace_root or self.root

    @property
    def lock_path(self) -> Path | None:
        return self.top / "uv.lock" if self.top is not None else None

    @property
    def has_lock(self) -> bool:
        return self.lock_path is not None and self.lock_path.is_file()

    @property
    def is_member(self) -> bool:
        return self.workspace_root is not None and self.workspace_root != self.root

    @property
    def requires_python(self) -> str | None:
        return (self.pyproject.get("project") or {}).get("requires-python")

    def tool_uv(self, *, top: bool = False) -> dict[str, Any]:
        data = self.workspace if (top and self.workspace_root is not None) else self.pyproject
        value = (data.get("tool") or {}).get("uv") or {}
        return value if isinstance(value, dict) else {}

    def to_json(self) -> dict[str, Any]:
        return {
            "notebook_dir": str(self.notebook_dir),
            "root": str(self.root) if self.root else None,
            "env": str(self.env_path),
            "env_reason": self.env_reason,
            "workspace_root": str(self.workspace_root) if self.workspace_root else None,
            "has_lock": self.has_lock,
            "notices": self.notices,
        }


def notebook_folder(cwd: str | os.PathLike[str] | None, environ: Mapping[str, str], base: str | None = None) -> Path:
    """Where the notebook is, from what the front end gave us."""
    base_dir = Path(base or os.getcwd())
    if cwd:
        start = Path(cwd)
    else:
        session = environ.get("JPY_SESSION_NAME", "")
        start = Path(session).parent if session and "/" in session.replace(os.sep, "/") else Path(".")
    if not start.is_absolute():
        start = base_dir / start
    start = Path(os.path.normpath(start))
    # a folder that vanished (renamed while the server ran): use its nearest existing parent
    while not start.is_dir() and start != start.parent:
        start = start.parent
    return start


def read_pyproject(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError("PYPROJECT_INVALID", path=str(path), detail=str(exc)) from None
    except OSError as exc:
        raise ProjectError("PYPROJECT_INVALID", path=str(path), detail=exc.strerror or str(exc)) from None


def _is_project(folder: Path) -> tuple[bool, dict[str, Any]]:
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        data = read_pyproject(pyproject)
        if "project" in data or "uv" in (data.get("tool") or {}):
            return True, data
        if (folder / "uv.lock").is_file():
            return True, data
        return False, {}
    if (folder / "uv.lock").is_file():
        return True, {}
    return False, {}


def find_root(start: Path) -> tuple[Path | None, dict[str, Any]]:
    for folder in (start, *start.parents):
        found, data = _is_project(folder)
        if found:
            return folder, data
    return None, {}


def _globs(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _matches(folder: Path, root: Path, patterns: list[str]) -> bool:
    """Does ``folder`` match one of the workspace globs (relative to ``root``), as uv matches members?"""
    for pattern in patterns:
        for candidate in root.glob(pattern.rstrip("/")) if pattern.strip("/. ") else [root]:
            try:
                if candidate.resolve() == folder.resolve():
                    return True
            except OSError:
                continue
    return False


def find_workspace(project_root: Path, data: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    """The uv workspace ``project_root`` belongs to: (root, its pyproject), or None for a lone project.

    uv's rule: the project's own ``[tool.uv.workspace]`` makes it a root; otherwise the nearest ancestor with
    one whose ``members`` globs match the project and whose ``exclude`` globs do not.
    """
    if isinstance(((data.get("tool") or {}).get("uv") or {}).get("workspace"), dict):
        return project_root, data
    for folder in project_root.parents:
        pyproject = folder / "pyproject.toml"
        if not pyproject.is_file():
            continue
        try:
            candidate = read_pyproject(pyproject)
        except ProjectError:
            continue  # uv skips an unreadable ancestor too; the member's own file is what we report
        table = ((candidate.get("tool") or {}).get("uv") or {}).get("workspace")
        if not isinstance(table, dict):
            continue
        if _matches(project_root, folder, _globs(table.get("members"))) and not _matches(
                project_root, folder, _globs(table.get("exclude"))):
            return folder, candidate
    return None


def cache_env_path(cache_root: Path, notebook_dir: Path, host_key: str) -> Path:
    """An env in the per-user cache for a folder that is not a project."""
    digest = hashlib.sha256(f"{notebook_dir}\0{host_key}".encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", notebook_dir.name or "root").strip("-")[:40] or "folder"
    return cache_root / "envs" / f"{slug}-{digest}"


def find_project(
    cwd: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
    *,
    cache_root: Path,
    host_key: str,
    base: str | None = None,
) -> Project:
    notebook_dir = notebook_folder(cwd, environ, base)
    root, data = find_root(notebook_dir)
    if root is None:
        env = cache_env_path(cache_root, notebook_dir, host_key)
        return Project(notebook_dir, None, env, "per-user cache (the notebook's folder is not in a project)",
                       in_cache=True)
    found = find_workspace(root, data)
    top, workspace = found if found else (root, data)
    notices = []
    if top != root and os.path.lexists(root / ".venv"):
        notices.append(f"{root / '.venv'} is left from before: uv (and uvkernel) use the workspace's env at "
                       f"{top / '.venv'}; the member's own .venv is not used and not deleted")

    def make(env_path: Path, reason: str, in_cache: bool = False) -> Project:
        return Project(notebook_dir, root, env_path, reason, data, in_cache=in_cache,
                       workspace_root=top if found else None, workspace=workspace, notices=notices)

    override = environ.get("UV_PROJECT_ENVIRONMENT")
    if override:
        env_path = Path(os.path.expanduser(override))
        if not env_path.is_absolute():
            env_path = top / env_path  # uv: relative to the workspace root
        return make(Path(os.path.normpath(env_path)), "UV_PROJECT_ENVIRONMENT")
    env_path = top / ".venv"
    if not os.path.lexists(env_path) and not _writable(top):
        # a read-only project folder (a mounted share, a read-only file system): the env goes to the cache
        env = cache_env_path(cache_root, top, host_key)
        return make(env, f"per-user cache: notice, the project folder {top} is read-only, so the env lives in "
                         f"the cache instead of {env_path}", in_cache=True)
    return make(env_path, "the workspace's .venv (at its root)" if top != root else "the project's .venv")


def _writable(folder: Path) -> bool:
    """Can an env folder be created here?  os.access also answers False on a read-only file system for root."""
    return os.access(folder, os.W_OK | os.X_OK)
