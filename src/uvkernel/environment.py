"""Stage 2: create, reuse or repair the env so it inherits the host's site-packages.

Never deletes or rewrites what the user installed: a missing system-site flag is turned back on in place
(``uv venv --allow-existing``), an env from another interpreter is reported with the fix.  Work happens
under a per-env file lock, so concurrent starts build the env once; the state file is written last, so a
start killed half-way is resumed by the next one.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock, Timeout

from . import __version__, dependencies, host_packages, installers, project_dependencies
from .errors import EnvError, UvError
from .host import HostPython
from .host_packages import HostDist, host_distributions
from .project import Project
from .settings import UvKernelSettings
from .uvbin import no_space, run_uv

STATE_FILE = ".uvkernel-state.json"
LAYER_PTH = "_uvkernel_host.pth"

Log = Callable[[str], None]


@dataclass
class Env:
    path: Path
    python: Path
    site_packages: Path
    actions: list[str] = field(default_factory=list)  # what this start did ("created", "repaired …")
    ipykernel_from: str = ""  # "host" or "env"
    reused: bool = False
    plan: dict[str, Any] = field(default_factory=dict)  # dependency plan (from host / installed / shadowed)
    shadowing: list[dict[str, Any]] = field(default_factory=list)  # env packages that hide host ones
    layer: list[str] = field(default_factory=list)  # host venv site-packages layered below the env's own

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "python": str(self.python), "site_packages": str(self.site_packages),
                "actions": self.actions, "ipykernel_from": self.ipykernel_from, "reused": self.reused,
                "dependencies": self.plan, "shadowing": self.shadowing, "host_layer": self.layer}


def read_pyvenv_cfg(env: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        text = (env / "pyvenv.cfg").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        if "=" in line:
            key, _, value = line.partition("=")
            values[key.strip().lower()] = value.strip()
    return values


def site_packages_of(env: Path, version: tuple[int, ...]) -> Path:
    return env / "lib" / f"python{version[0]}.{version[1]}" / "site-packages"


def private_dir(path: Path) -> None:
    """Create a folder only its owner can read (envs and caches of other users stay out of reach)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.chmod(path, stat.S_IRWXU)
    except OSError:
        pass


def check_path(env: Path, interrupted: bool = False) -> None:
    """Refuse paths that are not a folder we may use, before anything is written.

    ``interrupted``: uvkernel's own creation of this env was killed half-way (see :func:`creation_marker`), so a
    folder without pyvenv.cfg is ours to finish, not a user's folder to refuse.
    """
    if env.is_symlink() and not env.exists():
        raise EnvError("ENV_BROKEN_LINK", env=str(env), target=os.readlink(env))
    if env.exists() and not env.is_dir():
        raise EnvError("ENV_IS_FILE", env=str(env))
    if not interrupted and env.is_dir() and not (env / "pyvenv.cfg").exists() and any(env.iterdir()):
        raise EnvError("ENV_NOT_A_VENV", env=str(env))


def creation_marker(env: Path, cache_root: Path) -> Path:
    """Present while uvkernel creates ``env``: a start killed during `uv venv` leaves it behind, and the next start
    finishes the creation (``uv venv --allow-existing``) instead of refusing a folder without pyvenv.cfg."""
    digest = hashlib.sha256(str(env).encode()).hexdigest()[:24]
    return cache_root / "locks" / f"{digest}.creating"


def same_interpreter(env: Path, host: HostPython) -> tuple[bool, str]:
    """Is the env built on the interpreter we would build it on?  Returns (same, env's interpreter).

    The same installation may be reached through another name (python3 vs python3.11), so the link target and
    pyvenv.cfg's ``home`` both count; the Python version must match too (an in-place upgrade from 3.11 to
    3.12 keeps the path but leaves the env's lib/python3.11 unread).
    """
    cfg = read_pyvenv_cfg(env)
    env_python = env / "bin" / "python"
    target = os.path.realpath(env_python) if env_python.exists() else cfg.get("home", "?") + "/python"
    expected = os.path.realpath(host.interpreter_for_env)
    version = cfg.get("version_info") or cfg.get("version") or ""
    same_version = not version or version.split(".")[:2] == [str(v) for v in host.version[:2]]
    if os.path.realpath(target) == expected:
        return same_version, target
    same_home = bool(cfg.get("home")) and os.path.realpath(cfg["home"]) == os.path.dirname(expected)
    return same_home and same_version and env_python.exists(), target


def expected_system_site(host: HostPython) -> bool:
    """Plain and conda hosts: inherit their site-packages.  A venv host: inherit the base's only if it does."""
    if not host.layered:
        return True
    return read_pyvenv_cfg(Path(host.prefix)).get("include-system-site-packages", "false").lower() == "true"


