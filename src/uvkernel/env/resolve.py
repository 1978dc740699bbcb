"""Resolving requirements against the host's packages (torch and the rest), which the host keeps providing.

Why a mechanism at all: uv never sees inherited packages, so every plain ``uv pip install`` or ``uv sync``
into a system-site-packages venv installs torch and its CUDA wheels again, and they shadow the host's
(an env's copy comes first on sys.path).  ``uv sync`` is not used: it recreates the venv without system site-packages when the
interpreter does not match, removes what the lock does not list, and ``--no-install-package`` skips torch
but not its CUDA closure.

The mechanism, in three steps, none of which edits pyproject.toml or uv.lock:

1. **Direct check** (:func:`plan`): each requirement naming a host-provided distribution is checked against
   the host's version with ``packaging``.  Satisfied: the host keeps providing it.  Not satisfied:
   DEPENDENCY_CONFLICT naming both versions and the options, before anything is installed, unless the name
   is in ``allow_shadowing`` (then the env gets its own copy and the report says so).
2. **Resolve against the host** (:func:`resolve`): ``uv pip compile`` for the env's interpreter, with every
   host distribution offered as a placeholder wheel pinned to the host's exact version
   (:func:`protection.write_placeholders`) and, with a uv.lock, the locked versions of everything else as
   constraints.  uv picks versions of the project's packages that work with the host's (e.g. a torchvision
   built for the host's torch) and never needs torch's own metadata, so the CUDA closure never enters the
   resolution.  When no such versions exist, the failure is diagnosed (lock vs host vs plainly unresolvable)
   and reported with uv's explanation; nothing is installed.
3. **Install** (:func:`install.install`): the resolved versions of what the host does not provide, with ``--no-deps``
   and an ``--excludes`` file listing every host name, so nothing of the host's stack is even downloaded.

The kernel's own installers get the same protection (launch.kernel_environment): ``UV_EXCLUDE`` for
``!uv pip install``, ``PIP_CONSTRAINT`` with the host's exact versions for ``%pip``/``!pip``.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from .. import process
from ..errors import DependencyError
from ..shared import canonical
from ..uvbin import run_uv
from .protection import HostDist, allowed, provided, resolution_files
from .requirements import exact_versions, line_name, marker_environment, normal_version, parse_requirement, satisfied, tail



@dataclass
class InstallPlan:
    requirements: list[str] = field(default_factory=list)  # handed to the resolver
    from_host: dict[str, str] = field(default_factory=dict)  # name -> host version, left to the host
    shadowed_on_purpose: dict[str, str] = field(default_factory=dict)  # name -> host version the env replaces
    installed: list[str] = field(default_factory=list)  # name==version this run installed into the env
    # host_version_conflicts = "warn": requirements the host's version does not meet, the host's copy used
    unmet_pins: list[dict[str, str]] = field(default_factory=list)  # {requirement, name, host_version}

    def to_json(self) -> dict[str, Any]:
        return {"requirements": self.requirements, "from_host": self.from_host,
                "shadowed_on_purpose": self.shadowed_on_purpose, "installed": self.installed,
                "unmet_pins": self.unmet_pins}


def allow_option(name: str) -> str:
    return "'[\"" + name + "\"]'"


def plan(
    requirements: Iterable[str],
    host: dict[str, HostDist],
    python_version: tuple[int, ...],
    allow_shadowing: Iterable[str] = (),
    *,
    root: str = "",
    extras: Iterable[str] = (),
    on_conflict: str = "fail",
) -> InstallPlan:
    """Decide, per requirement, host or resolver; raise on conflicts with the host's protected packages, every
    one of them in one refusal (nothing installed yet).

    A host package that is not protected is only a preference: a requirement it does not meet goes to the resolver,
    which gives the env its own copy.  ``on_conflict="warn"`` (host_version_conflicts): a conflict keeps the host's
    copy and is recorded in ``unmet_pins`` instead; the bare name goes to the resolver, so the rest resolves
    against the host."""
    patterns = list(allow_shadowing)
    marker_env = marker_environment(python_version)
    result = InstallPlan()
    conflicts: list[tuple[Requirement, HostDist]] = []
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise DependencyError("REQUIREMENT_INVALID", root=root or ".", requirement=repr(text),
                                  detail=str(exc)) from None
        if req.marker is not None and not any(
            req.marker.evaluate({**marker_env, "extra": extra}) for extra in ("", *extras)
        ):
            continue
        dist = host.get(canonical(req.name))
        if dist is None:
            result.requirements.append(text)
            continue
        wants_own = bool(req.url) or not satisfied(req.specifier, dist.version)
        if not wants_own:
            result.from_host[dist.name] = dist.version
            result.requirements.append(text)  # resolved to the host's placeholder: its users see the host version
        elif allowed(dist.name, patterns):
            result.shadowed_on_purpose[dist.name] = dist.version
            result.requirements.append(text)
        elif not dist.protected:
            result.requirements.append(text)  # the env gets its own copy, as uv sync would give it
        elif on_conflict == "warn":
            result.from_host[dist.name] = dist.version
            result.unmet_pins.append({"requirement": str(req), "name": dist.name, "host_version": dist.version})
            result.requirements.append(req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else ""))
        else:
            conflicts.append((req, dist))
    if conflicts:
        raise conflict_error(conflicts, root)
    return result


def conflict_error(conflicts: list[tuple[Requirement, HostDist]], root: str) -> DependencyError:
    """DEPENDENCY_CONFLICT naming every requirement the host's protected packages do not meet."""
    facts: list[tuple[str, str]] = []
    for req, dist in conflicts:
        needed = str(req.url) if req.url else (str(req.specifier) or "any version")
        facts += [("the project requires", f"{req.name} {needed}"),
                  ("the host provides", f"{dist.name} {dist.version} (at {dist.location})")]
    facts.append(("installed", "nothing"))
    first_req, first = conflicts[0]
    return DependencyError(
        "DEPENDENCY_CONFLICT", requirement=" and ".join(str(r) for r, _ in conflicts),
        provides=" and ".join(f"{d.name} {d.version}" for _, d in conflicts), name=first.name,
        host_version=first.version, root=root or ".", allow=allow_option(first.name), facts=facts)


