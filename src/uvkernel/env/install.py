"""Installing into the env, and the files in it that keep every installer off the host's packages.

``install`` plans, resolves against the host and installs what the host does not provide, ``--no-deps`` and
with an ``--excludes`` file of every host name, so uv neither installs nor downloads the host's stack.

The kernel's own installers read files uvkernel writes into the env; ``launch.kernel_environment`` points the
kernel at them: ``UV_EXCLUDE`` (``!uv pip install``), ``PIP_CONSTRAINT`` (``%pip``/``!pip``), and a ``bin/pip``
so ``!pip`` is the env's pip and never the host's further down PATH.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import urllib.parse
from pathlib import Path
from typing import Iterable, Sequence

from packaging.requirements import Requirement

from ..errors import DependencyError
from ..files import write_atomic
from ..shared import Log, canonical
from ..uvbin import run_uv
from . import editables
from .installed import env_distributions, site_of
from .protection import HostDist, provided, write_excludes
from .requirements import exact_versions, normal_version, parse_requirement, satisfied
from .resolve import InstallPlan, plan, resolve, with_waived_pins

# For installs from inside the kernel: `!uv pip install` reads UV_EXCLUDE, `%pip install` PIP_CONSTRAINT.
HOST_EXCLUDES = ".uvkernel-host-provided.txt"
HOST_CONSTRAINTS = ".uvkernel-host-pins.txt"


def write_host_files(env_path: Path, host_dists: dict[str, HostDist], allow_shadowing: list[str]) -> None:
    """Files the kernel's installers read so they leave host packages alone (see launch.kernel_environment).

    HOST_EXCLUDES: every host name, for uv (``UV_EXCLUDE``): uv never installs or downloads them.
    HOST_CONSTRAINTS: the host's exact versions, for pip (``PIP_CONSTRAINT``): pip sees the host's packages
    and keeps them; a package that needs another version of one fails instead of shadowing it.
    """
    keep = provided(host_dists, allow_shadowing)
    names = sorted(d.name for d in keep.values())
    pins = sorted(p for p in (d.pin for d in keep.values()) if p)
    for name, lines in ((HOST_EXCLUDES, names), (HOST_CONSTRAINTS, pins)):
        write_atomic(env_path / name, "\n".join(lines) + "\n")


PIP_SHIM_MARK = "# uvkernel: pip for this env"
_PIP_SHIM = f"""#!/bin/sh
{PIP_SHIM_MARK} (uv venvs have no pip of their own). The env's python runs pip, so it installs here,
# never into the host; the kernel's PIP_CONSTRAINT keeps the host's packages.
exec "$(dirname -- "$0")/python" -m pip "$@"
"""


def write_pip_command(env_path: Path) -> None:
    """``!pip install X`` in the kernel must reach this env's pip, not the host's ``pip`` further down PATH."""
    for name in ("pip", "pip3"):
        target = env_path / "bin" / name
        if target.exists() or target.is_symlink():
            continue  # the env has a pip of its own (uv venv --seed, or pip installed into it)
        write_atomic(target, _PIP_SHIM, mode=0o755)


async def install(
    requirements: list[str],
    *,
    uv: str,
    env_python: str,
    host: dict[str, HostDist],
    python_version: tuple[int, ...],
    env_site_packages: str | Path | None = None,
    allow_shadowing: Iterable[str] = (),
    locked: Sequence[str] = (),
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
    if all(canonical(Requirement(r).name) in keep or host_satisfies(Requirement(r), host)
           for r in the_plan.requirements):
        return the_plan  # everything is the host's: no resolver, no network
    try:
        resolved = await resolve(the_plan.requirements, uv=uv, env_python=env_python, host=host,
                                 python_version=python_version, allow_shadowing=allow_shadowing, locked=locked,
                                 root=root, cwd=cwd, timeout=timeout)
    except DependencyError as exc:
        if not the_plan.unmet_pins:
            raise
        raise with_waived_pins(exc, the_plan) from None
    pinned = []
    for req, _via in resolved:
        key = canonical(req.name)
        if key in keep:
            the_plan.from_host[keep[key].name] = keep[key].version
        elif key in host and exact_versions([req]).get(key) == normal_version(host[key].version):
            the_plan.from_host[host[key].name] = host[key].version  # a preference that fits: the host's copy
        else:
            pinned.append(str(req))
    present = {k: d.version for k, d in (await env_distributions(env_site_packages or site_of(env_python))).items()}
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


def host_satisfies(req: Requirement, host: dict[str, HostDist]) -> bool:
    """Does the host's copy meet ``req`` as it is (no url, a version the specifier accepts)?"""
    dist = host.get(canonical(req.name))
    return dist is not None and not req.url and satisfied(req.specifier, dist.version)


def _already(line: str, present: dict[str, str]) -> bool:
    req = parse_requirement(line)
    if req is None or req.url:
        return False
    key = canonical(req.name)
    return key in present and exact_versions([req]).get(key) == normal_version(present[key])


