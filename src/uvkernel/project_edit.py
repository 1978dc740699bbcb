"""``uvkernel add`` / ``uvkernel remove``: uv records the change, uvkernel brings the env in line.

uv writes pyproject.toml and uv.lock itself (``uv add --no-sync`` / ``uv remove --no-sync``), so the project
stays an ordinary uv project, portable to machines without a host stack.  What uvkernel adds around it:

* **A bound the host admits.**  ``uv add X`` records ``X>=<newest>``, which an older host may not satisfy
  (``torchvision>=0.29.2`` needs torch 2.15; the host has 2.13).  Before uv runs, the project's requirements
  plus the new ones are resolved against the host's packages (:func:`env.resolve.resolve`, the kernel start's
  resolver); a new requirement without a version then goes to uv as ``X>=<that version>``.  uv first records
  ``X==<that version>`` (so uv.lock holds it), then ``X>=<that version>`` (uv keeps the locked version).
* **Host conflicts refused before anything is written**: a requirement the host's version misses gets the kernel
  start's DEPENDENCY_CONFLICT text.
* **Nothing half-done.**  pyproject.toml and uv.lock are copied (into uvkernel's cache) before uv runs; when uv
  fails, or the env cannot be prepared afterwards, or Ctrl-C arrives, both are put back byte for byte (uv.lock
  removed if there was none).
* The env is then prepared exactly as a kernel start would (:func:`pipeline.prepare`), never by ``uv sync``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from filelock import FileLock
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from . import pipeline
from .env import declarations, host_distributions, lock_for, private_dir, resolve
from .errors import DependencyError, ProjectError, UvError, UvkernelError
from .settings import UvKernelSettings
from .shared import canonical
from .terminal import summary as env_summary
from .uvbin import find_uv, run_uv

PROJECT_FILES = ("pyproject.toml", "uv.lock")
RESTORED = "pyproject.toml and uv.lock are back as they were before this command (byte for byte)"


@dataclass
class Change:
    verb: str  # "add" or "remove"
    packages: list[str]
    group: str | None = None
    dev: bool = False
    optional: str | None = None

    def flags(self) -> list[str]:
        if self.dev:
            return ["--dev"]
        if self.group:
            return ["--group", self.group]
        if self.optional:
            return ["--optional", self.optional]
        return []


@dataclass
class Outcome:
    prepared: pipeline.Prepared
    recorded: list[str] = field(default_factory=list)  # what uv recorded (the bounded requirements for add)
    pyproject: Path = field(default_factory=Path)


class Backup:
    """Byte copies of pyproject.toml and uv.lock, in memory and in uvkernel's cache, put back by :meth:`restore`."""

    def __init__(self, root: Path, cache_root: Path) -> None:
        self.root = root
        digest = hashlib.sha256(str(root).encode()).hexdigest()[:24]
        self.folder = cache_root / "edits" / digest
        self.saved: dict[str, bytes | None] = {}
        private_dir(self.folder)
        for name in PROJECT_FILES:
            path = root / name
            data = path.read_bytes() if path.is_file() else None
            self.saved[name] = data
            copy = self.folder / name
            if data is None:
                copy.unlink(missing_ok=True)
                (self.folder / f"{name}.absent").write_text("")
            else:
                copy.write_bytes(data)
                (self.folder / f"{name}.absent").unlink(missing_ok=True)
        (self.folder / "project").write_text(str(root) + "\n")

    def restore(self) -> None:
        for name, data in self.saved.items():
            path = self.root / name
            if data is None:
                path.unlink(missing_ok=True)
            elif not path.is_file() or path.read_bytes() != data:
                with open(path, "wb") as fh:  # in place: the file keeps its owner and mode
                    fh.write(data)


async def _locate(settings: UvKernelSettings, folder: str, environ: Mapping[str, str], verb: str):
    host, project, cache_root = await pipeline.locate(settings, folder, environ)
    if project.root is None:
        raise ProjectError("NOT_A_PROJECT", path=folder, command=verb)
    return host, project, cache_root


def _requirement(text: str, root: Path) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise DependencyError("REQUIREMENT_INVALID", root=str(root), requirement=repr(text), detail=str(exc)) from None


_NOT_FOUND = re.compile(r"\b([A-Za-z0-9][A-Za-z0-9._-]*) was not found in the package registry")