# what uv says when an answer needs something its cache does not hold (--offline)
OFFLINE_MISS = ("not found in the cache", "network was disabled", "network connectivity is disabled")


def offline_miss(text: str) -> bool:
    """uv's output says it was offline and lacked something (an index page, a wheel, a git source's clone)."""
    lowered = " ".join(text.split()).lower()  # uv wraps its causes to the terminal's width
    return any(phrase in lowered for phrase in OFFLINE_MISS)


UNREACHABLE = ("Failed to fetch", "Git operation failed", "failed to clone", "Failed to clone", "failed to fetch")


def build_failure(text: str) -> DependencyError | None:
    """BUILD_FAILED when uv's output says a source build failed (a setup.py error, a missing compiler): that is
    what the user must read, not a version conflict."""
    found = re.search(r"Failed to (?:download and )?build `([^`]+)`", text)
    if found is None or any(s in text for s in UNREACHABLE):
        return None  # the source itself could not be fetched: not a build that failed
    package = found.group(1)
    return DependencyError("BUILD_FAILED", package=package, detail=tail(text),
                           facts=[("package", package), ("installed", "nothing")])


def _parse_compiled(text: str) -> list[tuple[Requirement, str]]:
    """``uv pip compile --annotation-style line`` output -> (pinned requirement, via)."""
    out = []
    for line in text.splitlines():
        body, _, via = line.partition("  #")
        body = body.strip()
        if not body or body.startswith(("#", "-")):
            continue
        try:
            out.append((Requirement(body), via.strip().removeprefix("via").strip()))
        except InvalidRequirement:
            continue
    return out


def _mentioned(host: dict[str, HostDist], text: str) -> list[HostDist]:
    found = []
    lowered = text.lower()
    for dist in host.values():
        for spelling in {dist.name.lower(), canonical(dist.name)}:
            if re.search(r"(?<![\w.-])" + re.escape(spelling) + r"(?![\w-])", lowered):
                found.append(dist)
                break
    return sorted(found, key=lambda d: canonical(d.name))