async def install_editable(root: Path, *, uv: str, env_python: str, host: dict[str, HostDist],
                           allow_shadowing: Iterable[str] = (), timeout: float = 900,
                           log: Log = lambda _m: None, cache_root: Path | None = None) -> None:
    """The project itself, editable and without its dependencies (they were resolved against the host).

    With ``cache_root``, a build of the same unchanged source tree (uv's cache keys) is reused as ``uv sync``
    reuses its own, instead of building the editable again for every new env (editables.py)."""
    keep = provided(host, allow_shadowing)
    site = site_of(env_python)
    key = await asyncio.to_thread(editables.cache_key, root, site) if cache_root is not None else None
    folder = cache_root / "editables" / key if cache_root is not None and key else None
    wheel = editables.kept_wheel(folder) if folder is not None else None
    with tempfile.TemporaryDirectory(prefix="uvkernel-install-") as tmp:
        excludes = write_excludes(Path(tmp), keep)
        step = f"installed the project itself ({root}, editable)"
        fix = (f"fix the build configuration in {root}/pyproject.toml, or, when the project is not meant to be "
               "installed, set package = false under [tool.uv] there")
        argv = [uv, "pip", "install", "--python", env_python, "--no-deps", "--excludes", str(excludes)]
        if wheel is not None:
            log(f"uv pip install --no-deps -e {root} (its build kept from an earlier env: the tree is unchanged)")
            done = await run_uv([*argv, str(wheel)], step=step, timeout=timeout, cwd=root, fix=fix, check=False)
            dist_info = _dist_info_of(site, wheel) if done.returncode == 0 else None
            if dist_info is not None:
                await asyncio.to_thread(editables.mark_editable, dist_info, root)
                return
        log(f"uv pip install --no-deps -e {root}")
        await run_uv([*argv, "-e", str(root)], step=step, timeout=timeout, cwd=root, fix=fix)
    if folder is not None:
        dist_info = next((Path(d.dist_info) for d in (await env_distributions(site)).values()
                          if d.editable and _direct_url_is(Path(d.dist_info), root)), None)
        if dist_info is not None:
            await asyncio.to_thread(editables.keep, site, dist_info, folder)


def _dist_info_of(site: Path, wheel: Path) -> Path | None:
    name, version = wheel.name.split("-")[:2]
    found = site / f"{name}-{version}.dist-info"
    return found if found.is_dir() else None


def _direct_url_is(dist_info: Path, root: Path) -> bool:
    try:
        data = json.loads((dist_info / "direct_url.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("url") == root.resolve().as_uri() and \
        bool((data.get("dir_info") or {}).get("editable"))


# --- the editables a resolution names (workspace members, editable path sources) ------------------------------

def _editable_root(line: str) -> Path | None:
    text = line.strip()
    if not text.startswith("-e file://"):
        return None
    from_url = urllib.parse.urlparse(text[len("-e "):].strip())
    return Path(urllib.parse.unquote(from_url.path))


async def kept_editables(lines: list[str], env_python: str, cache_root: Path | None
                         ) -> tuple[list[str], dict[str, tuple[Path, Path]], list[Path]]:
    """``lines`` of a resolution without the editables whose build of the unchanged tree is kept; those as
    {name: (source folder, kept wheel)}; and the source folders of the editables to build (kept afterwards)."""
    rest: list[str] = []
    hits: dict[str, tuple[Path, Path]] = {}
    misses: list[Path] = []
    site = site_of(env_python)
    for line in lines:
        root = _editable_root(line) if cache_root is not None else None
        if root is None or cache_root is None:
            rest.append(line)
            continue
        key = await asyncio.to_thread(editables.cache_key, root, site)
        wheel = editables.kept_wheel(cache_root / "editables" / key) if key else None
        if wheel is None:
            rest.append(line)
            if key:
                misses.append(root)
        else:
            hits[canonical(wheel.name.split("-", 1)[0])] = (root, wheel)
    return rest, hits, misses


async def install_kept_editables(hits: dict[str, tuple[Path, Path]], *, uv: str, env_python: str, excludes: Path,
                                 cwd: Path | None, timeout: float, log: Log) -> None:
    """The kept builds, installed as wheels (no build), each then marked as the editable of its folder."""
    if not hits:
        return
    log("uv pip install --no-deps (the project's own editables, their builds kept from an earlier env: "
        + ", ".join(sorted(hits)) + ")")
    await run_uv([uv, "pip", "install", "--python", env_python, "--no-deps", "--excludes", str(excludes),
                  *[str(wheel) for _root, wheel in hits.values()]],
                 step="installed the project's own editables", timeout=timeout, cwd=cwd)
    site = site_of(env_python)
    for root, wheel in hits.values():
        dist_info = _dist_info_of(site, wheel)
        if dist_info is not None:
            await asyncio.to_thread(editables.mark_editable, dist_info, root)


async def keep_editables(roots: list[Path], env_python: str, cache_root: Path | None) -> None:
    """Keep the builds of the editables just installed from ``roots`` for the next env."""
    if not roots or cache_root is None:
        return
    site = site_of(env_python)
    dists = await env_distributions(site)
    for root in roots:
        key = await asyncio.to_thread(editables.cache_key, root, site)
        dist_info = next((Path(d.dist_info) for d in dists.values()
                          if d.editable and _direct_url_is(Path(d.dist_info), root)), None)
        if key and dist_info is not None:
            await asyncio.to_thread(editables.keep, site, dist_info, cache_root / "editables" / key)
