"""Stage 2: create, reuse or repair the env so it inherits the host's site-packages.

Never deletes or rewrites what the user installed: a missing system-site flag is turned back on in place
(``uv venv --allow-existing``), an env from another interpreter is reported with the fix.  Work happens
under a per-env file lock, so concurrent starts build the env once; the state file is written last, so a
start killed half-way is resumed by the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import pwd
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from filelock import FileLock, Timeout

from .. import __version__
from ..errors import EnvError, UvError
from ..files import chmod_created, off_loop, read_input, write_atomic
from ..files import private_dir as _private_dir
from ..host import HostPython
from ..project import Project
from ..settings import UvKernelSettings
from ..progress import phase
from ..shared import Log
from ..uvbin import no_space, run_uv
from . import install, installed, protection, sync
from .protection import HostDist, host_distributions

STATE_FILE = ".uvkernel-state.json"
LAYER_PTH = "_uvkernel_host.pth"

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
        text = (env / "pyvenv.cfg").read_bytes().decode("utf-8", "replace")  # a garbled file reads as garbled values
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
    _private_dir(path)  # refused, never chmod-ed, when it is not one (files.private_dir)


def check_path(env: Path, interrupted: bool = False) -> None:
    """Refuse paths that are not a folder we may use, before anything is written.

    ``interrupted``: uvkernel's own creation of this env was killed half-way (see :func:`creation_marker`), so a
    folder without pyvenv.cfg is ours to finish, not a user's folder to refuse.
    """
    try:
        _check_path(env, interrupted)
    except PermissionError as exc:  # another user's env (a shared project folder): theirs, not readable here
        raise EnvError("ENV_NOT_READABLE", env=str(env), owner=_owner(env), detail=exc.strerror or str(exc),
                       name=(env.parent.name or "project")) from None


def _owner(path: Path) -> str:
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return "another user"
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _check_path(env: Path, interrupted: bool) -> None:
    if env.is_dir() and not os.access(env, os.R_OK | os.X_OK):
        raise PermissionError(13, "permission denied", str(env))
    if env.is_symlink() and not env.exists():
        raise EnvError("ENV_BROKEN_LINK", env=str(env), target=os.readlink(env))
    if env.exists() and not env.is_dir():
        raise EnvError("ENV_IS_FILE", env=str(env))
    if (not interrupted and env.is_dir() and not (env / "pyvenv.cfg").exists() and any(env.iterdir())
            and not made_by_uvkernel(env)):
        raise EnvError("ENV_NOT_A_VENV", env=str(env))


def check_project_env(project: Project, interrupted: bool = False) -> None:
    """:func:`check_path` for a project's env, saying where the path came from when a setting chose it."""
    try:
        check_path(project.env_path, interrupted=interrupted)
    except EnvError as exc:
        if project.env_reason == "UV_PROJECT_ENVIRONMENT":
            exc.facts.append(("set by", "the UV_PROJECT_ENVIRONMENT environment variable"))
            exc.args = (exc.render(),)
        raise


def made_by_uvkernel(env: Path) -> bool:
    """Is ``env`` a venv uvkernel made, whose pyvenv.cfg went missing?  Its own state file says so, and the layout
    is a venv's (bin/, lib/pythonX.Y/site-packages).  Never a conda prefix or a full Python installation (their
    stdlib, conda-meta): those stay ENV_NOT_A_VENV even with a stray state file."""
    state = read_state(env)
    if not (isinstance(state, dict) and state.get("fingerprint") and state.get("host")):
        return False
    if (env / "conda-meta").exists() or list(env.glob("lib/python3*/os.py")):
        return False
    return (env / "bin").is_dir() and bool(list(env.glob("lib/python3*/site-packages")))


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
    expected = os.path.realpath(host.interpreter_for_env)
    version = cfg.get("version_info") or cfg.get("version") or ""
    same_version = not version or version.split(".")[:2] == [str(v) for v in host.version[:2]]
    same_home = bool(cfg.get("home")) and os.path.realpath(cfg["home"]) == os.path.dirname(expected)
    env_python = _env_python(env)
    if env_python is None:
        # the bin/python* links were deleted or point nowhere: pyvenv.cfg still says which interpreter made the
        # env (repaired in place by cheap_check/_repair when it is the host's)
        short = ".".join(version.split(".")[:2])
        return same_home and same_version, os.path.join(cfg.get("home", "?"), f"python{short}" if short else "python")
    target = os.path.realpath(env_python)
    if target == expected:
        return same_version, target
    return same_home and same_version, target


