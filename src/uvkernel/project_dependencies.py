"""The project's own requirements, read from its pyproject.toml (never edited).

``[project].dependencies``, the configured ``extras`` (``[project.optional-dependencies]``) and
dependency ``groups`` (``[dependency-groups]``, PEP 735, plus uv's default ``dev`` group).
"""

from __future__ import annotations

from typing import Any

from .project import Project


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


async def requirements(project: Project, settings: Any, uv: str) -> list[str]:
    data = project.pyproject
    table = data.get("project") or {}
    reqs: list[str] = list(table.get("dependencies") or [])
    optional = table.get("optional-dependencies") or {}
    for extra in settings.extras:
        reqs.extend(optional.get(extra, []))
    groups = data.get("dependency-groups") or {}
    wanted = list(settings.dependency_groups)
    if "dev" in groups and "dev" not in wanted:
        wanted.insert(0, "dev")  # uv sync installs the dev group by default
    seen: set[str] = set()
    for name in wanted:
        reqs.extend(_group(groups, name, seen))
    return reqs
