"""Installing requirements into the env while the host keeps providing its packages (torch and the rest).

Why a mechanism at all: uv never sees inherited packages, so every plain ``uv pip install`` or ``uv sync``
into a system-site-packages venv installs torch and its CUDA wheels again, and they shadow the host's
(FIELD-NOTES section 1).  ``uv sync`` is not used: it recreates the venv without system site-packages when the
interpreter does not match, removes what the lock does not list, and ``--no-install-package`` skips torch
but not its CUDA closure.

The mechanism, in three steps, none of which edits pyproject.toml or uv.lock:

1. **Direct check** (:func:`plan`): each requirement naming a host-provided distribution is checked against
   the host's version with ``packaging``.  Satisfied: the host keeps providing it.  Not satisfied:
   DEPENDENCY_CONFLICT naming both versions and the options, before anything is installed, unless the name
   is in ``allow_shadowing`` (then the env gets its own copy and the report says so).
2. **Resolve against the host** (:func:`resolve`): ``uv pip compile`` for the env's interpreter, with every
   host distribution offered as a placeholder wheel pinned to the host's exact version
   (:func:`host_packages.write_placeholders`) and, with a uv.lock, the locked versions of everything else as
   constraints.  uv picks versions of the project's packages that work with the host's (e.g. a torchvision
   built for the host's torch) and never needs torch's own metadata, so the CUDA closure never enters the
   resolution.  When no such versions exist, the failure is diagnosed (lock vs host vs plainly unresolvable)
   and reported with uv's explanation; nothing is installed.
3. **Install** (:func:`install`): the resolved versions of what the host does not provide, with ``--no-deps``
   and an ``--excludes`` file listing every host name, so nothing of the host's stack is even downloaded.

The kernel's own installers get the same protection (launch.kernel_environment): ``UV_EXCLUDE`` for
``!uv pip install``, ``PIP_CONSTRAINT`` with the host's exact versions for ``%pip``/``!pip``.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from . import process
from .errors import DependencyError
from .host_packages import HostDist, allowed, canonical, find_links_env, provided, write_excludes, write_placeholders
from .uvbin import run_uv

Log = Callable[[str], None]


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


def marker_environment(python_version: tuple[int, ...]) -> dict[str, str]:
    env = default_environment()
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


def _allow_option(name: str) -> str:
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
    """Decide, per requirement, host or resolver; raise on a conflict with the host (nothing installed yet).

    ``on_conflict="warn"`` (host_version_conflicts): a conflict keeps the host's copy and is recorded in
    ``unmet_pins`` instead; the bare name goes to the resolver, so the rest resolves against the host."""
    patterns = list(allow_shadowing)
    marker_env = marker_environment(python_version)
    result = InstallPlan()
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
        elif on_conflict == "warn":
            result.from_host[dist.name] = dist.version
            result.unmet_pins.append({"requirement": str(req), "name": dist.name, "host_version": dist.version})
            result.requirements.append(req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else ""))
        else:
            needed = str(req.url) if req.url else (str(req.specifier) or "any version")
            raise DependencyError(
                "DEPENDENCY_CONFLICT", requirement=str(req), name=dist.name, host_version=dist.version,
                root=root or ".", allow=_allow_option(dist.name),
                facts=[("the project requires", f"{req.name} {needed}"),
                       ("the host provides", f"{dist.name} {dist.version} (at {dist.location})"),
                       ("installed", "nothing")])
    return result


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

    async def __call__(self, requirements: list[str], *, pins: list[str] = (), locked: list[str] = (),
                       placeholders: Path | None = None, excludes: list[str] = ()) -> process.Completed:
        argv = [self.uv, "pip", "compile", "--python", self.env_python, "--no-header", "--annotation-style", "line",
                self._file("requirements", requirements)]
        if pins:
            argv += ["--constraints", self._file("host-versions", pins)]
        if locked:
            argv += ["--constraints", self._file("locked-versions", locked)]
        if excludes:
            argv += ["--excludes", self._file("excludes", excludes)]
        return await run_uv(argv, step="resolved the project's dependencies", timeout=self.timeout, cwd=self.cwd,
                            check=False, extra_env=find_links_env(placeholders) if placeholders else None)


async def resolve(
    requirements: list[str],
    *,
    uv: str,
    env_python: str,
    host: dict[str, HostDist],
    python_version: tuple[int, ...],
    allow_shadowing: Iterable[str] = (),
    locked: list[str] = (),
    root: str = "",
    cwd: Path | None = None,
    timeout: float = 900,
) -> list[tuple[Requirement, str]]:
    """Pinned versions for ``requirements`` that work with the host's packages (step 2 of the module doc)."""
    keep = provided(host, allow_shadowing)
    locked_rest = [line for line in locked if canonical(_name(line)) not in keep]
    with tempfile.TemporaryDirectory(prefix="uvkernel-resolve-") as tmp_name:
        tmp = Path(tmp_name)
        compile_ = _Compile(uv, env_python, tmp, cwd, timeout)
        placeholders = tmp / "host"
        # a few hundred small files: off the event loop (the Jupyter server keeps answering)
        pins, unversioned = await asyncio.to_thread(write_placeholders, keep, placeholders)
        done = await compile_(requirements, pins=pins, locked=locked_rest, placeholders=placeholders,
                              excludes=unversioned)
        if done.returncode == 0:
            return _parse_compiled(done.stdout)
        explanation = _tail(done.output)
        marker_env = marker_environment(python_version)
        # Diagnose: is it the lock, the host, or are the requirements unresolvable anyway?
        if locked_rest:
            without_lock = await compile_(requirements, pins=pins, placeholders=placeholders, excludes=unversioned)
            if without_lock.returncode == 0:
                fits = _versions(r for r, _ in _parse_compiled(without_lock.stdout))
                facts = []
                for line in locked_rest:
                    req = _requirement(line)
                    if req is None or (req.marker is not None and not req.marker.evaluate(marker_env)):
                        continue
                    have = _versions([req]).get(canonical(req.name))
                    if canonical(req.name) in fits and have != fits[canonical(req.name)]:
                        facts.append((f"uv.lock pins {req.name}", f"{have}; with the host's packages it would be "
                                                                 f"{fits[canonical(req.name)]}"))
                raise DependencyError("LOCK_CONFLICTS_WITH_HOST", root=root or ".",
                                      constraints=_constraint_list(keep, explanation),
                                      facts=facts[:10] + [("installed", "nothing")], detail=explanation)
        free = await compile_(requirements)
        if free.returncode != 0:
            raise DependencyError("DEPENDENCIES_UNRESOLVABLE", root=root or ".", detail=explanation)
        raise transitive_conflict(keep, explanation, free.stdout, root)