class _Compile:
    """``uv pip compile`` runs for one resolution and its diagnosis."""

    def __init__(self, uv: str, env_python: str, tmp: Path, cwd: Path | None, timeout: float):
        self.uv, self.env_python, self.tmp, self.cwd, self.timeout = uv, env_python, tmp, cwd, timeout
        self.count = 0

    def _file(self, stem: str, lines: Iterable[str]) -> str:
        self.count += 1
        path = self.tmp / f"{self.count}-{stem}.txt"
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    async def __call__(self, requirements: list[str], *, host: dict[str, HostDist] | None = None,
                       keep: dict[str, HostDist] | None = None, locked: Sequence[str] = (),
                       offline: bool = False) -> tuple[process.Completed, str]:
        """(uv's run, the pinned output); without ``host`` the resolution ignores the host altogether."""
        argv = [self.uv, "pip", "compile", "--python", self.env_python, "--no-header", "--annotation-style", "line",
                self._file("requirements", requirements), *(["--offline"] if offline else [])]
        if locked:
            argv += ["--constraints", self._file("locked-versions", locked)]
        extra_env = None
        output = None
        if host is not None:
            self.count += 1
            folder = self.tmp / f"{self.count}-host"
            folder.mkdir()
            # a few hundred small files: off the event loop (the Jupyter server keeps answering)
            args, extra_env, output = await asyncio.to_thread(resolution_files, host, keep or {}, folder)
            argv += args
        done = await run_uv(argv, step="resolved the project's dependencies", timeout=self.timeout, cwd=self.cwd,
                            check=False, extra_env=extra_env)
        return done, (output.read_text() if output is not None and done.returncode == 0 else done.stdout)


async def resolve(
    requirements: list[str],
    *,
    uv: str,
    env_python: str,
    host: dict[str, HostDist],
    python_version: tuple[int, ...],
    allow_shadowing: Iterable[str] = (),
    locked: Sequence[str] = (),
    root: str = "",
    cwd: Path | None = None,
    timeout: float = 900,
    diagnose: bool = True,
    cache_first: bool = False,
) -> list[tuple[Requirement, str]]:
    """Pinned versions for ``requirements`` that work with the host's packages (step 2 of the module doc): the
    protected ones at the host's versions, the others preferred where they fit.  ``diagnose=False``: a failure
    is DEPENDENCIES_UNRESOLVABLE with uv's explanation, without the resolutions that say whose fault it is.

    ``cache_first``: uv answers from its cache alone (``--offline``) and goes to the index only when its cache
    lacks something the answer needs.  Where the index's files come without caching headers, uv asks again about
    every release it considers: ruling out botocore's two thousand releases took it 24 s online here and 0.13 s
    from its cache.  Only for a resolution where every name with a placeholder is pinned to it: uv says nothing
    of an index page missing from its cache when a placeholder offers the name, so a miss there would pass for
    "no release fits"."""
    keep = provided(host, allow_shadowing)
    locked_rest = [line for line in locked if canonical(line_name(line)) not in keep]
    with tempfile.TemporaryDirectory(prefix="uvkernel-resolve-") as tmp_name:
        tmp = Path(tmp_name)
        compile_ = _Compile(uv, env_python, tmp, cwd, timeout)
        done, output = await compile_(requirements, host=host, keep=keep, locked=locked_rest, offline=cache_first)
        if cache_first and done.returncode != 0 and offline_miss(done.output):
            done, output = await compile_(requirements, host=host, keep=keep, locked=locked_rest)
        if done.returncode == 0:
            return _parse_compiled(output)
        explanation = tail(done.output)
        built = build_failure(done.output)
        if built is not None:
            raise built
        if not diagnose:
            raise DependencyError("DEPENDENCIES_UNRESOLVABLE", root=root or ".", detail=explanation)
        marker_env = marker_environment(python_version)
        # Diagnose: is it the lock, the host, or are the requirements unresolvable anyway?
        if locked_rest:
            without_lock, fitting = await compile_(requirements, host=host, keep=keep)
            if without_lock.returncode == 0:
                fits = exact_versions(r for r, _ in _parse_compiled(fitting))
                facts = []
                for line in locked_rest:
                    req = parse_requirement(line)
                    if req is None or (req.marker is not None and not req.marker.evaluate(marker_env)):
                        continue
                    have = exact_versions([req]).get(canonical(req.name))
                    if canonical(req.name) in fits and have != fits[canonical(req.name)]:
                        facts.append((f"uv.lock pins {req.name}", f"{have}; with the host's packages it would be "
                                                                 f"{fits[canonical(req.name)]}"))
                raise DependencyError("LOCK_CONFLICTS_WITH_HOST", root=root or ".",
                                      constraints=_constraint_list(keep, explanation),
                                      facts=facts[:10] + [("installed", "nothing")], detail=explanation)
        free, free_output = await compile_(requirements)
        if free.returncode != 0:
            raise DependencyError("DEPENDENCIES_UNRESOLVABLE", root=root or ".", detail=explanation)
        raise transitive_conflict(keep, explanation, free_output, root)