def _env_python(env: Path) -> Path | None:
    """The first of bin/python, bin/python3 that leads to an existing file."""
    for name in ("python", "python3"):
        if (env / "bin" / name).exists():
            return env / "bin" / name
    return None


def interpreter_links(env: Path, version: tuple[int, ...]) -> list[str]:
    """The env's interpreter names (bin/python, python3, python3.X) that are missing or lead nowhere."""
    names = ("python", f"python{version[0]}", f"python{version[0]}.{version[1]}")
    return [name for name in names if not (env / "bin" / name).exists()]


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


_ENV_FORMAT = 2  # 2: the host's packages in two tiers (what an env holds changed)


def fingerprint(project: Project, host: HostPython, settings: UvKernelSettings) -> str:
    """Everything that decides the env's contents; a match means the env needs no uv call at all."""
    h = hashlib.sha256()
    h.update(f"{__version__}\0{host.executable}\0{host.version_str}\0{host.has_ipykernel}\0".encode())
    # a package added, removed or upgraded in the host changes what the env must leave to it
    h.update(protection.signature(host.site_packages).encode())
    h.update(json.dumps([_ENV_FORMAT, settings.install_ipykernel, settings.project_dependencies,
                         sorted(settings.extras), sorted(settings.dependency_groups), sorted(settings.allow_shadowing),
                         settings.host_version_conflicts, settings.host_packages, sorted(settings.protected_packages),
                         settings.no_default_groups, sorted(settings.no_groups),
                         sorted(settings.required_packages)]).encode())
    if project.root is not None:
        # every file uv reads to decide what the project is (workspace members too) and uv's own variables
        for path in sync.project_files(project):
            try:
                h.update(str(path).encode() + read_input(path))
            except OSError:
                h.update(str(path).encode() + b"-absent")
        h.update(json.dumps(sync.uv_variables()).encode())
    return h.hexdigest()


def read_state(env: Path) -> dict[str, Any]:
    """uvkernel's state file, or {} when it is missing, truncated, garbled or not a JSON object (the env is then
    checked and its state written again)."""
    try:
        data = json.loads((env / STATE_FILE).read_bytes())
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return {}
    return data if isinstance(data, dict) else {}


def write_state(env: Path, state: dict[str, Any]) -> None:
    write_atomic(env / STATE_FILE, json.dumps(state, indent=1))


def layer_line(host: HostPython) -> str:
    """The .pth line that puts a venv host's site-packages below the env's own."""
    return "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in layer_dirs(host)) + "\n"


SYSTEM_SITE_WRONG = "system-site-packages flag differs from the host's"
LINKS_BROKEN = "interpreter links missing or broken"
ACTIVATE_MISSING = "activation script missing (bin/activate)"
PIP_MISSING = "pip command missing (bin/pip)"
CFG_GARBLED = "pyvenv.cfg is not UTF-8 text (Python cannot start from the env)"
_UV_VENV_REPAIRS = (SYSTEM_SITE_WRONG, LINKS_BROKEN, ACTIVATE_MISSING, CFG_GARBLED)  # what `uv venv --allow-existing` puts back


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
    try:
        (env / "pyvenv.cfg").read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        problems.append(CFG_GARBLED)
    except OSError:
        pass
    links = interpreter_links(env, host.version)
    if links:
        problems.append(f"{LINKS_BROKEN} (bin/{', bin/'.join(links)})")
    if not (env / "bin" / "activate").exists():
        problems.append(ACTIVATE_MISSING)
    if not any((env / "bin" / name).exists() for name in ("pip", "pip3")):
        problems.append(PIP_MISSING)
    return problems


async def _uv(args: list[str], step: str, settings: UvKernelSettings) -> None:
    await run_uv(args, step=step, timeout=settings.uv_timeout, disk=str(args[-1]))


WAITING = "waiting for another start"  # the phase while another start holds the env's lock


async def _acquire(lock: FileLock, timeout: float, env: Path) -> None:
    """Wait for the env's lock without holding a thread: many starts of one project (16 notebooks opened at once)
    would otherwise fill the server's default executor while they wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    waited = False
    while True:
        try:
            lock.acquire(timeout=0)
            if waited:  # back to the stage the wait interrupted
                phase("preparing the env")
            return
        except Timeout:
            if loop.time() >= deadline:
                raise EnvError("LOCK_TIMEOUT", env=str(env), timeout=int(timeout), lock=lock.lock_file) from None
            if not waited:
                # a start that found another one building this env says so: a user who retried a start (a
                # proxy gave up on the first) sees this one wait for that build instead of starting another
                phase(WAITING)
                waited = True
            await asyncio.sleep(0.05)


def lock_for(env: Path, cache_root: Path) -> FileLock:
    private_dir(cache_root / "locks")
    digest = hashlib.sha256(str(env).encode()).hexdigest()[:24]
    path = cache_root / "locks" / f"{digest}.lock"
    check_flock(path, env)
    return FileLock(str(path), thread_local=False)


@contextlib.asynccontextmanager
async def locked(env: Path, cache_root: Path, timeout: float) -> AsyncIterator[FileLock]:
    """Hold the env's lock (the one every start preparing ``env`` takes) for the body; LOCK_TIMEOUT after ``timeout``."""
    lock = lock_for(env, cache_root)
    await _acquire(lock, timeout, env)
    try:
        yield lock
    finally:
        lock.release()