def transitive_conflict(keep: dict[str, HostDist], explanation: str, free_output: str, root: str) -> DependencyError:
    """DEPENDENCY_CONFLICT_TRANSITIVE: which host packages are in the way, and what uv picks without the host
    (``free_output``: the same resolution without the host's placeholders)."""
    wanted = {canonical(r.name): (r, via) for r, via in _parse_compiled(free_output)}
    differ = [d for k, d in sorted(keep.items()) if k in wanted
              and _versions([wanted[k][0]]).get(k) != _normal(d.version)]
    mentioned = _mentioned(keep, explanation)
    culprits = [d for d in mentioned if d in differ] or mentioned or differ
    facts = []
    for dist in culprits[:8]:
        facts.append((f"the host provides {dist.name}", dist.version))
        if canonical(dist.name) in wanted:
            req, via = wanted[canonical(dist.name)]
            facts.append((f"without the host, uv picks {dist.name}",
                          _versions([req]).get(canonical(dist.name), str(req)) + (f" (via {via})" if via else "")))
    facts.append(("installed", "nothing"))
    names = ", ".join(d.name for d in culprits[:8]) or "host packages"
    first = culprits[0].name if culprits else "torch"
    return DependencyError("DEPENDENCY_CONFLICT_TRANSITIVE", root=root or ".", names=names,
                           allow=_allow_option(first), facts=facts, detail=explanation)


def _tail(text: str, lines: int = 30) -> str:
    """uv's explanation ends with the decisive steps: keep whole lines from the end."""
    kept = text.strip().splitlines()
    if len(kept) <= lines:
        return "\n".join(kept)
    return "(uv's explanation, last lines)\n" + "\n".join(kept[-lines:])


def _requirement(line: str) -> Requirement | None:
    try:
        return Requirement(line)
    except InvalidRequirement:
        return None


