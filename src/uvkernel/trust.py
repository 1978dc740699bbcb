"""``require_trust``: a project is built and installed only after ``uvkernel trust DIR``, direnv-style.

A kernel start installs the project as ``uv sync`` would, which runs its build backend and the build of any
source distribution it needs: code from the project, run as the user.  With ``require_trust = true`` (kernel spec
or jupyter config; never ``[tool.uvkernel]``, as a project must not trust itself) a start is refused until the
user trusts the project.  The trust is a record in the user's cache holding a hash of the project's dependency
files (its pyproject.toml, the workspace root's and every member's, uv.lock, uv.toml): when one of them changes,
the project is asked about again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from .errors import ProjectError, UvkernelError, note
from .files import read_input, write_atomic
from .project import Project, member_folders, workspace_globs

FOLDER = "trust"
MAX_MEMBERS = 2000  # a workspace glob naming more folders than this is hashed in its first ones only


def dependency_files(project: Project) -> list[Path]:
    """The files whose contents decide what a start builds and installs (present or not), in a fixed order."""
    if project.root is None:
        return []
    top = project.top or project.root
    files = [project.root / "pyproject.toml", top / "pyproject.toml", top / "uv.lock", top / "uv.toml",
             project.root / "uv.toml"]
    members = ((project.workspace if project.workspace_root is not None else project.pyproject).get("tool") or {})
    members = ((members.get("uv") or {}).get("workspace") or {}).get("members")
    found: list[Path] = []
    for pattern in workspace_globs(members):
        found.extend(member_folders(top, pattern)[:MAX_MEMBERS])
    files.extend(folder / "pyproject.toml" for folder in sorted(set(found))[:MAX_MEMBERS])
    out: list[Path] = []
    for path in files:
        if path not in out:
            out.append(path)
    return out


def digest(project: Project) -> tuple[str, list[str]]:
    """(hash of the dependency files' names and bytes, the names of those that exist)."""
    h = hashlib.sha256()
    present = []
    for path in dependency_files(project):
        try:
            data: bytes | None = read_input(path)
        except FileNotFoundError:
            data = None
        except (OSError, UvkernelError):
            data = b"\0unreadable"  # never equal to a real file's bytes: unreadable files are never trusted
        h.update(str(path).encode() + b"\0")
        h.update(b"absent" if data is None else hashlib.sha256(data).digest())
        if data is not None:
            present.append(str(path))
    return h.hexdigest(), present


def _record_path(cache_root: Path, root: Path) -> Path:
    return cache_root / FOLDER / f"{hashlib.sha256(str(root).encode()).hexdigest()[:24]}.json"


def _read(cache_root: Path, root: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_input(_record_path(cache_root, root)))
    except (OSError, ValueError, UvkernelError):
        return {}
    return data if isinstance(data, dict) and data.get("root") == str(root) else {}


def _files_text(files: list[str], root: Path) -> str:
    return ", ".join(os.path.relpath(f, root) for f in files) or "none"


def require(project: Project, cache_root: Path) -> None:
    """Raise TRUST_REQUIRED unless the user trusted the project's dependency files as they are now."""
    if project.root is None:
        return  # a folder outside any project: nothing of its own is built
    current, files = digest(project)
    record = _read(cache_root, project.root)
    if record.get("digest") == current:
        return
    changed = " (its dependency files changed since you trusted it)" if record else ""
    raise ProjectError("TRUST_REQUIRED", root=str(project.root), changed=changed,
                       files=_files_text(files, project.root),
                       facts=[("trusted on", time.strftime("%Y-%m-%d %H:%M:%S",
                                                           time.localtime(record["time"])))]
                       if isinstance(record.get("time"), (int, float)) else [])


def grant(project: Project, cache_root: Path) -> str:
    """Record the trust for the project's dependency files as they are now; returns the notice."""
    assert project.root is not None
    current, files = digest(project)
    write_atomic(_record_path(cache_root, project.root),
                 json.dumps({"root": str(project.root), "digest": current, "files": files, "time": time.time()}),
                 private=True, make_parent=True)
    return note("TRUST_RECORDED", root=str(project.root), files=_files_text(files, project.root))


def is_trusted(project: Project, cache_root: Path) -> bool:
    return project.root is not None and _read(cache_root, project.root).get("digest") == digest(project)[0]


def revoke(root: Path, cache_root: Path) -> str:
    path = _record_path(cache_root, root)
    try:
        path.unlink()
    except FileNotFoundError:
        return note("TRUST_NOT_RECORDED", root=str(root))
    return note("TRUST_REVOKED", root=str(root))
