"""Requirement lines: parsing them, their names and exact versions, and whether a version meets them.

Every step of stage 2 reads requirement lines (uv's compile output, uv.lock exports, the project's
declarations, an installed distribution's Requires-Dist); these helpers read them one way.
"""

from __future__ import annotations

import re
from typing import Iterable

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from ..shared import canonical


def marker_environment(python_version: tuple[int, ...]) -> dict[str, str]:
    env = {k: str(v) for k, v in default_environment().items()}  # every value is a string
    env["python_version"] = f"{python_version[0]}.{python_version[1]}"
    env["python_full_version"] = ".".join(map(str, python_version[:3]))
    return env


def satisfied(spec: SpecifierSet, version: str) -> bool:
    if not str(spec):
        return True
    try:
        return spec.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def tail(text: str, lines: int = 30) -> str:
    """uv's explanation ends with the decisive steps: keep whole lines from the end."""
    kept = text.strip().splitlines()
    if len(kept) <= lines:
        return "\n".join(kept)
    return "(uv's explanation, last lines)\n" + "\n".join(kept[-lines:])


def parse_requirement(line: str) -> Requirement | None:
    try:
        return Requirement(line)
    except InvalidRequirement:
        return None


def normal_version(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def exact_versions(reqs: Iterable[Requirement | None]) -> dict[str, str]:
    """canonical name -> version for ``name==version`` requirements (None, a line that did not parse, names none)."""
    out = {}
    for req in reqs:
        if req is None:
            continue
        for spec in req.specifier:
            if spec.operator in ("==", "===") and "*" not in spec.version:
                out[canonical(req.name)] = normal_version(spec.version)
    return out


def line_name(line: str) -> str:
    req = parse_requirement(line)
    return req.name if req is not None else re.split(r"[\s=<>!~;@\[]", line.strip(), maxsplit=1)[0]


_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_name(text: str) -> str:
    """The canonical name a requirement string starts with ('' when it does not look like one)."""
    found = _NAME.match(text)
    return canonical(found.group(1)) if found else ""