def transitive_conflict(keep: dict[str, HostDist], explanation: str, free_output: str, root: str) -> DependencyError:
    """DEPENDENCY_CONFLICT_TRANSITIVE: which host packages are in the way, and what uv picks without the host
    (``free_output``: the same resolution without the host's placeholders)."""
    wanted = {canonical(r.name): (r, via) for r, via in _parse_compiled(free_output)}
    differ = [d for k, d in sorted(keep.items()) if k in wanted
              and exact_versions([wanted[k][0]]).get(k) != normal_version(d.version)]
    mentioned = _mentioned(keep, explanation)
    culprits = [d for d in mentioned if d in differ] or mentioned or differ
    facts = []
    for dist in culprits[:8]:
        facts.append((f"the host provides {dist.name}", dist.version))
        if canonical(dist.name) in wanted:
            req, via = wanted[canonical(dist.name)]
            facts.append((f"without the host, uv picks {dist.name}",
                          exact_versions([req]).get(canonical(dist.name), str(req)) + (f" (via {via})" if via else "")))
    facts.append(("installed", "nothing"))
    names = ", ".join(d.name for d in culprits[:8]) or "host packages"
    first = culprits[0].name if culprits else "torch"
    return DependencyError("DEPENDENCY_CONFLICT_TRANSITIVE", root=root or ".", names=names,
                           allow=allow_option(first), facts=facts, detail=explanation)


def _constraint_list(keep: dict[str, HostDist], explanation: str) -> str:
    """``"torch==2.13.0"``, ... for [tool.uv] constraint-dependencies (public versions: no +local part)."""
    mentioned = _mentioned(keep, explanation) or [d for k, d in keep.items() if k == "torch"]
    out = []
    for dist in mentioned[:4]:
        try:
            out.append(f'"{dist.name}=={Version(dist.version).public}"')
        except InvalidVersion:
            continue
    return ", ".join(out)


def with_waived_pins(exc: DependencyError, the_plan: InstallPlan) -> DependencyError:
    """Under host_version_conflicts = warn, a package made for the pinned version (a torchvision for torch
    2.9.1) still cannot resolve against the host's: say that the waiver does not reach it."""
    pins = ", ".join(p["requirement"] for p in the_plan.unmet_pins)
    hosts = ", ".join(f"{p['name']} {p['host_version']}" for p in the_plan.unmet_pins)
    note = (f"{pins} (unmet by the host) is waived by host_version_conflicts = warn, but packages made for "
            f"that version still require it and cannot use the host's {hosts}: require releases of them made for "
            f"the host's version (or drop their pins and let uvkernel choose)")
    facts = [f for f in exc.facts if f[0] != "installed"] + [("host_version_conflicts = warn", note),
                                                              ("installed", "nothing")]
    return DependencyError(exc.code, facts=facts, detail=exc.detail, **exc.fields)