async def bounds(change: Change, *, settings: UvKernelSettings, host: Any, project: Any, cache_root: Path,
                 uv: str, env_python: Path) -> tuple[list[str], list[str]]:
    """(bounded requirements, exact pins) for ``uv add``: each new requirement without a version gets
    ``>=V`` / ``==V``, V being the newest version that works with the host's packages and the project's."""
    root = project.root
    reqs = [_requirement(text, root) for text in change.packages]
    host_dists = await host_distributions(host, cache_root)
    # a requirement the host's version misses: refused as a kernel start refuses it, before anything is written
    resolve.plan(change.packages, host_dists, host.version, settings.allow_shadowing, root=str(root))
    open_ended = [r for r in reqs if not r.specifier and not r.url]
    if not open_ended:
        return list(change.packages), []
    declared, _notes = declarations.declared(project, settings)
    locked = await declarations.locked_pins(project, uv, settings.uv_timeout) if project.has_lock else []
    try:
        resolved = await resolve.resolve(
            declared + list(change.packages), uv=uv, env_python=str(env_python), host=host_dists,
            python_version=host.version, allow_shadowing=settings.allow_shadowing, locked=locked, root=str(root),
            cwd=root, timeout=settings.uv_timeout)
    except DependencyError as exc:
        flat = " ".join((exc.detail or "").split())  # uv wraps its explanation to the terminal's width
        missing = [m for m in _NOT_FOUND.findall(flat)
                   if canonical(m) in {canonical(r.name) for r in reqs}]
        if missing:
            raise DependencyError("PACKAGE_NOT_FOUND", names=", ".join(sorted(set(missing))),
                                  detail=exc.detail) from None
        raise
    versions: dict[str, str] = {}
    for req, _via in resolved:
        for spec in req.specifier:
            if spec.operator == "==":
                versions[canonical(req.name)] = spec.version
    bounded, pins = [], []
    for text, req in zip(change.packages, reqs):
        version = versions.get(canonical(req.name)) if req in open_ended else None
        if version is None:
            bounded.append(text)
            continue
        try:
            version = Version(version).public  # a host's 2.13.0+cpu is recorded as 2.13.0
        except InvalidVersion:
            pass
        for kind, target in ((">=", bounded), ("==", pins)):
            copy = Requirement(str(req))
            copy.specifier = SpecifierSet(f"{kind}{version}")
            target.append(str(copy))
    return bounded, pins


async def _uv_change(uv: str, change: Change, specs: list[str], project: Any, env_python: Path,
                     settings: UvKernelSettings) -> None:
    argv = [uv, change.verb, "--no-sync", "--python", str(env_python), *change.flags(), *specs]
    # UV_PROJECT_ENVIRONMENT: uv looks at the env uvkernel prepared (by absolute path) and never makes another
    done = await run_uv(argv, step=f"recorded the change (uv {change.verb} --no-sync)", timeout=settings.uv_timeout,
                        cwd=project.root, check=False,
                        extra_env={"UV_PROJECT_ENVIRONMENT": str(project.env_path)})
    if done.returncode != 0:
        raise UvError("CHANGE_FAILED", verb=" ".join([change.verb, *change.flags(), *specs]),
                      returncode=done.returncode, detail=done.output[-4000:])


async def apply(change: Change, settings: UvKernelSettings, folder: str, environ: Mapping[str, str],
                log: Any) -> Outcome:
    """Record ``change`` with uv, then prepare the env as a kernel start would; on any failure restore the files."""
    host, project, cache_root = await _locate(settings, folder, environ, change.verb)
    uv, _how = find_uv(settings.uv_path)
    env_python = project.env_path / "bin" / "python"
    if not env_python.exists():
        # uv gets the env's interpreter by absolute path, so the env must exist (a failure past its creation, e.g.
        # a dependency conflict `remove` is about to fix, still leaves it usable for uv)
        try:
            await pipeline.prepare_env(settings, cwd=folder, environ=environ, log=log)
        except UvkernelError:
            if not env_python.exists():
                raise
    specs, pins = list(change.packages), []
    if change.verb == "add":
        log("finding versions that work with the host's packages")
        specs, pins = await bounds(change, settings=settings, host=host, project=project, cache_root=cache_root,
                                   uv=uv, env_python=env_python)
    assert project.root is not None
    edit_lock = FileLock(str(lock_for(project.env_path, cache_root).lock_file) + ".edit",
                         thread_local=False)
    with edit_lock.acquire(timeout=settings.lock_timeout):
        backup = Backup(project.root, cache_root)
        try:
            if pins:
                log("uv " + change.verb + " " + " ".join(pins))
                await _uv_change(uv, change, pins, project, env_python, settings)  # uv.lock gets these versions
            log("uv " + change.verb + " " + " ".join(specs))
            await _uv_change(uv, change, specs, project, env_python, settings)
            prepared = await pipeline.prepare(settings, cwd=folder, environ=environ, log=log)
        except BaseException as exc:  # uv's error, the env's, Ctrl-C (CancelledError): nothing stays recorded
            backup.restore()
            if isinstance(exc, UvkernelError):
                exc.restored = True  # type: ignore[attr-defined]
            raise
    return Outcome(prepared, specs, project.root / "pyproject.toml")


def summary(change: Change, outcome: Outcome, elapsed: float) -> str:
    what = ", ".join(outcome.recorded)
    where = "removed" if change.verb == "remove" else "recorded"
    first = f"uvkernel {change.verb}: {where} {what} in {outcome.pyproject} (uv.lock updated by uv)"
    return first + "\n" + env_summary(outcome.prepared, elapsed, title=f"uvkernel {change.verb}")