# flock answers these when another process holds the lock: the lock works
_HELD = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES}


def check_flock(path: Path, env: Path) -> None:
    """Refuse, with the reason, a lock folder on a file system without working flock (NFS without lockd:
    ENOLCK; some FUSE and network file systems: ENOSYS, EOPNOTSUPP, EINVAL).  Without it, concurrent starts
    would build one env at the same time; filelock's own answers differ by version (an error, or a silent
    switch to a marker file that a killed start leaves behind)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return  # not a flock problem: FileLock reports it (not writable, disk full) where it is taken
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in _HELD:
            raise EnvError("LOCK_UNSUPPORTED", env=str(env), lock=str(path), folder=str(path.parent.parent),
                           detail=f"flock failed: {os.strerror(exc.errno) if exc.errno else exc}") from None
    finally:
        os.close(fd)  # closing releases a flock this probe took


async def prepare(
    project: Project,
    host: HostPython,
    settings: UvKernelSettings,
    *,
    uv: str,
    cache_root: Path,
    log: Log = lambda _m: None,
) -> Env:
    env_path = project.env_path
    marker = creation_marker(env_path, cache_root)
    # uvkernel gc removes a cache env while it holds the env's lock: a look at the path before the lock could see
    # an env half removed (ENV_NOT_A_VENV) or reuse one about to vanish, so for a cache env every check of the
    # path comes after the lock.  A project's env is never gc's: its warm start stays lock-free.
    if not project.in_cache:
        check_project_env(project, interrupted=marker.exists())
    site = site_packages_of(env_path, host.version)
    env = Env(env_path, env_path / "bin" / "python", site, layer=layer_dirs(host))
    wanted = await off_loop("reading the project's files", fingerprint, project, host, settings)

    # Fast path: a finished env whose inputs did not change and whose state (interpreter, system-site flag, host
    # layer) is still right.  Files only: no uv, no interpreter.
    if not project.in_cache and _reusable(env, host, wanted):
        await _find_shadowing(env, settings)
        return env

    async with locked(env_path, cache_root, settings.lock_timeout):
        try:
            if project.in_cache:
                check_project_env(project, interrupted=marker.exists())
                if _reusable(env, host, wanted):
                    await _find_shadowing(env, settings)
                    return env
            await _prepare_locked(env, project, host, settings, uv, wanted, log, marker)
        except OSError as exc:  # writing into the env failed (disk full, read-only, permissions)
            if exc.errno == errno.ENOSPC:
                raise EnvError("DISK_FULL", env=str(env_path), step="wrote uvkernel's files into the env",
                               detail=str(exc)) from None
            raise EnvError("ENV_NOT_WRITABLE", env=str(env_path), detail=str(exc)) from None
    await _find_shadowing(env, settings)
    return env


def _from_state(env: Env, state: dict[str, Any]) -> None:
    ipykernel_from, plan = state.get("ipykernel_from"), state.get("plan")
    env.ipykernel_from = ipykernel_from if isinstance(ipykernel_from, str) else ""
    env.plan = plan if isinstance(plan, dict) else {}


def _state_host_dists(state: dict[str, Any]) -> dict[str, HostDist]:
    """The host listing the state file keeps ({name: [name, version, location]}); entries of another shape
    (a garbled or older file) are skipped."""
    listing = state.get("host_dists")
    if not isinstance(listing, dict):
        return {}
    return {k: HostDist(v[0], v[1], v[2], requires=[], protected=bool(v[3]) if len(v) == 4 else True)
            for k, v in listing.items()
            if isinstance(v, list) and len(v) in (3, 4) and all(isinstance(x, str) for x in v[:3])}


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
    host = _state_host_dists(read_state(env.path))
    env_dists = await installed.env_distributions(env.site_packages)
    env.shadowing = installed.shadowing(env_dists, host, settings.allow_shadowing)
    try:
        write_atomic(saved, json.dumps({"key": key, "shadowing": env.shadowing}))
    except OSError:
        pass  # a read-only env answers from its dist-infos every time


async def _repair(env: Env, host: HostPython, settings: UvKernelSettings, uv: str, log: Log) -> None:
    """Put the env's state back without touching its packages."""
    problems = cheap_check(env.path, host)
    if any(p.startswith(_UV_VENV_REPAIRS) for p in problems):
        # one `uv venv --allow-existing` puts back the flag, the interpreter links and the activation scripts,
        # keeping every installed package (and uvkernel's state file)
        flag = expected_system_site(host)
        repaired: list[str] = []
        for p in problems:
            if p.startswith(SYSTEM_SITE_WRONG):
                repaired.append(f"system-site-packages turned {'on' if flag else 'off'}")
            elif p.startswith(LINKS_BROKEN):
                repaired.append("recreated " + p[len(LINKS_BROKEN):].strip(" ()") + " (the interpreter links)")
            elif p == ACTIVATE_MISSING:
                repaired.append("recreated the activation scripts (bin/activate)")
            elif p == CFG_GARBLED:
                repaired.append("rewrote pyvenv.cfg, which was not UTF-8 text")
        log(f"repairing {env.path}: {'; '.join(repaired)}; installed packages are kept")
        await _uv([uv, "venv", "--allow-existing", *(["--system-site-packages"] if flag else []), "--no-project",
                   "--python", host.interpreter_for_env, "--no-python-downloads", str(env.path)],
                  "repaired the env in place", settings)
        env.actions.extend(f"repaired: {r}" for r in repaired)
    pth = env.site_packages / LAYER_PTH
    if host.layered:
        line = layer_line(host)
        if not pth.exists() or pth.read_text() != line:
            env.site_packages.mkdir(parents=True, exist_ok=True)
            write_atomic(pth, line)
            env.actions.append(f"layered the host venv {host.prefix} below the env")
    elif pth.exists():
        pth.unlink()  # uvkernel's own file, from a host that was a venv
        env.actions.append("removed the layer of an earlier venv host")
    install.write_pip_command(env.path)
    if PIP_MISSING in problems and not any(a.startswith(("created", "finished a creation")) for a in env.actions):
        env.actions.append("repaired: recreated bin/pip (runs the env's pip)")


