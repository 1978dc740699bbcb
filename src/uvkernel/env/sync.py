"""Installing a project the way ``uv sync`` would, minus what the host provides.

uv is the authority on what a project is: its pyproject.toml, workspace, ``[tool.uv]`` settings, sources,
indexes, uv.toml and ``UV_*`` variables are read by uv, never rebuilt here.  uvkernel adds the one thing uv
cannot know, since it reads only the env's own site-packages: which distributions the host interpreter already
provides (and which build of torch, for the companions built against it).

**With a uv.lock that matches pyproject.toml** (``uv sync --locked`` accepts it):

1. the host-provided names the lock takes from an index are *pruned*: ``uv export --frozen --prune NAME …``
   lists what ``uv sync`` would install once those packages and everything only they pull in (``nvidia-*``,
   ``triton`` …) are gone.  A name the lock takes from a path, workspace, git or url source is the project's own
   code: it is installed even when the host has a distribution of that name (the report says what it shadows);
2. ``uv sync --locked --inexact`` with ``--no-install-package`` for every other locked name installs the rest:
   uv's own sources, indexes, editables, groups and extras.  The env's interpreter is passed by path and the env
   by ``UV_PROJECT_ENVIRONMENT``, so uv never recreates it (uv#15603);
3. every installed requirement on a host package is checked against the host's version.  A locked version
   that needs another host version (a lock made for torch 2.15 on a 2.13 host) is re-resolved against the host
   (:func:`resolve.resolve`) and replaced; every deviation from the lock goes into the report.

**Without a lock, or with one pyproject.toml has moved past**: ``uv pip compile`` on the project's
pyproject.toml (which applies ``[tool.uv.sources]``, workspace members, overrides, constraints and excludes)
against placeholder wheels of the host's packages; the result is kept in uvkernel's cache (never in the
project), so later cold starts of the same inputs do not resolve again.  uv.lock is never written or created.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Any, Protocol, Sequence

from packaging.markers import InvalidMarker, Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.version import InvalidVersion, Version

from ..errors import DependencyError, ProjectError, UvError, note, notice
from ..files import off_loop, read_input, write_atomic
from ..host import HostPython
from ..project import Project, member_folders
from ..settings import UvKernelSettings
from ..shared import Log, canonical
from ..uvbin import run_uv
from . import companions, declarations, install, installed, protection, requirements, resolve
from .declarations import check_sources, declared_indexes, declared_sources
from .protection import HostDist, provided, write_excludes
from .requirements import tail

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# seconds uv may take to find env copies for host packages the project never names: an optional step, whose
# failure is a note, must not hold a kernel start for uv's whole timeout
HOST_COPY_TIMEOUT = 120
HOST_COPY_PARALLEL = 4  # resolutions at once: a distro host may have dozens of packages an old pin breaks
LOCAL_SOURCES = ("editable", "path", "directory", "virtual", "git", "url")
STALE_LOCK = "needs to be updated"


class EnvPlace(Protocol):
    """Where the env is, all sync needs of it (venv.Env, which comes after this module, is one)."""

    path: Path
    python: Path
    site_packages: Path


@dataclass
class SyncResult:
    how: str = ""  # "uv.lock (uv sync)", "resolved (uv pip compile)", …
    from_host: dict[str, str] = field(default_factory=dict)  # host-provided names the project needs
    skipped: list[str] = field(default_factory=list)  # locked names not installed (host's and their closure)
    own_code_shadows: dict[str, str] = field(default_factory=dict)  # local source name -> host version it hides
    deviations: list[dict[str, str]] = field(default_factory=list)  # {name, locked, installed, why}
    installed: list[str] = field(default_factory=list)
    shadowed_on_purpose: dict[str, str] = field(default_factory=dict)  # allow_shadowing: name -> host version
    unmet_pins: list[dict[str, str]] = field(default_factory=list)  # host_version_conflicts = warn
    companions: list[dict[str, str]] = field(default_factory=list)  # replaced by builds of the host's variant
    notes: list[str] = field(default_factory=list)
    # host packages outside the stack that the project needs at another version: name -> {env, host}
    host_replaced: dict[str, dict[str, str]] = field(default_factory=dict)
    substituted: set[str] = field(default_factory=set)  # locked copies the stack rejects: the host's serve instead

    def to_json(self) -> dict[str, Any]:
        return {"how": self.how, "from_host": self.from_host, "skipped_for_host": self.skipped,
                "own_code_shadows_host": self.own_code_shadows, "lock_deviations": self.deviations,
                "installed": self.installed, "shadowed_on_purpose": self.shadowed_on_purpose,
                "unmet_pins": self.unmet_pins, "companion_builds": self.companions, "host_replaced": self.host_replaced,
                "notes": self.notes + [f"{name} {v['env']} in the env over the host's {v['host']}"
                                       for name, v in sorted(self.host_replaced.items())]}


def selection(project: Project, settings: UvKernelSettings) -> list[str]:
    """``--extra``/``--group`` flags for the configured extras and groups (uv applies its default groups)."""
    args: list[str] = []
    for extra in settings.extras:
        args += ["--extra", extra]
    for group in settings.dependency_groups:
        args += ["--group", group]
    if getattr(settings, "no_default_groups", False):
        args.append("--no-default-groups")
    for group in getattr(settings, "no_groups", []) or []:
        args += ["--no-group", group]
    return args


_LOCK_PACKAGE = re.compile(r'^\[\[package\]\]\nname = "([^"]+)"\n(?:version = "([^"]*)"\n)?source = \{ (\w+) =[^\n]*\n'
                           r'(?:resolution-markers = \[\n((?:[ \t]+"[^\n]*",?\n)*)\])?', re.M)


@dataclass
class Locked:
    kind: str  # the source kind in uv.lock: registry, editable, path, directory, virtual, git, url
    version: str


def _fork_applies(markers: Sequence[str], marker_env: dict[str, str] | None, verdicts: dict[str, bool]) -> bool:
    """Whether one of a locked version's resolution markers holds for the env's Python and platform.  A universal
    lock holds one version per fork (numpy 2.2.6 for Python 3.10, 2.4.6 for 3.11); without markers, or without an
    environment to judge them by, a version applies.  ``verdicts``: each marker judged once per lock (its forks
    repeat the same dozen markers on every forked package)."""
    if not markers or marker_env is None:
        return True
    for text in markers:
        if text not in verdicts:
            try:
                verdicts[text] = Marker(text).evaluate(marker_env)
            except (InvalidMarker, UndefinedEnvironmentName, UndefinedComparison):
                verdicts[text] = True  # a marker this parser cannot judge: do not rule the version out
        if verdicts[text]:
            return True
    return False


def read_lock(path: Path, python_version: tuple[int, ...] | None = None) -> dict[str, Locked]:
    """canonical name -> its source kind and version in uv.lock.

    With ``python_version``, a name locked at several versions (a universal lock's forks) gets the one whose
    resolution markers hold for that Python on this platform, the one ``uv sync`` installs here; without it,
    or when none holds, the first.

    uv writes uv.lock in a fixed layout (each ``[[package]]`` starts with name, version, source and, for a forked
    version, its resolution markers), so they are read with one pattern: a full TOML parse of a 100-dependency
    lock takes a second here.
    """
    try:
        text = read_input(path).decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError("LOCK_INVALID", path=str(path), detail=str(exc)[:500]) from None
    marker_env = {**requirements.marker_environment(python_version), "extra": ""} if python_version else None
    entries: list[tuple[str, Locked, list[str]]] = [
        (canonical(name), Locked(kind, version), re.findall(r'"([^"\n]*)"', markers))
        for name, version, kind, markers in _LOCK_PACKAGE.findall(text)]
    if not entries and "[[package]]" in text:
        try:  # a layout this pattern does not know: the slow, exact way
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProjectError("LOCK_INVALID", path=str(path), detail=str(exc)[:500]) from None
        for table in data.get("package") or []:
            if isinstance(table, dict) and isinstance(table.get("name"), str):
                given = table.get("source")
                source: dict[str, Any] = given if isinstance(given, dict) else {}
                forks = table.get("resolution-markers")
                entries.append((canonical(table["name"]),
                                Locked(next(iter(source), "registry"), str(table.get("version", ""))),
                                [m for m in forks if isinstance(m, str)] if isinstance(forks, list) else []))
    found: dict[str, Locked] = {}
    first: dict[str, Locked] = {}
    verdicts: dict[str, bool] = {}
    for key, entry, markers in entries:
        first.setdefault(key, entry)
        if _fork_applies(markers, marker_env, verdicts):
            found.setdefault(key, entry)
    return {key: found.get(key, entry) for key, entry in first.items()}


def is_local(locked: Locked) -> bool:
    return locked.kind in LOCAL_SOURCES


def _uv_env(env_path: Path) -> dict[str, str]:
    # uv's project commands use this env and keep its system-site-packages (uv recreates a venv it is not
    # pointed at, without the flag, and the host's packages would be gone)
    return {"UV_PROJECT_ENVIRONMENT": str(env_path)}


def _where(project: Project) -> str:
    return str(project.top)


async def _exported_names(project: Project, settings: UvKernelSettings, uv: str, prune: list[str]) -> set[str]:
    argv = [uv, "export", "--frozen", "--format", "pylock.toml", "--project", str(project.root),
            *selection(project, settings)]
    for name in prune:
        argv += ["--prune", name]
    done = await run_uv(argv, step=f"read {project.lock_path} (uv export --frozen)", timeout=settings.uv_timeout,
                        cwd=project.root, fix=f"regenerate the lock with `uv lock` in {_where(project)} "
                                              "(uvkernel reads uv.lock but never writes it)")
    # pylock.toml as uv writes it: each [[packages]] starts with its name (a full TOML parse takes ~0.5 s here)
    names = {canonical(n) for n in re.findall(r'^\[\[packages\]\]\nname = "([^"]+)"', done.stdout, re.M)}
    if names or "[[packages]]" not in done.stdout:
        return names
    try:
        data = tomllib.loads(done.stdout)
    except tomllib.TOMLDecodeError as exc:
        raise UvError("UV_FAILED", step="read uv export's output", returncode=0, detail=str(exc),
                      fix="upgrade uv (uv export --format pylock.toml)") from None
    return {canonical(p["name"]) for p in data.get("packages", []) if isinstance(p, dict) and "name" in p}


async def sync_locked(project: Project, env_python: Path, env_path: Path, host: dict[str, HostDist],
                      settings: UvKernelSettings, uv: str, log: Log, locked: dict[str, Locked],
                      refitted: AbstractSet[str] = frozenset(), kept_export: Path | None = None) -> SyncResult | None:
    """Steps 1-2 of the module doc; None when uv says the lock is out of date with pyproject.toml.

    ``refitted``: locked names an earlier start found not to fit the host; step 3 installs them, so uv skips them.
    """
    keep = provided(host, settings.allow_shadowing)
    result = SyncResult(how=f"{project.lock_path} (uv sync --locked --inexact, host packages left out)")
    prune = []
    for key, entry in sorted(locked.items()):
        if key not in keep:
            continue
        if is_local(entry):
            result.own_code_shadows[keep[key].name] = keep[key].version
        else:
            prune.append(key)
    wanted = _read_names(kept_export) if kept_export is not None else None
    if wanted is None:
        wanted = await _exported_names(project, settings, uv, prune)
        if kept_export is not None:
            _keep(kept_export, json.dumps(sorted(wanted)))
    skip = sorted(k for k in locked if k not in wanted)
    # for the report: what only the host's packages pull in (the host's own names are listed as from_host)
    result.skipped = [n for n in skip if n not in keep and not is_local(locked[n])]
    result.from_host = {keep[n].name: keep[n].version for n in prune}
    # the host's other packages are preferences: the lock's version wins, and the host's copy serves when it is
    # that version; any other version is the env's own copy, as `uv sync` installs it
    same = []
    for key, entry in sorted(locked.items()):
        dist = host.get(key)
        if dist is None or key in keep or is_local(entry) or key not in wanted:
            continue
        if requirements.normal_version(entry.version) == requirements.normal_version(dist.version):
            same.append(key)
            result.from_host[dist.name] = dist.version
        else:
            result.host_replaced[dist.name] = {"env": entry.version, "host": dist.version}
    # a locked copy a protected host package does not accept (smol-course's lock has setuptools 75.6.0, the host's
    # torch needs setuptools>=77.0.3) cannot be honoured: the host's own copy, which the stack accepts, serves
    rejected = _rejected_by_stack(keep, {canonical(n): v["env"] for n, v in result.host_replaced.items()},
                                  _python_version(env_python, installed.site_of(str(env_python))))
    for key, why in sorted(rejected.items()):
        dist = host[key]
        if any(not requirements.satisfied(req.specifier, dist.version) for req in why):
            raise _stack_conflict(project, dist, locked[key].version, why)
        same.append(key)
        result.host_replaced.pop(dist.name, None)
        result.from_host[dist.name] = dist.version
        result.substituted.add(key)
        result.deviations.append({"name": dist.name, "locked": locked[key].version,
                                  "installed": f"{dist.version} (the host's)",
                                  "why": "; ".join(f"the host's {owner} requires {req}" for req, owner in why.items())})
    skip = sorted(set(skip) | set(same))
    argv = [uv, "sync", "--locked", "--inexact", "--no-python-downloads", "--python", str(env_python),
            "--project", str(project.root), *selection(project, settings)]
    for name in sorted(set(skip) | set(refitted)):
        argv += ["--no-install-package", name]
    log("uv sync --locked --inexact (leaving out " + (", ".join(prune) or "nothing") + " and what only they need)")
    done = await run_uv(argv, step=f"installed {project.root} from {project.lock_path} (uv sync)",
                        timeout=settings.uv_timeout, cwd=project.root, check=False, disk=str(env_path),
                        extra_env=_uv_env(env_path))
    if done.returncode != 0 and STALE_LOCK in done.output:
        return None
    if done.returncode != 0:
        raise _uv_failure(project, done.output, done.returncode, "uv sync")
    result.installed = _installed_lines(done.output)
    return result


def _rejected_by_stack(keep: dict[str, HostDist], copies: dict[str, str], python_version: tuple[int, ...]
                      ) -> dict[str, dict[Any, str]]:
    """The env copies (canonical name -> version) a protected host package does not accept: name -> {the
    requirement: the host package requiring it}."""
    out: dict[str, dict[Any, str]] = {}
    if not copies:
        return out
    marker_env = requirements.marker_environment(python_version)
    for dist in keep.values():
        for text in dist.requires:
            req = requirements.parse_requirement(text)
            if req is None or canonical(req.name) not in copies:
                continue
            if req.marker is not None and not req.marker.evaluate({**marker_env, "extra": ""}):
                continue
            if not requirements.satisfied(req.specifier, copies[canonical(req.name)]):
                out.setdefault(canonical(req.name), {})[req] = f"{dist.name} {dist.version}"
    return out


def _stack_conflict(project: Project, dist: HostDist, locked: str, why: dict[Any, str]) -> DependencyError:
    """DEPENDENCY_CONFLICT: neither the lock's version nor the host's own copy fits the host's stack."""
    needs = " and ".join(f"{owner}, which requires {req}" for req, owner in why.items())
    return DependencyError("DEPENDENCY_CONFLICT", requirement=f"{dist.name}=={locked} (from {project.lock_path})",
                           provides=needs, name=dist.name, host_version=dist.version, root=_where(project),
                           allow=resolve.allow_option(dist.name),
                           facts=[("the project's lock installs", f"{dist.name}=={locked}"),
                                  ("the host's stack has", needs), ("installed", "nothing")])


def _read_names(path: Path) -> set[str] | None:
    """What ``uv export --prune`` said for the same inputs, kept by an earlier start (None when there is none)."""
    try:
        names = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return set(names) if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def _installed_lines(output: str) -> list[str]:
    return [line.strip()[2:].strip() for line in output.splitlines() if line.strip().startswith("+ ")]


def _uv_failure(project: Project, output: str, returncode: int, what: str) -> UvError | DependencyError | ProjectError:
    """uv's failure, said as what it is (a missing source path, an unreachable index, an offline miss …)."""
    text = output.strip()
    where = _where_declared(project, text)
    parsed = re.search(r"Failed to parse:? `?([^`\n]*(?:uv\.toml|pyproject\.toml))`?", text)
    if parsed:
        return ProjectError("UV_CONFIG_INVALID", path=parsed.group(1), root=_where(project), detail=tail(text))
    if resolve.offline_miss(text):  # before the source checks: a git clone refused offline is no bad address
        facts, _how = _declaring_selection(project, where, text)
        return DependencyError("PACKAGE_NOT_AVAILABLE_OFFLINE", root=_where(project), detail=tail(text),
                               facts=([("source", where)] if where else []) + facts)
    if "No solution found" in text and what != "uv pip compile":
        return DependencyError("DEPENDENCIES_UNRESOLVABLE", root=_where(project), detail=tail(text))
    if "Distribution not found at" in text:
        return DependencyError("SOURCE_NOT_FOUND", source=where or "a path or url the project names",
                               where=where or f"{project.root}/pyproject.toml", detail=tail(text))
    built = resolve.build_failure(text)
    if built is not None:
        return built
    if where or any(s in text for s in ("Failed to fetch", "Failed to download", "Git operation failed",
                                         "failed to clone", "Failed to clone")):
        facts, how = _declaring_selection(project, where, text)
        named = where or next((value for label, value in facts if label == "package"), "")
        return DependencyError("SOURCE_UNREACHABLE", source_text=f": {named}" if named else "",
                               where_text=(f" ({where})" if where else "") + how, facts=facts, detail=tail(text))
    return UvError("UV_FAILED", step=f"{what} installed {project.root}", returncode=returncode, detail=tail(text),
                   fix=f"read uv's message above; `uv sync` in {project.root} shows the same (it would also "
                       "install the host's packages: do not keep what it installs)")


def kept(cache_root: Path, kind: str, key: str) -> Path:
    """Where an answer for one set of inputs (``key``: resolution_key) is kept: uvkernel's cache, never the project.

    ``resolved``: uv pip compile's versions; ``export``: what uv export --prune left; ``fit``: versions that replace
    locked ones for this host; ``companions``: builds of the host torch's variant."""
    return cache_root / "resolutions" / f"{kind}-{key}.txt"


DROPPED = "# not needed with the host's versions: "


def read_fit(path: Path) -> tuple[list[str], set[str]]:
    """(versions that replace locked ones, locked names the host's versions make unnecessary)."""
    try:
        text = path.read_text()
    except OSError:
        return [], set()
    pins = [line for line in text.splitlines() if requirements.parse_requirement(line)]
    dropped = {line[len(DROPPED):].strip() for line in text.splitlines() if line.startswith(DROPPED)}
    return pins, dropped


async def fit_to_host(project: Project, env_python: Path, site_packages: Path, host: dict[str, HostDist],
                      settings: UvKernelSettings, uv: str, result: SyncResult, log: Log, *, locked: dict[str, Locked],
                      cached: Path, fitted: list[str], dropped: set[str], waived: resolve.InstallPlan | None = None) -> None:
    """Step 3: locked versions that need another host version are re-resolved against the host and installed.

    ``fitted``: the versions an earlier start of the same inputs found (uv sync skipped those names): installed
    straight away, then checked like the rest.
    """
    keep = provided(host, settings.allow_shadowing)
    why: dict[str, str] = {}
    lines = list(fitted)
    with tempfile.TemporaryDirectory(prefix="uvkernel-fit-") as tmp_name:
        tmp = Path(tmp_name)
        if lines:
            log(f"installing the versions that fit the host, kept from an earlier start ({cached})")
            await _install_resolved(project, env_python, keep, lines, settings, uv, tmp, log,
                                    what="installed versions that fit the host in place of locked ones", host=host)
        env_dists = await installed.env_distributions(site_packages)
        # what the env's packages need of the host: its stack, and the host's copies standing in for locked ones
        held = {**keep, **{k: host[k] for k in result.substituted if k in host}}
        broken = installed.broken_requirements(env_dists, held, _python_version(env_python, site_packages))
        if broken:
            names = {canonical(name) for name, _req, _v in broken}
            why.update({canonical(n): f"requires {req}; the host has {v}" for n, req, v in broken})
            log("re-resolving against the host: " + ", ".join(sorted(names)))
            # everything else stays at its locked version (constraints); the broken ones are free to move
            others = [f"{d.name}=={d.version}" for k, d in sorted(env_dists.items())
                      if k not in names and k not in keep and _plain_version(d.version) and not d.editable]
            try:
                pinned = await _compile(project, env_python, host, settings, uv, tmp, log, constraints=others,
                                        diagnose=False, waived=waived)
            except DependencyError:
                # as `uv lock` moves a lock: the locked versions stay preferred, so only what has to move moves
                pinned = await _compile(project, env_python, host, settings, uv, tmp, log, preferences=others,
                                        waived=waived)
            # every resolved version the env does not hold yet: the broken ones and whatever their new versions need
            new = []
            for line in pinned.splitlines():
                req = requirements.parse_requirement(line)
                key = canonical(req.name) if req is not None else ""
                if req is None or not key or key in keep or req.url:
                    continue
                dist = host.get(key)
                if dist is not None and requirements.exact_versions([req]).get(key) == \
                        requirements.normal_version(dist.version):
                    continue  # a preference that fits: the host's copy serves
                have = env_dists.get(key)
                if have is None or requirements.exact_versions([req]).get(key) != requirements.normal_version(have.version):
                    new.append(line)
                    names.add(key)
            await _install_resolved(project, env_python, keep, new, settings, uv, tmp, log,
                                    what="replaced locked versions that do not fit the host", host=host)
            moved_for = ", ".join(sorted({canonical(n) for n, _r, _v in broken}))
            for line in new:
                why.setdefault(canonical(requirements.line_name(line)), f"moved with {moved_for}, resolved again")
            lines = [line for line in lines if canonical(requirements.line_name(line)) not in names] + new
            # a broken locked package the host's versions do not need at all (pulled in only by a newer version
            # of something else): not kept; removed when this start installed it
            resolved = {canonical(requirements.line_name(line)) for line in pinned.splitlines() if line.strip()}
            unneeded = {canonical(n) for n, _r, _v in broken} - resolved
            ours = {canonical(line.split("==")[0].split(" ")[0]) for line in result.installed}
            if unneeded & ours:
                await run_uv([uv, "pip", "uninstall", "--python", str(env_python), *sorted(unneeded & ours)],
                             step="removed locked packages the host's versions make unnecessary",
                             timeout=settings.uv_timeout, cwd=project.root)
            dropped = dropped | unneeded
            _keep(cached, "\n".join(lines + [DROPPED + n for n in sorted(dropped)]) + "\n")
    fixed = requirements.exact_versions(requirements.parse_requirement(p) for p in lines)
    for key in sorted(dropped):
        entry = locked.get(key)
        fixed.setdefault(key, "not installed")
    for key, version in sorted(fixed.items()):
        entry = locked.get(key)
        dist = host.get(key)
        if dist is not None and key not in keep:
            # the report's "in the env over the host's" lines follow the versions that replaced locked ones
            result.host_replaced.pop(dist.name, None)
            if version == requirements.normal_version(dist.version):
                result.from_host[dist.name] = dist.version
            elif version != "not installed":
                result.host_replaced[dist.name] = {"env": version, "host": dist.version}
        result.deviations.append({"name": key, "locked": entry.version if entry else "", "installed": version,
                                  "why": why.get(key, "needs other versions of host packages (found by an "
                                                      "earlier start)")})


def _major(version: str) -> int:
    """The leading number of a release (1 for 1.43.11, 2026 for 2026.5.9); 0 for a 0.x release or no version."""
    try:
        return Version(version).release[0]
    except (InvalidVersion, IndexError):
        return 0


def _plain_version(version: str) -> bool:
    try:
        Version(version)
        return True
    except InvalidVersion:
        return False


def _python_version(env_python: Path, site_packages: Path) -> tuple[int, ...]:
    # lib/pythonX.Y/site-packages: the env's version without starting its interpreter
    digits = site_packages.parent.name.removeprefix("python").split(".")
    try:
        return tuple(int(d) for d in digits) + (0,)
    except ValueError:
        return sys.version_info[:3]


# --- without a (current) lock: uv pip compile on the project, cached in uvkernel's own state --------------

def default_groups(project: Project, settings: UvKernelSettings) -> list[str]:
    """The groups ``uv sync`` installs here: ``[tool.uv] default-groups`` (else ``dev``) plus the configured ones."""
    tool_uv = project.tool_uv()
    groups = project.pyproject.get("dependency-groups")
    declared = [canonical(g) for g in groups] if isinstance(groups, dict) else []
    defaults = [] if getattr(settings, "no_default_groups", False) else tool_uv.get("default-groups", ["dev"])
    wanted = declared if defaults == "all" else [canonical(g) for g in defaults if isinstance(g, str)]
    out = [g for g in wanted if g in declared]
    for group in settings.dependency_groups:
        if canonical(group) not in out:
            out.append(canonical(group))
    left_out = {canonical(g) for g in getattr(settings, "no_groups", []) or []}
    return [g for g in out if g not in left_out]


def _compile_args(project: Project, settings: UvKernelSettings) -> list[str]:
    args = [str(project.pyproject_path)]
    for extra in settings.extras:
        args += ["--extra", extra]
    for group in default_groups(project, settings):
        args += ["--group", f"pyproject.toml:{group}"]
    return args


def resolution_key(project: Project, host_sig: str, settings: UvKernelSettings) -> str:
    h = hashlib.sha256()
    for path in sorted(project_files(project)):
        try:
            h.update(str(path).encode() + b"\0" + read_input(path))
        except OSError:
            h.update(str(path).encode() + b"\0-")
    h.update(host_sig.encode())
    h.update(json.dumps([2, settings.host_packages, sorted(settings.protected_packages), settings.no_default_groups,
                         sorted(settings.no_groups), sorted(settings.required_packages)]).encode())
    h.update(json.dumps([sorted(settings.extras), sorted(settings.dependency_groups), sorted(settings.allow_shadowing),
                         getattr(settings, "host_version_conflicts", "fail"), uv_variables()]).encode())
    return h.hexdigest()[:32]


def uv_variables() -> list[tuple[str, str]]:
    """uv's own settings from the environment: they change what uv resolves (indexes, find-links, offline)."""
    return sorted((k, v) for k, v in os.environ.items() if k.startswith("UV_") and k not in ("UV_NO_PROGRESS",))


def project_files(project: Project) -> list[Path]:
    """The files whose contents decide what uv installs: pyproject.toml of the project, the workspace root and
    its members, uv.toml, uv.lock."""
    files: set[Path] = set()
    for folder in {project.root, project.top}:
        if folder is None:
            continue
        for name in ("pyproject.toml", "uv.toml", "uv.lock"):
            files.add(folder / name)
    if project.workspace_root is not None:
        table = project.tool_uv(top=True).get("workspace") or {}
        members = table.get("members") if isinstance(table, dict) else None
        for pattern in members if isinstance(members, list) else []:
            if isinstance(pattern, str):
                for member in member_folders(project.workspace_root, pattern):
                    files.add(member / "pyproject.toml")
    return sorted(files)


async def sync_resolved(project: Project, env_python: Path, env_path: Path, host: dict[str, HostDist],
                        key: str, settings: UvKernelSettings, uv: str, cache_root: Path, log: Log,
                        stale_lock: bool, waived: resolve.InstallPlan | None = None) -> SyncResult:
    keep = provided(host, settings.allow_shadowing)
    result = SyncResult(how="resolved against the host (uv pip compile on pyproject.toml)")
    if stale_lock:
        result.notes.append(notice("LOCK_OUT_OF_DATE", lock=project.lock_path, where=_where(project)))
    elif project.top is not None:
        result.notes.append(notice("NO_LOCK_RESOLVED"))
    cached = kept(cache_root, "resolved", key)
    with tempfile.TemporaryDirectory(prefix="uvkernel-sync-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            pinned = cached.read_text()
            log(f"resolution of these inputs kept from an earlier start ({cached})")
        except OSError:
            preferences = await _locked_preferences(project, settings, uv) if stale_lock else []
            pinned = await _compile(project, env_python, host, settings, uv, tmp, log, preferences=preferences,
                                    waived=waived)
            _keep(cached, pinned)
        lines = []
        for line in pinned.splitlines():
            req = requirements.parse_requirement(line)
            name = canonical(req.name) if req is not None else ""
            if name in keep:
                result.from_host[keep[name].name] = keep[name].version
                continue
            dist = host.get(name)
            if dist is not None and req is not None and not req.url:
                version = requirements.exact_versions([req]).get(name)
                if version == requirements.normal_version(dist.version):
                    result.from_host[dist.name] = dist.version  # a preference that fits: the host's copy serves
                    continue
                result.host_replaced[dist.name] = {"env": version or str(req.specifier), "host": dist.version}
            lines.append(line)
        result.installed = await _install_resolved(project, env_python, keep, lines, settings, uv, tmp, log,
                                                   what=f"installed {project.root}'s dependencies", host=host,
                                                   cache_root=cache_root)
    return result


def _read_host_copies(path: Path) -> tuple[list[str], list[str]] | None:
    """An earlier start's answer for the host packages the env's copies break: (versions to install, names for
    which none fits); None when there is none."""
    try:
        data = json.loads(path.read_text())
        pins, unfixable = data["pins"], data["unfixable"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(pins, list) and isinstance(unfixable, list) and all(isinstance(x, str) for x in pins + unfixable):
        return pins, unfixable
    return None


def _keep(path: Path, text: str) -> None:
    """A resolution kept in uvkernel's cache (written whole or not at all)."""
    try:
        write_atomic(path, text, make_parent=True)
    except OSError:
        pass


async def _locked_preferences(project: Project, settings: UvKernelSettings, uv: str) -> list[str]:
    """A stale lock's versions, which ``uv pip compile`` prefers (as ``uv lock`` keeps them)."""
    done = await run_uv([uv, "export", "--frozen", "--format", "requirements.txt", "--no-hashes", "--no-header",
                         "--no-annotate", "--no-emit-workspace", "--all-groups", "--all-extras", "--project",
                         str(project.root)], step="read uv.lock", timeout=settings.uv_timeout, cwd=project.root,
                        check=False)
    if done.returncode != 0:
        return []
    return [line for line in done.stdout.splitlines() if line and not line.startswith(("-", "#"))]


async def _install_resolved(project: Project, env_python: Path, keep: dict[str, HostDist], lines: list[str],
                            settings: UvKernelSettings, uv: str, tmp: Path, log: Log, what: str,
                            host: dict[str, HostDist] | None = None, cache_root: Path | None = None) -> list[str]:
    """Exactly the resolved versions (``--no-deps``), with the project's pyproject.toml beside them so its
    ``[tool.uv.sources]`` say where each direct dependency comes from; never a host package (``--excludes``)."""
    # the protected packages, and the host's others that serve as they are: the project's pyproject.toml, given
    # for its sources, names them again, and uv (which cannot see the host's copies) would install them
    wanted = {canonical(requirements.line_name(line)) for line in lines}
    host_excludes = write_excludes(tmp, {**{k: d for k, d in (host or {}).items() if k not in wanted}, **keep})
    # the project's own editables (workspace members, editable paths) built for an earlier env from the same
    # unchanged trees: installed from those builds, and left out of this install (its pyproject.toml names them)
    lines, kept_builds, to_keep = await install.kept_editables(lines, str(env_python), cache_root)
    excludes = tmp / "host-and-kept.txt"
    excludes.write_text(host_excludes.read_text() + "".join(f"{name}\n" for name in sorted(kept_builds)))
    reqs = tmp / "resolved.txt"
    reqs.write_text("\n".join(lines) + "\n")
    argv = [uv, "pip", "install", "--python", str(env_python), "--no-deps", "--excludes", str(excludes),
            "-r", str(reqs), "-r", *_compile_args(project, settings)]
    log("uv pip install --no-deps (the versions resolved against the host, with the project's own sources)")
    # exact versions are usually in uv's cache already: asking the index again costs a round trip per package
    done = await run_uv([*argv, "--offline"], step=what, timeout=settings.uv_timeout, cwd=project.root,
                        check=False, disk=str(env_python.parent.parent))
    if done.returncode != 0 and os.environ.get("UV_OFFLINE", "").lower() not in ("1", "true", "yes"):
        done = await run_uv(argv, step=what, timeout=settings.uv_timeout, cwd=project.root, check=False,
                            disk=str(env_python.parent.parent))
    if done.returncode != 0:
        raise _uv_failure(project, done.output, done.returncode, "uv pip install")
    await install.install_kept_editables(kept_builds, uv=uv, env_python=str(env_python), excludes=host_excludes,
                                         cwd=project.root, timeout=settings.uv_timeout, log=log)
    await install.keep_editables(to_keep, str(env_python), cache_root)
    return _installed_lines(done.output) + [f"{name} @ {root} (editable)" for name, (root, _w) in kept_builds.items()]


async def _check_waiver(output: str, env_python: Path, keep: dict[str, HostDist], settings: UvKernelSettings, uv: str,
                        project: Project, waived: resolve.InstallPlan) -> None:
    """An override waives the pin for every package, so check that the versions resolved under it need nothing
    but the host's versions themselves: a torchvision made for the waived torch still cannot use the host's."""
    pins = [line for line in output.splitlines() if (req := requirements.parse_requirement(line)) is not None
            and not req.url and canonical(req.name) not in keep]
    if not pins:
        return
    try:
        await resolve.resolve(pins, uv=uv, env_python=str(env_python), host=keep,
                                   python_version=_python_version(env_python, installed.site_of(str(env_python))),
                                   root=_where(project), cwd=project.root, timeout=settings.uv_timeout)
    except DependencyError as exc:
        raise resolve.with_waived_pins(exc, waived) from None


async def _compile(project: Project, env_python: Path, host: dict[str, HostDist], settings: UvKernelSettings, uv: str,
                   tmp: Path, log: Log, *, constraints: Sequence[str] = (), preferences: Sequence[str] = (),
                   diagnose: bool = True, waived: resolve.InstallPlan | None = None) -> str:
    """``uv pip compile`` of the project against the host: its protected packages fixed, the rest preferred."""
    keep = provided(host, settings.allow_shadowing)
    folder = tmp / f"compile-{len(list(tmp.glob('compile-*')))}"
    folder.mkdir()
    host_args, host_env, output = await asyncio.to_thread(protection.resolution_files, host, keep, folder,
                                                          preferences)
    argv = [uv, "pip", "compile", "--python", str(env_python), "--no-header", "--no-annotate", "--quiet",
            *_compile_args(project, settings), *host_args]
    if constraints:
        (folder / "constraints.txt").write_text("\n".join(constraints) + "\n")
        argv += ["--constraints", str(folder / "constraints.txt")]
    overrides = [keep[canonical(u["name"])].pin for u in (waived.unmet_pins if waived else [])
                 if canonical(u["name"]) in keep]
    if overrides:
        # host_version_conflicts = warn: the project's pin on a host package gives way to the host's version
        (folder / "waived-pins.txt").write_text("\n".join(o for o in overrides if o) + "\n")
        argv += ["--overrides", str(folder / "waived-pins.txt")]
    for name in _sourced_host_names(project, keep):
        # the project names an index for a package the host provides (torch = { index = "pytorch-cu128" }): the
        # host satisfies it, so that index is not contacted for it
        argv += ["--no-sources-package", name]
    log(f"uv pip compile {project.root}/pyproject.toml against the host's packages")
    done = await run_uv(argv, step=f"resolved {project.root}'s dependencies against the host",
                        timeout=settings.uv_timeout, cwd=project.root, check=False, extra_env=host_env)
    if done.returncode == 0:
        text = output.read_text()
        if overrides and waived is not None:  # overrides come from waived's pins
            await _check_waiver(text, env_python, keep, settings, uv, project, waived)
        return text
    text = done.output
    failure = _uv_failure(project, text, done.returncode, "uv pip compile")
    if not isinstance(failure, UvError):
        raise failure
    if not diagnose:
        raise DependencyError("DEPENDENCIES_UNRESOLVABLE", root=_where(project), detail=tail(text))
    # the host is in the way, or the project cannot be resolved at all: the same resolution without the host says
    free = await run_uv([uv, "pip", "compile", "--python", str(env_python), "--no-header", "--annotation-style",
                         "line", "--quiet", *_compile_args(project, settings)],
                        step=f"resolved {project.root}'s dependencies without the host", timeout=settings.uv_timeout,
                        cwd=project.root, check=False)
    if free.returncode != 0:
        raise DependencyError("DEPENDENCIES_UNRESOLVABLE", root=_where(project), detail=tail(text))
    raise resolve.transitive_conflict(keep, tail(text), free.stdout, _where(project))


# --- the stage: checks that need no uv, then the lock or the resolution ----------------------------------

def _where_declared(project: Project, text: str) -> str:
    """The file:line of a declared git/url source or index that uv's failure names."""
    for source in declared_sources(project):
        for key in ("git", "url"):
            if isinstance(source.value.get(key), str) and source.value[key].rstrip("/") in text:
                return f"{source.name} at {source.where}"
    for index in declared_indexes(project):
        if index.value["url"].rstrip("/") in text:
            return f"index {index.name} at {index.where}"
    return ""


def _declaring_selection(project: Project, where: str, text: str) -> tuple[list[tuple[str, str]], str]:
    """Which group or extra asks for the source uv could not reach, and how to leave it out, as ``uv sync
    --no-group`` does: (facts, a sentence for the fix).  The name is the declared source's, else the one uv failed
    to fetch (a direct ``name @ git+…`` requirement)."""
    name = where.split(" at ", 1)[0] if where and not where.startswith("index ") else ""
    if not name:
        found = re.search(r"Failed to (?:download and )?build `([A-Za-z0-9][A-Za-z0-9._-]*)", text)
        name = found.group(1) if found else ""
    if not name:
        return [], ""
    facts: list[tuple[str, str]] = [] if where else [("package", name)]
    ways: list[str] = []
    for kind, selection_name in declarations.declared_in(project, name):
        if kind == "group":
            facts.append(("declared in", f"dependency group {selection_name}"))
            ways.append(f"leave the group {selection_name} out: `uvkernel sync --no-group {selection_name}`, or set "
                        f"no_groups = [\"{selection_name}\"] (or no_default_groups = true) under [tool.uvkernel] "
                        "or in the kernel spec")
        elif kind == "extra":
            facts.append(("declared in", f"extra {selection_name}"))
            ways.append(f"leave the extra {selection_name} out of the extras setting")
        else:
            facts.append(("declared in", "the project's dependencies"))
    return facts, ("; or " + "; or ".join(ways)) if ways else ""


def _sourced_host_names(project: Project, keep: dict[str, HostDist]) -> list[str]:
    return sorted({keep[canonical(s.name)].name for s in declared_sources(project) if canonical(s.name) in keep})


def _local_names(project: Project) -> set[str]:
    used = declarations.used_names(project)
    return {canonical(s.name) for s in declared_sources(project)
            if any(k in s.value for k in ("path", "git", "url", "workspace")) and canonical(s.name) in used}


def check_direct(project: Project, host: dict[str, HostDist], python_version: tuple[int, ...],
                 settings: UvKernelSettings) -> resolve.InstallPlan:
    """A direct requirement the host's version does not meet: DEPENDENCY_CONFLICT before anything is installed."""
    reqs, _notes = declarations.declared(project, settings)
    own = _local_names(project)
    reqs = [r for r in reqs if canonical(requirements.line_name(r)) not in own]
    return resolve.plan(reqs, host, python_version, settings.allow_shadowing, root=_where(project),
                             extras=settings.extras, on_conflict=getattr(settings, "host_version_conflicts", "fail"))


async def sync(project: Project, env: EnvPlace, host: dict[str, HostDist], host_python: HostPython, settings: UvKernelSettings, *, uv: str,
               cache_root: Path, log: Log) -> SyncResult:
    """Install the project into ``env`` as ``uv sync`` would, leaving the host's packages to the host."""
    if project.tool_uv().get("managed") is False:
        return SyncResult(how="nothing: [tool.uv] managed = false (uv does not manage this project either)",
                          notes=[notice("PROJECT_NOT_MANAGED", pyproject=f"{project.root}/pyproject.toml")])
    check_sources(project)
    direct = check_direct(project, host, host_python.version, settings)
    waived = direct if direct.unmet_pins else None  # host_version_conflicts = warn: pins that give way to the host
    # a path, workspace, git or url source is the project's own code: installed even where the host has the name
    own = _local_names(project)
    shadows = {host[k].name: host[k].version for k in own if k in host}
    host = {k: d for k, d in host.items() if k not in own}
    result: SyncResult | None = None
    stale = False
    host_sig = protection.signature(host_python.site_packages)
    # off the loop: both read the project's files whole (uv.lock and uv.toml may be megabytes)
    key = await off_loop("reading the project's files", resolution_key, project, host_sig, settings)
    if project.has_lock and project.lock_path is not None:  # has_lock: a lock_path that is a file
        locked = await off_loop("reading uv.lock", read_lock, project.lock_path, host_python.version)
        cached = kept(cache_root, "fit", key)  # versions that replace locked ones, from an earlier start
        fitted, dropped = read_fit(cached)
        refitted = {canonical(requirements.line_name(line)) for line in fitted} | dropped
        result = await sync_locked(project, env.python, env.path, host, settings, uv, log, locked, refitted,
                                   kept_export=kept(cache_root, "export", key))
        if result is None:
            stale = True
            log(f"{project.lock_path} is out of date with pyproject.toml: resolving instead (the lock is not written)")
        else:
            await fit_to_host(project, env.python, env.site_packages, host, settings, uv, result, log,
                              locked=locked, cached=cached, fitted=fitted, dropped=dropped, waived=waived)
    if result is None:
        result = await sync_resolved(project, env.python, env.path, host, key, settings, uv, cache_root,
                                     log, stale_lock=stale, waived=waived)
        if declarations.is_package(project) and project.root is not None:  # a package has a root
            # as uv sync does for a packaged project: the project itself, editable, its dependencies handled above
            await install.install_editable(project.root, uv=uv, env_python=str(env.python), host=host,
                                                allow_shadowing=settings.allow_shadowing,
                                                timeout=settings.uv_timeout, log=log, cache_root=cache_root)
            result.installed.append(f"{project.root} (editable)")
    # torchvision and friends of the host torch's build (+cpu, +cu128 …), unless the project names their index
    result.companions = await companions.select(
        project.root, env.python, env.site_packages, host, settings, uv,
        declared={canonical(s.name) for s in declared_sources(project)},
        cached=kept(cache_root, "companions", key), log=log)
    await keep_host_packages_working(project, env, host, settings, uv=uv, result=result, log=log,
                                     cache_root=cache_root, key=key)
    result.own_code_shadows.update(shadows)
    result.shadowed_on_purpose = direct.shadowed_on_purpose
    result.unmet_pins = direct.unmet_pins
    for name, version in result.own_code_shadows.items():
        log(f"notice: the project's own {name} (a local source) hides the host's {name} {version}")
    return result


async def keep_host_packages_working(project: Project, env: EnvPlace, host: dict[str, HostDist],
                                     settings: UvKernelSettings, *, uv: str, result: SyncResult, log: Log,
                                     cache_root: Path, key: str, rounds: int = 3) -> None:
    """Host packages outside the stack that the env's own copies would break get env copies of their own.

    The env still sees every host distribution it holds no copy of.  When the project needs another version of
    one of their dependencies (Debian's httplib2 requires pyparsing>=2.4.2; the project pins pyparsing 2.3), the
    host's copy would import against a version it does not accept.  As uv would for a package in the project's
    own graph, the env gets a version of it that accepts what the env holds, resolved with everything the env
    holds fixed; a new copy's own dependencies can break others in turn, hence a few rounds.  A protected host
    package is never replaced (its requirements took part in every resolution already); one for which no
    release fits gets a note and stays as it is.

    A copy disturbs nothing else: everything the env sees (its own copies and the host's other packages) is held
    at its version while the broken ones resolve, so a copy never drags the host's other packages back in turn.
    A copy also stays in the host's major version (``botocore>=1`` for the host's 1.43.11): the host's code was
    written against that API, and a release from another era (botocore 0.76.0, the last to accept
    python-dateutil 4) is not a working answer.  Where nothing fits, the note says so and names the fix.

    Ruling a package out can take uv half a minute (botocore has two thousand releases), so the broken ones are
    resolved side by side, and the answer for the same host, env versions and broken packages is kept in
    uvkernel's cache for the next cold start.
    """
    keep = provided(host, settings.allow_shadowing)
    python_version = _python_version(env.python, env.site_packages)
    unfixable: set[str] = set()
    unsure: set[str] = set()  # names uv could not answer for in time: their "none fits" is not kept
    for _round in range(rounds):
        env_dists = await installed.env_distributions(env.site_packages)
        broken = [b for b in installed.host_broken_by_env(env_dists, host, python_version, skip=keep)
                  if canonical(b[0].name) not in unfixable]
        if not broken:
            return
        names = sorted({canonical(theirs.name) for theirs, _req, _mine in broken})
        log("the env's copies break host packages it still sees: " +
            "; ".join(f"{theirs.name} {theirs.version} requires {req} (the env has {mine.name} {mine.version})"
                      for theirs, req, mine in broken))
        fixed = [f"{d.name}=={d.version}" for k, d in sorted(env_dists.items())
                 if k not in keep and not d.editable and _plain_version(d.version)]

        async def copies_for(group: list[str], env_dists: dict[str, Any] = env_dists, fixed: list[str] = fixed
                             ) -> list[str] | None:
            """The versions that give ``group`` working env copies with all else held; None when none fits."""
            held = fixed + [f"{d.name}=={d.version}" for k, d in sorted(host.items())
                            if k not in keep and k not in env_dists and k not in group and _plain_version(d.version)]
            held += [f"{host[n].name}>={major}" for n in group if (major := _major(host[n].version))]
            # no placeholder for what may not stay at the host's version (the broken ones, the names the env
            # holds its own copies of): every placeholder left is pinned, so uv's cache can answer first
            seen = {k: d for k, d in host.items() if k in keep or (k not in group and k not in env_dists)}
            try:
                resolved = await resolve.resolve([host[n].name for n in group], uv=uv, env_python=str(env.python),
                                                 host=seen, python_version=python_version,
                                                 allow_shadowing=settings.allow_shadowing, locked=held,
                                                 root=_where(project), cwd=project.root,
                                                 timeout=min(settings.uv_timeout, HOST_COPY_TIMEOUT), diagnose=False,
                                                 cache_first=True)
            except DependencyError:
                return None
            except UvError as exc:  # uv took too long or could not run: the same note, but not kept as an answer
                log(f"no env copy of {', '.join(group)}: {exc}")
                unsure.update(group)
                return None
            out = []
            for req, _via in resolved:
                key = canonical(req.name)
                version = requirements.exact_versions([req]).get(key)
                if key in keep or req.url or version is None:
                    continue
                have = env_dists.get(key)
                if have is not None and requirements.normal_version(have.version) == version:
                    continue
                if have is None and key in host and requirements.normal_version(host[key].version) == version:
                    continue  # the host's copy is that version
                out.append(f"{req.name}=={version}")
            return out

        # the same question (this host, these env versions, these broken packages) was answered by an earlier start
        cached = kept(cache_root, "hostcopies", hashlib.sha256(json.dumps([key, names, fixed]).encode()).hexdigest()[:24])
        answer = _read_host_copies(cached)
        if answer is None:
            # one at a time, a few side by side (ruling out a package with two thousand releases can take uv
            # half a minute online), so one that cannot fit spoils no other; then the ones that fit together, for
            # one consistent set
            limit = asyncio.Semaphore(HOST_COPY_PARALLEL)

            async def single(name: str) -> list[str] | None:
                async with limit:
                    return await copies_for([name])

            singles = await asyncio.gather(*(single(n) for n in names))
            fits = [n for n, got in zip(names, singles) if got is not None]
            together = await copies_for(fits) if len(fits) > 1 else None
            pins = together if together is not None else [p for got in singles if got for p in got]
            answer = (sorted(set(pins)), sorted(set(names) - set(fits)))
            if not unsure:
                _keep(cached, json.dumps({"pins": answer[0], "unfixable": answer[1]}))
        pins, nothing_fits = answer
        unfixable.update(nothing_fits)

        def left_broken(theirs: Any, wants: str, mine: Any) -> None:
            text = note("HOST_PACKAGE_BROKEN_BY_ENV", name=theirs.name, version=theirs.version, requirement=wants,
                        dep=mine.name, dep_version=mine.version)
            log("notice: " + text)
            result.notes.append(text)

        for name in sorted(unfixable & set(names)):
            left_broken(*next(b for b in broken if canonical(b[0].name) == name))
        if not pins:
            return
        try:
            await install.install_pinned(pins, uv=uv, env_python=str(env.python), host=host,
                                         allow_shadowing=settings.allow_shadowing, cwd=project.root,
                                         timeout=settings.uv_timeout, log=log,
                                         what="installed env copies of host packages the env's copies would break")
        except (UvError, DependencyError):
            # the project's own packages are in place: a host package it never named does not stop the start
            for item in broken:
                left_broken(*item)
            return
        result.installed += pins
        copied = set()
        for line in pins:
            name = canonical(requirements.line_name(line))
            copied.add(name)
            if name in host:
                result.host_replaced[host[name].name] = {"env": line.split("==", 1)[1], "host": host[name].version}
        for theirs, wants, mine in broken:
            if canonical(theirs.name) in copied:
                result.notes.append(note("HOST_PACKAGE_COPIED", name=theirs.name, version=theirs.version,
                                         requirement=wants, dep=mine.name, dep_version=mine.version))


async def refit_companions(project: Project, env: EnvPlace, host_python: HostPython, settings: UvKernelSettings, *, uv: str,
                           cache_root: Path, failed: set[str], log: Log) -> list[dict[str, str]]:
    """Companions the preflight found not to load on the host's torch (``failed``: canonical names), replaced by
    the newest release the project admits, resolved against the host; one record per replacement ([] when none
    could be found, and the preflight's refusal stands)."""
    host = await protection.marked(await protection.host_distributions(host_python, cache_root), settings)
    keep = provided(host, settings.allow_shadowing)
    env_dists = await installed.env_distributions(env.site_packages)
    targets = [env_dists[n] for n in sorted(failed) if n in env_dists and not env_dists[n].editable]
    if not targets:
        return []
    declared_reqs, _notes = declarations.declared(project, settings)
    reqs: list[str] = []
    for dist in targets:
        own = [r for r in declared_reqs if canonical(requirements.line_name(r)) == canonical(dist.name)]
        reqs += own or [dist.name]
        reqs.append(f"{dist.name}!={dist.version}")
    others = [f"{d.name}=={d.version}" for k, d in sorted(env_dists.items())
              if k not in failed and k not in keep and not d.editable and _plain_version(d.version)]
    names = ", ".join(f"{d.name} {d.version}" for d in targets)
    log(f"{names} did not load on the host's torch: looking for the newest release the project admits")
    resolved = None
    for constraints in (others, []):
        try:
            resolved = await resolve.resolve(reqs, uv=uv, env_python=str(env.python), host=host,
                                             python_version=host_python.version, allow_shadowing=settings.allow_shadowing,
                                             locked=constraints, root=_where(project), cwd=project.root,
                                             timeout=settings.uv_timeout)
            break
        except DependencyError:
            continue
    if resolved is None:
        return []
    wanted = {canonical(d.name) for d in targets}
    pins = [str(req) for req, _via in resolved if canonical(req.name) in wanted]
    if not pins:
        return []
    await install.install_pinned(pins, uv=uv, env_python=str(env.python), host=host,
                                 allow_shadowing=settings.allow_shadowing, cwd=project.root,
                                 timeout=settings.uv_timeout, log=log,
                                 what=f"replaced {names}, which did not load on the host's torch")
    versions = {canonical(requirements.line_name(p)): p.split("==", 1)[-1] for p in pins}
    return [{"name": d.name, "from": d.version, "to": versions.get(canonical(d.name), "?"),
             "why": "did not load on the host's torch"} for d in targets if canonical(d.name) in versions]
