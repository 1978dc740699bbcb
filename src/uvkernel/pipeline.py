"""The whole preparation, shared by the provisioner and the CLI:

    find the project -> prepare the env -> verify the host stack -> (the caller launches)
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import platformdirs
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from . import cache_envs, distribution, host as host_mod, launch, preflight, process, project as project_mod, trust
from . import env as stage2
from . import settings as settings_mod
from .env import HOST_CONSTRAINTS, HOST_EXCLUDES, Env
from .errors import PreflightError, ProjectError, UvError, UvkernelError, notice
from .files import CACHE_FOLDERS, check_private_dirs, off_loop, read_input, write_atomic
from .host import HostPython
from .project import Project
from .settings import UvKernelSettings
from .progress import phase
from .shared import Log, canonical
from .uvbin import find_uv, uv_environment

REPORT_FILE = ".uvkernel-report.json"


@dataclass
class Prepared:
    host: HostPython
    project: Project
    env: Env
    preflight: preflight.PreflightResult
    kernel_env: dict[str, str]
    uv: str
    timings: dict[str, float] = field(default_factory=dict)
    cache_root: Path = field(default_factory=Path)
    settings: UvKernelSettings | None = None  # the effective settings: the caller's, with [tool.uvkernel] below them
    context: dict[str, str] = field(default_factory=dict)  # UVKERNEL_SETTINGS (launch.settings_context)
    tools: Path | None = None  # the folder with the `uvkernel` command for the kernel's PATH
    host_scripts: Path | None = None  # stand-ins for the host's console scripts (launch.host_scripts_dir)

    def environment_for(self, base: Mapping[str, str], context: Mapping[str, str] | None = None) -> dict[str, str]:
        """The kernel's environment built on ``base`` (a copy; ``base`` is not changed)."""
        return launch.kernel_environment(
            base, self.env.path, uv_dir=os.path.dirname(self.uv), report_file=self.env.path / REPORT_FILE,
            excludes_file=_existing(self.env.path / HOST_EXCLUDES),
            constraints_file=_existing(self.env.path / HOST_CONSTRAINTS),
            tools_dir=self.tools, host_scripts=self.host_scripts, context={**self.context, **(context or {})},
        )

    def command(self, connection_file: str) -> list[str]:
        return launch.kernel_command(self.env.python, connection_file, self.host.version)

    def report(self) -> dict[str, Any]:
        return report_dict(host=self.host, project=self.project, env=self.env, result=self.preflight,
                           uv=self.uv, timings=self.timings, settings=self.settings)


def report_dict(*, host: HostPython | None = None, project: Project | None = None,
                env: Env | None = None, result: preflight.PreflightResult | None = None,
                uv: str = "", timings: Mapping[str, float] | None = None,
                error: UvkernelError | None = None, settings: UvKernelSettings | None = None) -> dict[str, Any]:
    return {
        "settings": settings_mod.sources_of(settings) if settings is not None else {},
        "uvkernel": distribution.version(),
        "ok": error is None and (result is None or result.ok),
        "host": host.to_json() if host else None,
        "project": project.to_json() if project else None,
        "env": env.to_json() if env else None,
        "preflight": result.to_json() if result else None,
        "uv": uv,
        "timings": dict(timings or {}),
        "error": error.to_json() if error else None,
        "message": str(error) if error else None,
    }


def cache_root(settings: UvKernelSettings) -> Path:
    if settings.cache_dir:
        root = Path(os.path.expanduser(settings.cache_dir))
    else:
        root = Path(platformdirs.user_cache_dir("uvkernel", appauthor=False))
    check_private_dirs(root, CACHE_FOLDERS)
    return root


async def locate(settings: UvKernelSettings, folder: str | os.PathLike[str] | None, environ: Mapping[str, str], *,
                 base: str | None = None, log: Log | None = None) -> tuple[HostPython, Project, Path]:
    """Stage 1: the host interpreter, the project holding ``folder`` (with its env's path) and uvkernel's cache.

    ``base``: the folder a relative ``folder`` is taken from (the server's, for a kernel start); ``log`` hears
    which host was chosen before the project is looked for."""
    path, reason = host_mod.choose(settings.host_python, dict(environ))
    root = cache_root(settings)
    host = await host_mod.inspect(path, reason, cache_dir=root)
    if log is not None:
        log(f"host interpreter: {host.executable} (Python {host.version_str}; {reason})")
    # off the event loop, with a time limit: a project's files may be special files or its globs slow
    project = await off_loop("finding the project", project_mod.find_project, folder, environ, cache_root=root,
                             host_key=host.executable, base=base)
    return host, project, root