async def _restore_pyvenv_cfg(env: Env, host: HostPython, settings: UvKernelSettings, uv: str, log: Log) -> None:
    """An env uvkernel made (its state file says so) lost its pyvenv.cfg: rebuild it in place when the layout is
    the host's (lib/pythonX.Y), keeping every package.  Anything else is refused, never rebuilt."""
    if (env.path / "pyvenv.cfg").exists() or not made_by_uvkernel(env.path):
        return
    state = read_state(env.path)
    made_from = str(state.get("host", ""))
    same_host = os.path.realpath(made_from) in {os.path.realpath(host.executable),
                                                os.path.realpath(host.interpreter_for_env)}
    if not same_host or not env.site_packages.is_dir():
        raise EnvError("ENV_OTHER_INTERPRETER", env=str(env.path), env_python=made_from or "unknown",
                       host_python=host.interpreter_for_env)
    flag = expected_system_site(host)
    log(f"repairing {env.path}: its pyvenv.cfg is missing; rebuilding it for {host.interpreter_for_env}, "
        "installed packages are kept")
    await _uv([uv, "venv", "--allow-existing", *(["--system-site-packages"] if flag else []), "--no-project",
               "--python", host.interpreter_for_env, "--no-python-downloads", str(env.path)],
              "rebuilt the env's pyvenv.cfg", settings)
    env.actions.append("repaired: rebuilt the missing pyvenv.cfg (installed packages kept)")


def _reusable(env: Env, host: HostPython, wanted: str) -> bool:
    """Is the env finished for these inputs, with its interpreter and host layer still right?  (Then it is
    used as it is, marked reused.)"""
    if (env.path / "pyvenv.cfg").exists() and read_state(env.path).get("fingerprint") == wanted:
        same, _ = same_interpreter(env.path, host)
        if same and not cheap_check(env.path, host):
            _from_state(env, read_state(env.path))
            env.reused = True
            return True
    return False


async def _prepare_locked(env: Env, project: Project, host: HostPython, settings: UvKernelSettings, uv: str,
                          wanted: str, log: Log, marker: Path) -> None:
    # what the host provides: read concurrently with the uv calls below (it starts the host's python)
    listing = asyncio.ensure_future(host_distributions(host, marker.parent.parent))
    try:
        await _restore_pyvenv_cfg(env, host, settings, uv, log)
        if not await _make_or_repair(env, project, host, settings, uv, wanted, log, marker):
            await _install_missing(env, project, host, settings, uv, wanted, log, marker.parent.parent, listing)
    finally:
        if not listing.done():
            listing.cancel()


