"""What the project declares, read from its pyproject.toml files and uv.lock (neither is ever written).

Its requirements:

* ``[project].dependencies``, the configured ``extras`` (``[project.optional-dependencies]``) and dependency
  groups (``[dependency-groups]``, PEP 735): the groups uv would install by default (``[tool.uv]
  default-groups``, else ``dev``, which also holds the legacy ``[tool.uv] dev-dependencies``) plus the
  configured ``dependency_groups``.  A requirement on the project itself (``name[extra]``) is expanded.
* With a ``uv.lock``, ``uv export --frozen`` (which reads the lock and never writes it) gives the locked
  version of every package; they become *constraints* of the resolution, so a package the lock lists is
  installed at its locked version, a host-provided one stays the host's, and a requirement added to
  pyproject.toml since the last ``uv lock`` is still installed (resolved freshly).

And what uv reads from ``[tool.uv]`` that uvkernel checks or reports on: ``[tool.uv.sources]``, ``[[tool.uv.index]]``
and the workspace's members, each with the file and line declaring it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from ..errors import DependencyError, ProjectError, notice
from ..project import Project, matches_workspace_glob, member_folders, read_pyproject, workspace_globs
from ..settings import UvKernelSettings
from ..shared import Log, canonical
from ..uvbin import run_uv
from .requirements import requirement_name


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


def declared(project: Project, settings: UvKernelSettings) -> tuple[list[str], list[str]]:
    """(requirements, notes) from pyproject.toml for the configured extras and groups."""
    data = project.pyproject
    table = data.get("project") or {}
    tool_uv = (data.get("tool") or {}).get("uv") or {}
    own = canonical(table.get("name", "")) if table.get("name") else ""
    optional = {canonical(k): _strings(v, f"[project.optional-dependencies].{k}", project)
                for k, v in (table.get("optional-dependencies") or {}).items()}
    notes: list[str] = []
    if "dependencies" in (table.get("dynamic") or []):
        notes.append(notice("DYNAMIC_DEPENDENCIES"))
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
    defaults = [] if getattr(settings, "no_default_groups", False) else tool_uv.get("default-groups", ["dev"])
    wanted = list(groups) if defaults == "all" else [canonical(g) for g in defaults if canonical(g) in groups]
    for name in settings.dependency_groups:
        if canonical(name) not in groups:
            raise _missing("dependency group", name, list(data.get("dependency-groups") or {}), project.root)
        if canonical(name) not in wanted:
            wanted.append(canonical(name))
    left_out = {canonical(g) for g in getattr(settings, "no_groups", []) or []}
    wanted = [g for g in wanted if g not in left_out]
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


async def requirements(project: Project, settings: UvKernelSettings, uv: str, log: Log = lambda _m: None) -> ProjectRequirements:
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


# --- [tool.uv] sources, indexes and workspace members, with where they are declared ------------------------

@dataclass
class Declared:
    """A ``[tool.uv.sources]`` entry or ``[[tool.uv.index]]`` as written, with the file and line declaring it."""
    name: str
    value: dict[str, Any]
    file: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else str(self.file)


def _line_of(text: str, table: str, key: str) -> int:
    """The line declaring ``key`` in ``[table]`` (or ``[table.key]``), 0 when not found; no TOML rewriting."""
    current = ""
    wanted = {key, f'"{key}"', f"'{key}'"}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("["):
            current = line.strip("[] ").replace('"', "").replace("'", "")
            if current == f"{table}.{key}":
                return number
            continue
        name = line.split("=", 1)[0].strip()
        if current == table and name in wanted:
            return number
        if table == "tool.uv.index" and current == "tool.uv.index" and name == "name" and key in line:
            return number
    return 0


def _pyprojects(project: Project) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    if project.root is not None:
        out.append((project.root / "pyproject.toml", project.pyproject))
    if project.workspace_root is not None and project.workspace_root != project.root:
        out.append((project.workspace_root / "pyproject.toml", project.workspace))
    return out


def _declared(project: Project, key: str) -> list[tuple[Path, str, Any]]:
    out = []
    for path, data in _pyprojects(project):
        value = ((data.get("tool") or {}).get("uv") or {}).get(key)
        if value:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                text = ""
            out.append((path, text, value))
    return out


def declared_sources(project: Project) -> list[Declared]:
    out = []
    for path, text, sources in _declared(project, "sources"):
        for name, value in sources.items() if isinstance(sources, dict) else []:
            for entry in value if isinstance(value, list) else [value]:
                if isinstance(entry, dict):
                    out.append(Declared(str(name), entry, path, _line_of(text, "tool.uv.sources", str(name))))
    return out


def declared_indexes(project: Project) -> list[Declared]:
    out = []
    for path, text, indexes in _declared(project, "index"):
        for entry in indexes if isinstance(indexes, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("url"), str):
                name = str(entry.get("name") or entry["url"])
                out.append(Declared(name, entry, path, _line_of(text, "tool.uv.index", name)))
    return out


def workspace_members(project: Project) -> dict[str, Path]:
    """canonical project name -> folder, for every member of the project's workspace.  As uv has it, the root
    project is always a member of its own workspace (``members = ["."]`` says so again), and a lone project is
    the one member of its own."""
    out: dict[str, Path] = {}
    top = project.top
    if top is None:
        return out
    folders = [top]
    if project.workspace_root is not None:
        table = project.tool_uv(top=True).get("workspace") or {}
        table = table if isinstance(table, dict) else {}
        excluded = workspace_globs(table.get("exclude"))
        for pattern in workspace_globs(table.get("members")):
            folders += [f for f in member_folders(top, pattern)
                        if not matches_workspace_glob(f, top, excluded)]
    for folder in folders:
        if (folder / "pyproject.toml").is_file():
            name = (read_pyproject(folder / "pyproject.toml").get("project") or {}).get("name")
            if isinstance(name, str):
                out.setdefault(canonical(name), folder)
    return out


def declared_in(project: Project, name: str) -> list[tuple[str, str]]:
    """Where a requirement on ``name`` is declared: ("dependencies", ""), ("group", G) or ("extra", E)."""
    key = canonical(name)
    out: list[tuple[str, str]] = []
    for _path, data in _pyprojects(project):
        found = data.get("project")
        table: dict[str, Any] = found if isinstance(found, dict) else {}
        places: list[tuple[str, str, Any]] = [("dependencies", "", table.get("dependencies"))]
        optional = table.get("optional-dependencies")
        places += [("extra", k, v) for k, v in optional.items()] if isinstance(optional, dict) else []
        groups = data.get("dependency-groups")
        places += [("group", k, v) for k, v in groups.items()] if isinstance(groups, dict) else []
        for kind, where, value in places:
            if any(isinstance(i, str) and requirement_name(i) == key for i in (value if isinstance(value, list) else [])) \
                    and (kind, where) not in out:
                out.append((kind, where))
    return out


def used_names(project: Project) -> set[str]:
    """Every name a requirement of the project (or its workspace root) uses: dependencies, every extra, every
    group.  A ``[tool.uv.sources]`` entry for any other name is ignored, as uv ignores it."""
    names: set[str] = set()
    for _path, data in _pyprojects(project):
        found = data.get("project")
        table: dict[str, Any] = found if isinstance(found, dict) else {}
        lists: list[Any] = [table.get("dependencies")]
        optional = table.get("optional-dependencies")
        lists += list(optional.values()) if isinstance(optional, dict) else []
        groups = data.get("dependency-groups")
        lists += list(groups.values()) if isinstance(groups, dict) else []
        tool_uv = (data.get("tool") or {}).get("uv") if isinstance(data.get("tool"), dict) else None
        lists.append((tool_uv or {}).get("dev-dependencies") if isinstance(tool_uv, dict) else None)
        for value in lists:
            for item in value if isinstance(value, list) else []:
                if isinstance(item, str) and requirement_name(item):
                    names.add(requirement_name(item))
    return names


def check_sources(project: Project) -> None:
    """What can be told without uv: a path source that does not exist, a workspace source naming no member."""
    members: dict[str, Path] | None = None
    used = used_names(project)
    for source in declared_sources(project):
        if canonical(source.name) not in used:
            continue  # uv ignores a source no requirement uses
        if "path" in source.value:
            target = Path(os.path.expanduser(str(source.value["path"])))
            if not target.is_absolute():
                target = source.file.parent / target
            if not target.exists():
                raise DependencyError("SOURCE_NOT_FOUND", source=f"{source.name} = {{ path = "
                                      f"\"{source.value['path']}\" }} (looked for {os.path.normpath(target)})",
                                      where=source.where)
        if source.value.get("workspace") is True:
            if members is None:
                members = workspace_members(project)
            if canonical(source.name) not in members:
                raise DependencyError("SOURCE_FOR_UNKNOWN_PACKAGE", name=source.name, where=source.where,
                                      root=str(project.workspace_root or project.root),
                                      facts=[("members", ", ".join(sorted(members)) or "none")])