def check_requires_python(project: Project, host: HostPython) -> None:
    requires = project.requires_python
    if not requires:
        return
    try:
        spec = SpecifierSet(requires)
    except InvalidSpecifier:
        raise ProjectError("PYPROJECT_INVALID", path=str(project.pyproject_path),
                           detail=f"requires-python = {requires!r} is not a valid version specifier") from None
    if not spec.contains(host.version_str, prereleases=True):
        raise ProjectError("REQUIRES_PYTHON_EXCLUDES_HOST", root=str(project.root), requires=requires,
                           host=host.executable, version=host.version_str)


def required_uv(project: Project) -> tuple[str, str] | None:
    """([tool.uv] required-version, the file saying it) where uv reads it: the workspace root's uv.toml, else its
    pyproject.toml; None when neither sets one."""
    top = project.top
    if top is None:
        return None
    uv_toml = top / "uv.toml"
    if uv_toml.is_file():
        try:
            value = project_mod.tomllib.loads(read_input(uv_toml).decode("utf-8")).get("required-version")
        except (OSError, ValueError):
            value = None  # uv reports a broken uv.toml itself (UV_CONFIG_INVALID)
        if isinstance(value, str):
            return value, str(uv_toml)
    value = project.tool_uv(top=True).get("required-version")
    return (value, str(top / "pyproject.toml")) if isinstance(value, str) else None


async def check_required_uv(project: Project, uv: str) -> None:
    """Refuse a project whose required-version excludes uvkernel's uv with a message about uv: uv's own refusal
    comes out of the dependency step and read as a problem with the project's dependencies."""
    # off the loop: a uv.toml of a few megabytes (a long no-build-package list) takes seconds to parse
    required = await off_loop("reading uv.toml", required_uv, project)
    if required is None:
        return
    try:
        spec = SpecifierSet(required[0])
    except InvalidSpecifier:
        return  # uv says what is wrong with it
    done = await process.run([uv, "--version"], env=uv_environment(), timeout=30)
    words = done.stdout.split()
    try:
        version = Version(words[1])
    except (IndexError, InvalidVersion):
        return  # not uv's answer: the first uv command reports the binary
    if not spec.contains(version, prereleases=True):
        raise UvError("UV_VERSION_REQUIRED", required=required[0], path=required[1], version=str(version), uv=uv)


async def prepare(
    settings: UvKernelSettings,
    *,
    cwd: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
    recheck: bool = False,
    log: Log | None = None,
    base_cwd: str | None = None,
    liveness: cache_envs.Liveness | None = None,
    notices: Sequence[str] = (),
) -> Prepared:
    """Run every stage; raise a UvkernelError with the user-facing message when one fails.

    ``liveness``: marks the env as in use by this start (``uvkernel gc`` leaves it alone) from before it is
    prepared; the caller clears it when the kernel ends.  ``notices``: the caller's own lines for the report
    (what it did before the start, such as rolling back an interrupted ``uvkernel add``)."""
    prepared = await prepare_env(settings, cwd=cwd, environ=environ, log=log, base_cwd=base_cwd, liveness=liveness)
    await verify(prepared, prepared.settings or settings, recheck=recheck, log=log, notices=notices)
    return prepared


async def prepare_env(
    settings: UvKernelSettings,
    *,
    cwd: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
    log: Log | None = None,
    base_cwd: str | None = None,
    liveness: cache_envs.Liveness | None = None,
) -> Prepared:
    """Stages 1 and 2: find the project, prepare its env, build the kernel's environment."""
    say = log or logging.getLogger("uvkernel").info
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    phase("finding the project")
    host, project, root = await locate(settings, cwd, environ, base=base_cwd, log=say)
    say(f"project: {project.root or 'none'}; env: {project.env_path} ({project.env_reason})")
    check_requires_python(project, host)
    if liveness is not None and project.in_cache:
        liveness.mark(root, project.env_path)  # before the env's lock: gc, holding the lock, sees it or wins
    uv, _how = find_uv(settings.uv_path)
    if project.root is not None:
        await check_required_uv(project, uv)
        # the project's own dependency policy, below whatever the kernel spec / jupyter config / CLI set
        settings = settings_mod.with_project_policy(settings, project.pyproject, str(project.root / "pyproject.toml"))
        if settings.require_trust and settings.project_dependencies:
            # installing the project runs its build backend: with require_trust, only once the user trusted it
            await off_loop("hashing the project's dependency files", trust.require, project, root)
    timings["find"] = time.monotonic() - t0

    phase("preparing the env")
    env = await stage2.prepare(project, host, settings, uv=uv, cache_root=root, log=say)
    timings["env"] = time.monotonic() - t0 - timings["find"]
    cache_envs.record_start(root, env.path, folder=project.root or project.notebook_dir, in_cache=project.in_cache,
                            host=host.executable)
    try:
        host_scripts = await off_loop("mirroring the host's console scripts", launch.host_scripts_dir, root, host)
    except ProjectError:
        host_scripts = None  # a host folder too slow to list: the kernel finds the host's own scripts, as before
    prepared = Prepared(host, project, env, preflight.PreflightResult(skipped=True), {}, uv, timings, root, settings,
                        context=launch.settings_context(settings, host.path), tools=launch.tools_dir(root),
                        host_scripts=host_scripts)
    prepared.kernel_env = prepared.environment_for(environ)
    return prepared