def layer_dirs(host: HostPython) -> list[str]:
    """A venv host's own site-packages folders (not its base's, which system-site-packages brings)."""
    if not host.layered:
        return []
    prefix = os.path.realpath(host.prefix) + os.sep
    dirs: list[str] = []
    for d in host.site_packages:
        real = os.path.realpath(d)
        if real.startswith(prefix) and os.path.isdir(real) and real not in map(os.path.realpath, dirs):
            dirs.append(d)  # lib64 -> lib links name one folder twice
    return dirs


def fingerprint(project: Project, host: HostPython, settings: UvKernelSettings) -> str:
    """Everything that decides the env's contents; a match means the env needs no uv call at all."""
    h = hashlib.sha256()
    h.update(f"{__version__}\0{host.executable}\0{host.version_str}\0{host.has_ipykernel}\0".encode())
    # a package added, removed or upgraded in the host changes what the env must leave to it
    h.update(host_packages.signature(host.site_packages).encode())
    h.update(json.dumps([settings.install_ipykernel, settings.project_dependencies, sorted(settings.extras),
                         sorted(settings.dependency_groups), sorted(settings.allow_shadowing)]).encode())
    if project.root is not None:
        for name in ("pyproject.toml", "uv.lock"):
            try:
                h.update(name.encode() + (project.root / name).read_bytes())
            except OSError:
                h.update(name.encode() + b"-absent")
    return h.hexdigest()