async def _make_or_repair(env: Env, project: Project, host: HostPython, settings: UvKernelSettings, uv: str,
                          wanted: str, log: Log, marker: Path) -> bool:
    """The venv itself: created (or its interrupted creation finished), refused when another interpreter made it,
    its state put back (system-site flag, interpreter links, host layer, bin/pip).  True when its contents are
    already right for ``wanted`` (another start finished them while this one waited for the lock): nothing is
    installed then."""
    env_path = env.path
    interrupted = marker.exists()
    check_path(env_path, interrupted=interrupted)
    if interrupted and env_path.is_dir():
        log(f"finishing the creation of {env_path}, interrupted by an earlier start")
        await _uv([uv, "venv", "--allow-existing", *(["--system-site-packages"] if expected_system_site(host) else []),
                   "--no-project", "--python", host.interpreter_for_env, "--no-python-downloads", str(env_path)],
                  "created the env", settings)
        chmod_created(env_path)
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
            return True
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
                   # one argument: a folder named "-myproj" is the prompt's value, not an option
                   f"--prompt={(project.root or project.notebook_dir).name or 'uvkernel'}", str(env_path)],
                  "created the env", settings)
        _check_created(env_path, uv)
        chmod_created(env_path)  # envs uvkernel creates are readable by their owner only
        marker.unlink()
        env.actions.append("created")
    await _repair(env, host, settings, uv, log)
    return False


async def _install_missing(env: Env, project: Project, host: HostPython, settings: UvKernelSettings, uv: str,
                           wanted: str, log: Log, cache_root: Path,
                           listing: "asyncio.Future[dict[str, HostDist]]") -> None:
    """What the env lacks, leaving the host's packages to the host: the project's dependencies, ipykernel and pip
    where the host has none; then the state file, last, so a start killed before it is resumed by the next."""
    env_path = env.path
    # the host's distributions in two tiers: the protected stack, and preferences (protection's doc)
    host_dists: dict[str, HostDist] = await protection.marked(await listing, settings)
    install.write_host_files(env_path, host_dists, settings.allow_shadowing)
    extra: list[str] = []  # what the kernel needs and the host lacks
    if not host.has_ipykernel:
        if settings.install_ipykernel:
            extra.append("ipykernel")
        env.ipykernel_from = "env"
    else:
        env.ipykernel_from = "host"
    if "pip" not in host_dists:
        extra.append("pip")  # %pip runs the env's python -m pip: the host has none to inherit
    try:
        if settings.project_dependencies and project.root is not None:
            synced = await sync.sync(project, env, host_dists, host, settings, uv=uv, cache_root=cache_root, log=log)
            env.plan = synced.to_json()
            if synced.installed:
                env.actions.append("installed " + ", ".join(synced.installed))
        if extra:
            # resolved against the host and against what the project installed (kept at its versions)
            present = await installed.env_distributions(env.site_packages)
            the_plan = await install.install(
                extra, uv=uv, env_python=str(env.python), host=host_dists, python_version=host.version,
                env_site_packages=env.site_packages, allow_shadowing=settings.allow_shadowing,
                locked=[f"{d.name}=={d.version}" for d in present.values()], root=str(project.root or ""),
                cwd=project.root, timeout=settings.uv_timeout, log=log, what="installed the kernel's own packages")
            if the_plan.installed:
                env.actions.append("installed " + ", ".join(the_plan.installed))
                env.plan["kernel_packages"] = the_plan.installed
    except UvError as exc:
        if no_space(exc.detail):
            raise EnvError("DISK_FULL", env=str(env_path), step="installed the project's dependencies",
                           detail=exc.detail) from None
        raise
    write_state(env_path, {"fingerprint": wanted, "uvkernel": __version__, "host": host.executable,
                           "ipykernel_from": env.ipykernel_from, "plan": env.plan,
                           "host_dists": {k: [d.name, d.version, d.location, d.protected]
                                          for k, d in host_dists.items()},
                           "python": sys.version.split()[0]})


def _check_created(env_path: Path, uv: str) -> None:
    """`uv venv` said it succeeded: the env must be there (a "uv" that is another program or a stub exits 0 too)."""
    if not (env_path / "pyvenv.cfg").is_file():
        raise UvError("UV_DID_NOTHING", uv=uv, env=str(env_path))


def _check_writable(parent: Path, env_path: Path) -> None:
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EnvError("ENV_NOT_WRITABLE", env=str(env_path), detail=f"{existing} is not writable")