async def verify(prepared: Prepared, settings: UvKernelSettings, *, recheck: bool = False,
                 log: Log | None = None, notices: Sequence[str] = ()) -> preflight.PreflightResult:
    """Stage 3: the preflight, with the kernel's exact environment; writes the report the kernel shows.

    Raises the preflight's error (carrying the whole report) when the kernel must not start.
    """
    say = log or logging.getLogger("uvkernel").info
    t0 = time.monotonic()
    env, project = prepared.env, prepared.project
    if settings.preflight:
        phase("checking the host stack")
        say("preflight: checking the host stack from the env")
        result = await _preflight(prepared, settings, recheck)
        failed = _failed_companions(result)
        if failed and project.root is not None:
            # a locked companion built against another torch (pyannote's lock pins a torchcodec whose c10 symbols
            # the host lacks): the newest release the project admits may well load; try it before refusing
            refits = await stage2.refit_companions(project, env, prepared.host, settings, uv=prepared.uv,
                                                   cache_root=prepared.cache_root, failed=failed, log=say)
            if refits:
                env.plan.setdefault("companion_refits", []).extend(refits)
                result = await _preflight(prepared, settings, True)
    else:
        result = preflight.PreflightResult(skipped=True, notices=[notice("PREFLIGHT_DISABLED")])
    result.notices[0:0] = [*notices, *unmet_pin_notices(env.plan)]
    prepared.preflight = result
    prepared.timings["preflight"] = time.monotonic() - t0
    prepared.timings["total"] = sum(v for k, v in prepared.timings.items() if k != "total")
    report = prepared.report()
    error: UvkernelError | None = result.error()
    if error is not None:
        # companions whose builds for the host's variant could not be had, and whose installed build does not
        # load: the fix is that index, so the refusal names it
        error = stage2.companions.unavailable_error(env.plan.get("companion_builds") or [],
                                                    _failed_companions(result)) or error
    if error is not None:
        report.update(ok=False, error=error.to_json(), message=str(error))
        error.report = report  # type: ignore[attr-defined]  # the CLI prints every fact of a failed check
    _write_report(env.path / REPORT_FILE, report)
    if error is not None:
        raise error
    for text in result.notices:
        say(f"preflight: {text}")
    return result


async def _preflight(prepared: Prepared, settings: UvKernelSettings, recheck: bool) -> preflight.PreflightResult:
    env, project = prepared.env, prepared.project
    return await preflight.run(python=env.python, env=prepared.kernel_env, cwd=project.notebook_dir,
                               settings=settings, host=prepared.host, env_path=env.path, project_root=project.root,
                               cache_root=prepared.cache_root, recheck=recheck)


def _failed_companions(result: preflight.PreflightResult) -> set[str]:
    return {canonical(str(f.fields.get("package", ""))) for f in result.failures
            if f.code == "COMPANION_BUILD_MISMATCH" and f.fields.get("package")}


def unmet_pin_notices(plan: Mapping[str, Any]) -> list[str]:
    """One line per project requirement the host does not meet, kept under host_version_conflicts = warn."""
    return [notice("UNMET_PIN", requirement=pin["requirement"], name=pin["name"], host_version=pin["host_version"])
            for pin in plan.get("unmet_pins") or []]


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def _write_report(path: Path, data: dict[str, Any]) -> None:
    try:
        # no indent: json's C encoder only runs without one (indent=1 took about 1 ms of every warm start);
        # `uvkernel check --json` prints it readably
        write_atomic(path, json.dumps(data, default=str))
    except OSError:
        pass


__all__ = ["Prepared", "prepare", "prepare_env", "verify", "report_dict", "cache_root", "locate", "PreflightError"]
