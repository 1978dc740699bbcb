"""The project's own requirements, read from its pyproject.toml and uv.lock (neither is ever written).

* ``[project].dependencies``, the configured ``extras`` (``[project.optional-dependencies]``) and dependency
  groups (``[dependency-groups]``, PEP 735): the groups uv would install by default (``[tool.uv]
  default-groups``, else ``dev``, which also holds the legacy ``[tool.uv] dev-dependencies``) plus the
  configured ``dependency_groups``.  A requirement on the project itself (``name[extra]``) is expanded.
* With a ``uv.lock``, ``uv export --frozen`` (which reads the lock and never writes it) gives the locked
  version of every package; they become *constraints* of the resolution, so a package the lock lists is
  installed at its locked version, a host-provided one stays the host's, and a requirement added to
  pyproject.toml since the last ``uv lock`` is still installed (resolved freshly).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from packaging.requirements import InvalidRequirement, Requirement

from .errors import DependencyError, ProjectError
from .host_packages import canonical
from .project import Project
from .uvbin import run_uv

Log = Callable[[str], None]


@dataclass
class ProjectRequirements:
    requirements: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)  # pins from uv.lock, used as constraints
    sources: list[str] = field(default_factory=list)  # where they came from, for the report


def _self_expand(reqs: list[str], own: str, optional: dict[str, list[str]], seen: set[str]) -> list[str]:
    """Replace ``own[extra]`` requirements by that extra's requirements."""
    out: list[str] = []
    for text in reqs:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            out.append(text)  # reported with its position by the planner
            continue
        if own and canonical(req.name) == own and not req.url:
            for extra in sorted(req.extras):
                if extra not in seen:
                    seen.add(extra)
                    out.extend(_self_expand(list(optional.get(extra, [])), own, optional, seen))
            continue
        out.append(text)
    return out


def _strings(value: Any, where: str, project: Project) -> list[str]:
    """A TOML list of requirement strings, or a clear error naming the table (the file is never edited)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, (str, dict)) for v in value):
        raise ProjectError("DEPENDENCY_TABLE_INVALID", path=str(project.root / "pyproject.toml") if project.root else "",
                           detail=f"{where} must be a list of requirement strings, not {value!r}"[:300])
    return value


def _group(groups: dict[str, Any], name: str, seen: set[str]) -> list[str]:
    if name in seen:
        return []
    seen.add(name)
    out: list[str] = []
    for item in groups.get(name, []):
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict) and "include-group" in item:
            out.extend(_group(groups, item["include-group"], seen))
    return out


def _missing(kind: str, name: str, available: list[str], root: Any) -> DependencyError:
    setting = "extras" if kind == "extra" else "dependency_groups"
    return DependencyError("DEPENDENCY_SELECTION_MISSING", kind=kind, name=name, root=str(root), setting=setting,
                           available=", ".join(sorted(available)) or "none")


def declared(project: Project, settings: Any) -> tuple[list[str], list[str]]:
    """(requirements, notes) from pyproject.toml for the configured extras and groups."""
    data = project.pyproject
    table = data.get("project") or {}
    tool_uv = (data.get("tool") or {}).get("uv") or {}
    own = canonical(table.get("name", "")) if table.get("name") else ""
    optional = {canonical(k): _strings(v, f"[project.optional-dependencies].{k}", project)
                for k, v in (table.get("optional-dependencies") or {}).items()}
    notes: list[str] = []
    if "dependencies" in (table.get("dynamic") or []):
        notes.append("[project].dependencies is dynamic: uvkernel installs only what pyproject.toml lists")
    reqs: list[str] = [r for r in _strings(table.get("dependencies"), "[project].dependencies", project)
                       if isinstance(r, str)]
    for extra in settings.extras:
        if canonical(extra) not in optional:
            raise _missing("extra", extra, list(table.get("optional-dependencies") or {}), project.root)
        reqs.extend(optional[canonical(extra)])
    groups = {canonical(k): _strings(v, f"[dependency-groups].{k}", project)
              for k, v in (data.get("dependency-groups") or {}).items()}
    legacy_dev = _strings(tool_uv.get("dev-dependencies"), "[tool.uv].dev-dependencies", project)
    if legacy_dev:
        groups["dev"] = list(groups.get("dev", [])) + list(legacy_dev)
    defaults = tool_uv.get("default-groups", ["dev"])
    wanted = list(groups) if defaults == "all" else [canonical(g) for g in defaults if canonical(g) in groups]
    for name in settings.dependency_groups:
        if canonical(name) not in groups:
            raise _missing("dependency group", name, list(data.get("dependency-groups") or {}), project.root)
        if canonical(name) not in wanted:
            wanted.append(canonical(name))
    seen: set[str] = set()
    for name in wanted:
        reqs.extend(_group(groups, name, seen))
    return _self_expand(reqs, own, optional, set()), notes


async def locked_pins(project: Project, uv: str, timeout: float) -> list[str]:
    """Every version uv.lock pins (all groups and extras; markers kept), read with ``uv export --frozen``."""
    argv = [uv, "export", "--frozen", "--format", "requirements.txt", "--no-hashes", "--no-header",
            "--no-annotate", "--no-emit-project", "--no-emit-workspace", "--all-groups", "--all-extras",
            "--project", str(project.root)]
    done = await run_uv(argv, step=f"read {project.root}/uv.lock (uv export --frozen)", timeout=timeout,
                        cwd=project.root, fix=f"the lock file could not be read: regenerate it with `uv lock` in "
                                              f"{project.root} (uvkernel reads uv.lock but never writes it)")
    pins = []
    for line in done.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):  # comments, options, editable workspace members
            continue
        pins.append(line)
    return pins


async def requirements(project: Project, settings: Any, uv: str, log: Log = lambda _m: None) -> ProjectRequirements:
    reqs, notes = declared(project, settings)
    for note in notes:
        log(note)
    result = ProjectRequirements(requirements=reqs, sources=["pyproject.toml"] + notes)
    if project.has_lock:
        result.locked = await locked_pins(project, uv, timeout=getattr(settings, "uv_timeout", 900))
        result.sources.append(f"uv.lock ({len(result.locked)} locked versions, used as constraints)")
    return result


def is_package(project: Project) -> bool:
    """uv's rule: a project is installed itself when it has a build system, unless [tool.uv] package says."""
    tool_uv = (project.pyproject.get("tool") or {}).get("uv") or {}
    if isinstance(tool_uv.get("package"), bool):
        return tool_uv["package"]
    return "build-system" in project.pyproject and "project" in project.pyproject