def _normal(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def _versions(reqs: Iterable[Requirement]) -> dict[str, str]:
    """canonical name -> version for ``name==version`` requirements."""
    out = {}
    for req in reqs:
        for spec in req.specifier:
            if spec.operator in ("==", "===") and "*" not in spec.version:
                out[canonical(req.name)] = _normal(spec.version)
    return out


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


def _name(line: str) -> str:
    req = _requirement(line)
    return req.name if req is not None else re.split(r"[\s=<>!~;@\[]", line.strip(), maxsplit=1)[0]


async def install(
    requirements: list[str],
    *,
    uv: str,
    env_python: str,
    host: dict[str, HostDist],
    python_version: tuple[int, ...],
    env_site_packages: str | Path | None = None,
    allow_shadowing: Iterable[str] = (),
    locked: list[str] = (),
    root: str = "",
    cwd: Path | None = None,
    timeout: float = 900,
    log: Log = lambda _m: None,
    what: str = "installed the project's dependencies",
    on_conflict: str = "fail",
) -> InstallPlan:
    """Plan, resolve against the host, install what the host does not provide (uv never touches the host's)."""
    the_plan = plan(requirements, host, python_version, allow_shadowing, root=root, on_conflict=on_conflict)
    keep = provided(host, allow_shadowing)
    if all(canonical(Requirement(r).name) in keep for r in the_plan.requirements):
        return the_plan  # everything is the host's: no resolver, no network
    try:
        resolved = await resolve(the_plan.requirements, uv=uv, env_python=env_python, host=host,
                                 python_version=python_version, allow_shadowing=allow_shadowing, locked=locked,
                                 root=root, cwd=cwd, timeout=timeout)
    except DependencyError as exc:
        if not the_plan.unmet_pins:
            raise
        raise _with_waived_pins(exc, the_plan) from None
    pinned = []
    for req, _via in resolved:
        key = canonical(req.name)
        if key in keep:
            the_plan.from_host[keep[key].name] = keep[key].version
        else:
            pinned.append(str(req))
    present = {k: d.version for k, d in (await env_distributions(env_site_packages or _site_of(env_python))).items()}
    pinned = [line for line in pinned if not _already(line, present)]
    if not pinned:
        return the_plan
    await install_pinned(pinned, uv=uv, env_python=env_python, host=host, allow_shadowing=allow_shadowing, cwd=cwd,
                         timeout=timeout, log=log, what=f"{what} ({', '.join(pinned)})",
                         fix=f"read uv's message above; fix the requirement in {root or 'the project'} and start again")
    the_plan.installed = pinned
    return the_plan


async def install_pinned(pinned: list[str], *, uv: str, env_python: str, host: dict[str, HostDist],
                         allow_shadowing: Iterable[str] = (), cwd: Path | None = None, timeout: float = 900,
                         log: Log = lambda _m: None, what: str = "installed packages",
                         fix: str = "read uv's message above") -> None:
    """Exactly these versions, without their dependencies, never a host package (``--excludes``)."""
    keep = provided(host, allow_shadowing)
    with tempfile.TemporaryDirectory(prefix="uvkernel-install-") as tmp:
        excludes = write_excludes(Path(tmp), keep)
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text("\n".join(pinned) + "\n")
        log("uv pip install " + " ".join(pinned))
        argv = [uv, "pip", "install", "--python", env_python, "--no-deps", "--excludes", str(excludes),
                "-r", str(reqs)]
        await run_uv(argv, step=what, timeout=timeout, cwd=cwd, fix=fix)


def _with_waived_pins(exc: DependencyError, the_plan: InstallPlan) -> DependencyError:
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


def _already(line: str, present: dict[str, str]) -> bool:
    req = _requirement(line)
    if req is None or req.url:
        return False
    key = canonical(req.name)
    return key in present and _versions([req]).get(key) == _normal(present[key])


def _site_of(env_python: str) -> Path:
    """The env's site-packages, from its python's path (bin/python -> lib/pythonX.Y/site-packages)."""
    env = Path(env_python).parent.parent
    found = sorted(env.glob("lib/python3*/site-packages"))
    return found[0] if found else env / "lib" / "site-packages"


async def install_editable(root: Path, *, uv: str, env_python: str, host: dict[str, HostDist],
                           allow_shadowing: Iterable[str] = (), timeout: float = 900,
                           log: Log = lambda _m: None) -> None:
    """The project itself, editable and without its dependencies (they were resolved against the host)."""
    keep = provided(host, allow_shadowing)
    with tempfile.TemporaryDirectory(prefix="uvkernel-install-") as tmp:
        excludes = write_excludes(Path(tmp), keep)
        log(f"uv pip install --no-deps -e {root}")
        await run_uv([uv, "pip", "install", "--python", env_python, "--no-deps", "--excludes", str(excludes),
                      "-e", str(root)], step=f"installed the project itself ({root}, editable)", timeout=timeout,
                     cwd=root, fix=f"fix the build configuration in {root}/pyproject.toml, or, when the project is "
                                   "not meant to be installed, set package = false under [tool.uv] there")


# --- what the env holds, and what of it hides the host ---------------------------------------------------

@dataclass
class EnvDist:
    name: str
    version: str
    location: str
    requires: list[str]
    editable: bool = False  # installed from a local folder (direct_url.json says so)
    compiled: bool = False  # ships shared objects (RECORD lists a .so): built against something, maybe torch


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
                                       compiled=_lists_shared_objects(os.path.join(entry.path, "RECORD")))
    return out


def _lists_shared_objects(record: str) -> bool:
    try:
        with open(record, encoding="utf-8", errors="replace") as fh:
            return any(".so," in line or ".so." in line.split(",", 1)[0] for line in fh)
    except OSError:
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
                    "on_purpose": allowed(theirs.name, patterns)})
    return out


_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_name(text: str) -> str:
    """The canonical name a requirement string starts with ('' when it does not look like one)."""
    found = _NAME.match(text)
    return canonical(found.group(1)) if found else ""


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
