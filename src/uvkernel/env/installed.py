"""What the env itself holds: its distributions, which of them hide the host's, which the host's versions break.

Read from the env's dist-info folders, without starting an interpreter.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from packaging.requirements import InvalidRequirement, Requirement

from ..preflight.probe import elf_needed
from ..shared import canonical
from .protection import HostDist, allowed
from .requirements import marker_environment, requirement_name, satisfied


@dataclass
class EnvDist:
    name: str
    version: str
    location: str
    requires: list[str]
    editable: bool = False  # installed from a local folder (direct_url.json says so)
    compiled: bool = False  # ships shared objects (RECORD lists a .so): built against something, maybe torch
    dist_info: str = ""  # its dist-info folder


def _read_env_distributions(site_packages: str) -> dict[str, EnvDist]:
    """The env's dist-info folders, reading only METADATA's header lines (importlib.metadata's email parser takes
    ~6 ms a distribution here: a 100-distribution env is read in a few ms instead of ~0.4 s)."""
    out: dict[str, EnvDist] = {}
    try:
        entries = sorted(os.scandir(site_packages), key=lambda e: e.name)
    except OSError:
        return out
    for entry in entries:
        if not entry.name.endswith(".dist-info"):
            continue
        fields = _metadata_headers(os.path.join(entry.path, "METADATA"))
        name = fields.get("name", [""])[0]
        if not name or canonical(name) in out:
            continue
        try:
            with open(os.path.join(entry.path, "direct_url.json"), encoding="utf-8") as fh:
                direct = fh.read()
        except OSError:
            direct = ""
        out[canonical(name)] = EnvDist(name, fields.get("version", [""])[0], site_packages,
                                       fields.get("requires-dist", []),
                                       editable='"editable": true' in direct or '"file://' in direct,
                                       compiled=_lists_shared_objects(os.path.join(entry.path, "RECORD")),
                                       dist_info=entry.path)
    return out


def _lists_shared_objects(record: str) -> bool:
    try:
        with open(record, encoding="utf-8", errors="replace") as fh:
            return any(".so," in line or ".so." in line.split(",", 1)[0] for line in fh)
    except OSError:
        return False


TORCH_LIBRARIES = ("libtorch", "libc10")  # what code built against torch's C++ API links


def links_torch(dist: EnvDist) -> bool:
    """Does one of the distribution's shared objects link libtorch/libc10 (ELF ``DT_NEEDED``)?  Only such code
    can mismatch the host torch's build; the headers alone are read, a few microseconds a file."""
    if not dist.compiled or not dist.dist_info:
        return False
    try:
        with open(os.path.join(dist.dist_info, "RECORD"), encoding="utf-8", errors="replace") as fh:
            paths = [line.rsplit(",", 2)[0] for line in fh]
    except OSError:
        return False
    for path in paths:
        name = os.path.basename(path)
        if not (name.endswith(".so") or ".so." in name) or path.startswith(".."):
            continue
        try:
            if any(n.startswith(TORCH_LIBRARIES) for n in elf_needed(os.path.join(dist.location, path))):
                return True
        except (OSError, ValueError, IndexError, UnicodeDecodeError):
            continue
    return False


def _metadata_headers(path: str) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    break  # the description starts after the first blank line
                if line[0] in " \t" or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), []).append(value.strip())
    except OSError:
        pass
    return fields


async def env_distributions(site_packages: str | Path) -> dict[str, EnvDist]:
    """The env's own distributions, read from its dist-info folders (no interpreter started)."""
    if not Path(site_packages).is_dir():
        return {}
    return await asyncio.to_thread(_read_env_distributions, str(site_packages))


def shadowing(env_dists: dict[str, EnvDist], host: dict[str, HostDist],
              allow_shadowing: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Every env distribution that hides a host one (the env's copy wins on sys.path)."""
    patterns = list(allow_shadowing)
    out = []
    for key, mine in sorted(env_dists.items()):
        theirs = host.get(key)
        if theirs is None:
            continue
        out.append({"name": theirs.name, "env_version": mine.version, "host_version": theirs.version,
                    "env_location": mine.location, "host_location": theirs.location,
                    # a copy of a host package outside the stack is what the project asked for (the host's
                    # version did not fit it), as much on purpose as one allow_shadowing names
                    "on_purpose": allowed(theirs.name, patterns) or not theirs.protected,
                    # an env copy of the stack, whether allowed (allow_shadowing) or to be removed
                    "protected": theirs.protected or allowed(theirs.name, patterns)})
    return out


def broken_requirements(env_dists: dict[str, EnvDist], host: dict[str, HostDist],
                        python_version: tuple[int, ...]) -> list[tuple[str, str, str]]:
    """(env package, requirement, host version) for requirements on host packages the host's version misses."""
    marker_env = marker_environment(python_version)
    broken = []
    for key, mine in sorted(env_dists.items()):
        for text in mine.requires:
            name = requirement_name(text)
            if name in env_dists or (name and name not in host):
                continue  # parsing every requirement of a 100-package env takes ~50 ms; most name no host package
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate({**marker_env, "extra": ""}):
                continue
            dep = canonical(req.name)
            if dep in env_dists or dep not in host:
                continue
            if not satisfied(req.specifier, host[dep].version):
                broken.append((mine.name, str(req), host[dep].version))
    return broken


def host_broken_by_env(env_dists: dict[str, EnvDist], host: dict[str, HostDist], python_version: tuple[int, ...],
                       skip: Iterable[str] = ()) -> list[tuple[HostDist, str, EnvDist]]:
    """(host distribution, its requirement, the env's distribution) for each host distribution still seen through
    the env (the env holds no copy of it) whose requirement the env's copy misses where the host's own copy met it:
    what the env's copies would break in the host.  ``skip``: names not to report (the protected stack, checked
    on its own)."""
    marker_env = {**marker_environment(python_version), "extra": ""}
    left_out = set(skip)
    broken = []
    for key, theirs in sorted(host.items()):
        if key in env_dists or key in left_out:
            continue
        for text in theirs.requires:
            name = requirement_name(text)
            if not name or name not in env_dists:
                continue  # most requirements name no package the env holds: not parsed
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.url or (req.marker is not None and not req.marker.evaluate(marker_env)):
                continue
            mine = env_dists[name]
            hosts_own = host.get(name)
            if satisfied(req.specifier, mine.version):
                continue
            if hosts_own is not None and not satisfied(req.specifier, hosts_own.version):
                continue  # broken in the host already: not the env's doing
            broken.append((theirs, f"{req.name}{req.specifier}", mine))  # the marker, already true here, left out
    return broken


def site_of(env_python: str) -> Path:
    """The env's site-packages, from its python's path (bin/python -> lib/pythonX.Y/site-packages)."""
    env = Path(env_python).parent.parent
    found = sorted(env.glob("lib/python3*/site-packages"))
    return found[0] if found else env / "lib" / "site-packages"
