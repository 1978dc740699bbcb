"""Installing requirements into the env without shadowing what the host provides.

Mechanism (why: uv cannot see inherited packages, FIELD-NOTES section 1):
  1. every requirement that names a host-provided distribution is checked against the host's version with
     ``packaging``: satisfied means the host keeps providing it; not satisfied is a DEPENDENCY_CONFLICT
     (nothing installed) unless the user put the name in ``allow_shadowing``;
  2. uv installs the rest with ``--excludes`` listing every host-provided name, so it neither installs nor
     traverses torch and its CUDA closure (nothing of it is even downloaded);
  3. edges from newly installed packages to host-provided ones are checked after the install (uv skipped
     them); a violated one removes exactly what this run added and reports the conflict.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from . import process
from .errors import DependencyError, UvError
from .host_packages import HostDist, canonical
from .uvbin import uv_environment

Log = Callable[[str], None]

# Runs in the env (stdlib only): the env's own distributions and what they require.
_ENV_DISTS = r"""
import json, sys
from importlib import metadata
out = {}
for d in metadata.distributions(path=[sys.argv[1]]):
    name = d.metadata["Name"]
    if name:
        out[name] = {"version": d.version, "requires": d.requires or []}
print(json.dumps(out))
"""


@dataclass
class InstallPlan:
    to_install: list[str] = field(default_factory=list)  # requirement strings given to uv
    from_host: dict[str, str] = field(default_factory=dict)  # name -> host version, left to the host
    shadowed_on_purpose: dict[str, str] = field(default_factory=dict)  # name -> host version the env replaces


def marker_environment(python_version: tuple[int, ...]) -> dict[str, str]:
    env = default_environment()
    env["python_version"] = f"{python_version[0]}.{python_version[1]}"
    env["python_full_version"] = ".".join(map(str, python_version[:3]))
    return env


def _satisfied(spec: SpecifierSet, version: str) -> bool:
    if not str(spec):
        return True
    try:
        return spec.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def plan(
    requirements: Iterable[str],
    host: dict[str, HostDist],
    python_version: tuple[int, ...],
    allow_shadowing: Iterable[str] = (),
    *,
    root: str = "",
    extras: Iterable[str] = (),
) -> InstallPlan:
    """Decide, per requirement, host or env; raise on a conflict with the host."""
    allowed = {canonical(n) for n in allow_shadowing}
    marker_env = marker_environment(python_version)
    result = InstallPlan()
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise DependencyError("DEPENDENCIES_UNRESOLVABLE", root=root or ".",
                                  detail=f"{text!r}: {exc}") from None
        if req.marker is not None and not any(
            req.marker.evaluate({**marker_env, "extra": extra}) for extra in ("", *extras)
        ):
            continue
        key = canonical(req.name)
        provided = host.get(key)
        if provided is None or req.url:
            result.to_install.append(text)
        elif _satisfied(req.specifier, provided.version):
            result.from_host[provided.name] = provided.version
        elif key in allowed or "*" in allowed:
            result.shadowed_on_purpose[provided.name] = provided.version
            result.to_install.append(text)
        else:
            raise DependencyError("DEPENDENCY_CONFLICT", requirement=str(req), name=provided.name,
                                  host_version=provided.version, root=root or ".",
                                  facts=[("required", str(req)), ("host provides", f"{provided.name} "
                                         f"{provided.version} at {provided.location}")])
    return result


def exclusions(host: dict[str, HostDist], shadowed: Iterable[str]) -> list[str]:
    keep_out = {canonical(n) for n in shadowed}
    return sorted(d.name for key, d in host.items() if key not in keep_out)


async def env_distributions(env_python: str, site_packages: str) -> dict[str, dict]:
    done = await process.run([env_python, "-I", "-c", _ENV_DISTS, site_packages], timeout=120)
    if done.returncode != 0:
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1] or "{}")


def broken_host_edges(env_dists: dict[str, dict], host: dict[str, HostDist], python_version: tuple[int, ...],
                      only: Iterable[str]) -> list[tuple[str, str, str]]:
    """(env package, requirement, host version) for requirements on host packages the host does not meet."""
    marker_env = marker_environment(python_version)
    names = {canonical(n) for n in only}
    broken = []
    for name, info in env_dists.items():
        if canonical(name) not in names:
            continue
        for text in info.get("requires") or []:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate({**marker_env, "extra": ""}):
                continue
            provided = host.get(canonical(req.name))
            if provided is not None and canonical(req.name) not in {canonical(n) for n in env_dists}:
                if not _satisfied(req.specifier, provided.version):
                    broken.append((name, str(req), provided.version))
    return broken


async def install(
    requirements: list[str],
    *,
    uv: str,
    env_python: str,
    env_site_packages: str,
    host: dict[str, HostDist],
    python_version: tuple[int, ...],
    allow_shadowing: Iterable[str] = (),
    root: str = "",
    timeout: float = 900,
    log: Log = lambda _m: None,
    what: str = "installed the project's dependencies",
) -> InstallPlan:
    """Plan, install with host packages excluded, verify the edges uv could not see."""
    the_plan = plan(requirements, host, python_version, allow_shadowing, root=root)
    if not the_plan.to_install:
        return the_plan
    before = await env_distributions(env_python, env_site_packages)
    with tempfile.TemporaryDirectory(prefix="uvkernel-") as tmp:
        excludes = Path(tmp) / "host-provided.txt"
        excludes.write_text("\n".join(exclusions(host, the_plan.shadowed_on_purpose)) + "\n")
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text("\n".join(the_plan.to_install) + "\n")
        argv = [uv, "pip", "install", "--python", env_python, "--compile-bytecode",
                "--excludes", str(excludes), "-r", str(reqs)]
        log("uv pip install " + " ".join(the_plan.to_install))
        done = await process.run(argv, env=uv_environment(), timeout=timeout)
    if done.timed_out:
        raise UvError("UV_TIMEOUT", step=what, timeout=int(timeout))
    if done.returncode != 0:
        raise UvError("UV_FAILED", step=f"{what} ({', '.join(the_plan.to_install)})", returncode=done.returncode,
                      detail=done.output[-4000:],
                      fix=f"read uv's message above; fix the requirement in {root or 'the project'} and start again")
    after = await env_distributions(env_python, env_site_packages)
    added = [n for n in after if n not in before]
    broken = broken_host_edges(after, host, python_version, added)
    if broken:
        await process.run([uv, "pip", "uninstall", "--python", env_python, *added], env=uv_environment(),
                          timeout=timeout)
        pkg, req, host_version = broken[0]
        name = Requirement(req).name
        raise DependencyError("DEPENDENCY_CONFLICT", requirement=f"{req} (required by {pkg})", name=name,
                              host_version=host_version, root=root or ".",
                              facts=[(p, f"requires {r}, host has {v}") for p, r, v in broken])
    return the_plan