def read_state(env: Path) -> dict[str, Any]:
    try:
        return json.loads((env / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_state(env: Path, state: dict[str, Any]) -> None:
    tmp = env / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, env / STATE_FILE)


def layer_line(host: HostPython) -> str:
    """The .pth line that puts a venv host's site-packages below the env's own."""
    return "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in layer_dirs(host)) + "\n"


SYSTEM_SITE_WRONG = "system-site-packages flag differs from the host's"


def cheap_check(env: Path, host: HostPython) -> list[str]:
    """What is wrong with an existing env, read from files only (no subprocess): each one is repairable."""
    problems = []
    cfg = read_pyvenv_cfg(env)
    flag = cfg.get("include-system-site-packages", "").lower() == "true"
    if flag != expected_system_site(host):
        problems.append(SYSTEM_SITE_WRONG + (" (off)" if not flag else " (on)"))
    pth = site_packages_of(env, host.version) / LAYER_PTH
    if host.layered:
        try:
            if pth.read_text() != layer_line(host):
                problems.append("host layer out of date")
        except OSError:
            problems.append("host layer missing")
    elif pth.exists():
        problems.append("host layer left from an earlier venv host")
    return problems


async def _uv(args: list[str], step: str, settings: UvKernelSettings) -> None:
    await run_uv(args, step=step, timeout=settings.uv_timeout, disk=str(args[-1]))


async def _acquire(lock: FileLock, timeout: float, env: Path) -> None:
    """Wait for the env's lock without holding a thread: many starts of one project (16 notebooks opened at once)
    would otherwise fill the server's default executor while they wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            lock.acquire(timeout=0)
            return
        except Timeout:
            if loop.time() >= deadline:
                raise EnvError("LOCK_TIMEOUT", env=str(env), timeout=int(timeout), lock=lock.lock_file) from None
            await asyncio.sleep(0.05)


def lock_for(env: Path, cache_root: Path) -> FileLock:
    private_dir(cache_root / "locks")
    digest = hashlib.sha256(str(env).encode()).hexdigest()[:24]
    return FileLock(str(cache_root / "locks" / f"{digest}.lock"), thread_local=False)


async def prepare(
    project: Project,
    host: HostPython,
    settings: UvKernelSettings,
    *,
    uv: str,
    cache_root: Path,
    log: Log = lambda _m: None,
    project_requirements: Callable[..., Any] | None = None,
) -> Env:
    env_path = project.env_path
    marker = creation_marker(env_path, cache_root)
    check_path(env_path, interrupted=marker.exists())
    site = site_packages_of(env_path, host.version)
    env = Env(env_path, env_path / "bin" / "python", site, layer=layer_dirs(host))
    wanted = fingerprint(project, host, settings)

    # Fast path without the lock: a finished env whose inputs did not change and whose state (interpreter,
    # system-site flag, host layer) is still right.  Files only: no uv, no interpreter.
    if (env_path / "pyvenv.cfg").exists() and read_state(env_path).get("fingerprint") == wanted:
        same, _ = same_interpreter(env_path, host)
        if same and not cheap_check(env_path, host):
            _from_state(env, read_state(env_path))
            env.reused = True
            await _find_shadowing(env, settings)
            return env

    lock = lock_for(env_path, cache_root)
    await _acquire(lock, settings.lock_timeout, env_path)
    try:
        await _prepare_locked(env, project, host, settings, uv, wanted, log, project_requirements, marker)
    except OSError as exc:  # writing into the env failed (disk full, read-only, permissions)
        if exc.errno == errno.ENOSPC:
            raise EnvError("DISK_FULL", env=str(env_path), step="wrote uvkernel's files into the env",
                           detail=str(exc)) from None
        raise EnvError("ENV_NOT_WRITABLE", env=str(env_path), detail=str(exc)) from None
    finally:
        lock.release()
    await _find_shadowing(env, settings)
    return env


def _from_state(env: Env, state: dict[str, Any]) -> None:
    env.ipykernel_from = state.get("ipykernel_from", "")
    env.plan = state.get("plan", {})


SHADOWING_FILE = ".uvkernel-shadowing.json"


def _shadowing_key(env: Env, settings: UvKernelSettings) -> list[Any]:
    """What the shadowing list depends on: the env's site-packages (an install, upgrade or removal changes the
    folder's mtime), the state (the host's distributions) and the allowed names."""
    key: list[Any] = [__version__, sorted(settings.allow_shadowing)]
    for path in (env.site_packages, env.path / STATE_FILE):
        try:
            st = os.stat(path)
            key.append([st.st_mtime_ns, st.st_size, st.st_ino])
        except OSError:
            key.append(None)
    return key


async def _find_shadowing(env: Env, settings: UvKernelSettings) -> None:
    """Every env package that hides a host one (for the report, ``uvkernel check`` and ``unshadow``).

    Reading every dist-info of the env costs time in proportion to its size, so the answer is kept beside the
    state and read again only when the env's site-packages or the state changed (not on a warm start)."""
    key = _shadowing_key(env, settings)
    saved = env.path / SHADOWING_FILE
    try:
        data = json.loads(saved.read_text())
        if data.get("key") == key and isinstance(data.get("shadowing"), list):
            env.shadowing = data["shadowing"]
            return
    except (OSError, ValueError, AttributeError):
        pass
    host = {k: HostDist(*v, requires=[]) for k, v in (read_state(env.path).get("host_dists") or {}).items()}
    env_dists = await dependencies.env_distributions(env.site_packages)
    env.shadowing = dependencies.shadowing(env_dists, host, settings.allow_shadowing)
    try:
        tmp = saved.with_name(f"{saved.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "shadowing": env.shadowing}))
        os.replace(tmp, saved)
    except OSError:
        pass  # a read-only env answers from its dist-infos every time


async def _repair(env: Env, host: HostPython, settings: UvKernelSettings, uv: str, log: Log) -> None:
    """Put the env's state back without touching its packages."""
    problems = cheap_check(env.path, host)
    if any(p.startswith(SYSTEM_SITE_WRONG) for p in problems):
        flag = expected_system_site(host)
        word = "on" if flag else "off (the host venv does not inherit its base either)"
        log(f"repairing {env.path}: turning system-site-packages {word}; installed packages are kept")
        await _uv([uv, "venv", "--allow-existing", *(["--system-site-packages"] if flag else []), "--no-project",
                   "--python", host.interpreter_for_env, "--no-python-downloads", str(env.path)],
                  f"turned system-site-packages {'on' if flag else 'off'}", settings)
        env.actions.append(f"repaired: system-site-packages turned {'on' if flag else 'off'}")
    pth = env.site_packages / LAYER_PTH
    if host.layered:
        line = layer_line(host)
        if not pth.exists() or pth.read_text() != line:
            env.site_packages.mkdir(parents=True, exist_ok=True)
            tmp = pth.with_name(pth.name + ".tmp")
            tmp.write_text(line)
            os.replace(tmp, pth)
            env.actions.append(f"layered the host venv {host.prefix} below the env")
    elif pth.exists():
        pth.unlink()  # uvkernel's own file, from a host that was a venv
        env.actions.append("removed the layer of an earlier venv host")
    installers.write_pip_command(env.path)


async def _prepare_locked(env: Env, project: Project, host: HostPython, settings: UvKernelSettings, uv: str,
                          wanted: str, log: Log, project_requirements: Callable[..., Any] | None,
                          marker: Path) -> None:
    # what the host provides: read concurrently with the uv calls below (it starts the host's python)
    listing = asyncio.ensure_future(host_distributions(host, marker.parent.parent))
    try:
        await _prepare_env_locked(env, project, host, settings, uv, wanted, log, project_requirements, marker,
                                  listing)
    finally:
        if not listing.done():
            listing.cancel()


async def _prepare_env_locked(env: Env, project: Project, host: HostPython, settings: UvKernelSettings, uv: str,
                              wanted: str, log: Log, project_requirements: Callable[..., Any] | None,
                              marker: Path, listing: "asyncio.Future[dict[str, HostDist]]") -> None:
    env_path = env.path
    interrupted = marker.exists()
    check_path(env_path, interrupted=interrupted)
    if interrupted and env_path.is_dir():
        log(f"finishing the creation of {env_path}, interrupted by an earlier start")
        await _uv([uv, "venv", "--allow-existing", *(["--system-site-packages"] if expected_system_site(host) else []),
                   "--no-project", "--python", host.interpreter_for_env, "--no-python-downloads", str(env_path)],
                  "created the env", settings)
        private_dir(env_path)
        marker.unlink()
        env.actions.append("finished a creation interrupted by an earlier start")
    elif interrupted:
        marker.unlink()
    if (env_path / "pyvenv.cfg").exists():
        same, env_python = same_interpreter(env_path, host)
        if not same:
            raise EnvError("ENV_OTHER_INTERPRETER", env=str(env_path), env_python=env_python,
                           host_python=host.interpreter_for_env)
        if read_state(env_path).get("fingerprint") == wanted:
            # the contents are right (or another start finished them while we waited for the lock): at most
            # the state needs repair, no dependency work
            await _repair(env, host, settings, uv, log)
            _from_state(env, read_state(env_path))
            env.reused = True
            return
    else:
        if project.root is None or project.in_cache:
            private_dir(env_path.parent)
        else:
            _check_writable(env_path.parent, env_path)
        flag = expected_system_site(host)
        log(f"creating {env_path} from {host.interpreter_for_env}"
            + (" with system site-packages" if flag else "") + (f", layered on {host.prefix}" if host.layered else ""))
        marker.write_text(str(env_path) + "\n")
        await _uv([uv, "venv", *(["--system-site-packages"] if flag else []), "--no-project",
                   "--python", host.interpreter_for_env, "--no-python-downloads",
                   "--prompt", (project.root or project.notebook_dir).name or "uvkernel", str(env_path)],
                  "created the env", settings)
        private_dir(env_path)  # envs uvkernel creates are readable by their owner only
        marker.unlink()
        env.actions.append("created")
    await _repair(env, host, settings, uv, log)

    host_dists: dict[str, HostDist] = await listing
    installers.write_host_files(env_path, host_dists, settings.allow_shadowing)
    requirements: list[str] = []
    if not host.has_ipykernel:
        if settings.install_ipykernel:
            requirements.append("ipykernel")
        env.ipykernel_from = "env"
    else:
        env.ipykernel_from = "host"
    if "pip" not in host_dists:
        requirements.append("pip")  # %pip runs the env's python -m pip: the host has none to inherit
    locked: list[str] = []
    sources: list[str] = []
    if project_requirements is not None and settings.project_dependencies and project.root is not None:
        found = await project_requirements(project, settings, uv)
        if isinstance(found, list):
            requirements.extend(found)
        else:
            requirements.extend(found.requirements)
            locked, sources = found.locked, found.sources
    try:
        the_plan = await dependencies.install(
            requirements, uv=uv, env_python=str(env.python), host=host_dists, python_version=host.version,
            env_site_packages=env.site_packages,
            allow_shadowing=settings.allow_shadowing, locked=locked, root=str(project.root or ""),
            cwd=project.root, timeout=settings.uv_timeout, log=log,
        )
    except UvError as exc:
        if no_space(exc.detail):
            raise EnvError("DISK_FULL", env=str(env_path), step="installed the project's dependencies",
                           detail=exc.detail) from None
        raise
    env.plan = {**the_plan.to_json(), "sources": sources}
    if the_plan.installed:
        env.actions.append("installed " + ", ".join(the_plan.installed))
    if settings.project_dependencies and project.root is not None and project_dependencies.is_package(project):
        # as uv sync does for a packaged project: the project itself, editable, its dependencies handled above
        await dependencies.install_editable(project.root, uv=uv, env_python=str(env.python), host=host_dists,
                                            allow_shadowing=settings.allow_shadowing, timeout=settings.uv_timeout,
                                            log=log)
        env.plan["project"] = f"{project.root} (editable)"
    write_state(env_path, {"fingerprint": wanted, "uvkernel": __version__, "host": host.executable,
                           "ipykernel_from": env.ipykernel_from, "plan": env.plan,
                           "host_dists": {k: [d.name, d.version, d.location] for k, d in host_dists.items()},
                           "python": sys.version.split()[0]})


def _check_writable(parent: Path, env_path: Path) -> None:
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EnvError("ENV_NOT_WRITABLE", env=str(env_path), detail=f"{existing} is not writable")
