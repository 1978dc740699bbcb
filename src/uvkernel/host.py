"""The host interpreter: which one, why, and what it is (plain install, venv or conda prefix).

The rule, first match wins (documented in the README):
  1. ``host_python`` in the kernel spec config, a jupyter config file, or ``--host-python``;
  2. the ``UVKERNEL_HOST_PYTHON`` environment variable of the process starting the kernel;
  3. the interpreter running Jupyter itself (``sys.executable``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import process
from .errors import HostError
from .files import write_atomic

MINIMUM_PYTHON = (3, 9)
HOST_ENV_VAR = "UVKERNEL_HOST_PYTHON"

# Runs in the host interpreter (any version >= 3.6): stdlib only, prints one JSON object.
_INTERROGATE = r"""
import json, os, site, sys, sysconfig
try:
    import importlib.util as u
    ipk = u.find_spec("ipykernel") is not None
except Exception:
    ipk = False
paths = sysconfig.get_paths()
sp = []
for key in ("purelib", "platlib"):
    p = paths.get(key)
    if p and p not in sp:
        sp.append(p)
try:
    extra = [p for p in site.getsitepackages() if p not in sp]
except Exception:
    extra = []
# where installers put the console scripts of this interpreter's packages (Debian's pip: /usr/local/bin), and
# the interpreter's own folder
dirs = [paths.get("scripts"), os.path.dirname(sys.executable)]
print(json.dumps({
    "executable": sys.executable,
    "version": list(sys.version_info[:3]),
    "implementation": sys.implementation.name,
    "prefix": sys.prefix,
    "base_prefix": getattr(sys, "base_prefix", sys.prefix),
    "base_executable": getattr(sys, "_base_executable", sys.executable),
    "site_packages": sp + extra,
    "conda": os.path.isdir(os.path.join(sys.prefix, "conda-meta")),
    "has_ipykernel": ipk,
    "scripts": [d for i, d in enumerate(dirs) if d and d not in dirs[:i]],
}))
"""


@dataclass
class HostPython:
    path: str  # as given (absolute)
    reason: str  # why this interpreter was chosen
    executable: str
    version: tuple[int, int, int]
    implementation: str
    prefix: str
    base_prefix: str
    base_executable: str
    site_packages: list[str] = field(default_factory=list)
    conda: bool = False
    has_ipykernel: bool = False
    scripts: list[str] = field(default_factory=list)  # its console scripts' folders (torchrun), first the installers'

    @property
    def is_venv(self) -> bool:
        return os.path.realpath(self.prefix) != os.path.realpath(self.base_prefix)

    @property
    def layered(self) -> bool:
        """True when --system-site-packages alone does not inherit this host's packages (a venv host).

        A conda prefix is its own base interpreter, so --system-site-packages inherits it directly.
        """
        return self.is_venv

    @property
    def interpreter_for_env(self) -> str:
        """The interpreter the child env is built on.

        A venv host's packages live outside the base interpreter, so the child is built on the base and the
        host's site-packages are layered in with a .pth file.  A conda prefix is its own base interpreter.
        """
        if self.is_venv:
            return self.base_executable
        return self.executable

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))

    def to_json(self) -> dict:
        data = asdict(self)
        data["version"] = self.version_str
        data["is_venv"] = self.is_venv
        return data


def choose(explicit: str | None, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Apply the documented rule; return (path, reason)."""
    if environ is None:
        environ = os.environ
    if explicit:
        return explicit, "set by host_python in the kernel spec or configuration"
    from_env = environ.get(HOST_ENV_VAR)
    if from_env:
        return from_env, f"set by the {HOST_ENV_VAR} environment variable"
    return sys.executable, "the interpreter running Jupyter (no host_python setting, no " + HOST_ENV_VAR + ")"


def _absolute(path: str) -> str:
    expanded = os.path.expanduser(path)
    if os.sep not in expanded:  # a bare name such as "python3": look it up on PATH
        found = shutil.which(expanded)
        if found:
            return found
    return os.path.abspath(expanded)


def _check_exists(path: str) -> None:
    if not os.path.exists(path):
        raise HostError("HOST_PYTHON_MISSING", path=path)
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise HostError("HOST_PYTHON_NOT_PYTHON", path=path, detail="not an executable file")


def _parse(path: str, reason: str, returncode: int, stdout: str, stderr: str) -> HostPython:
    if returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
        raise HostError("HOST_PYTHON_NOT_PYTHON", path=path, detail=f"it exited with status {returncode}: {tail[0]}")
    try:
        data = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise HostError("HOST_PYTHON_NOT_PYTHON", path=path, detail="it did not answer like a Python interpreter")
    problem = _shape_problem(data)
    if problem:  # a wrapper script or another program that prints JSON of its own
        raise HostError("HOST_PYTHON_NOT_PYTHON", path=path,
                        detail=f"it did not answer like a Python interpreter ({problem})")
    version = tuple(data["version"])
    host = HostPython(path=path, reason=reason, executable=data["executable"], version=version,
                      implementation=data["implementation"], prefix=data["prefix"],
                      base_prefix=data["base_prefix"], base_executable=data["base_executable"],
                      site_packages=data["site_packages"], conda=data["conda"],
                      has_ipykernel=data["has_ipykernel"],
                      scripts=[d for d in data.get("scripts") or [] if isinstance(d, str)])
    if version[:2] < MINIMUM_PYTHON:
        raise HostError("HOST_PYTHON_TOO_OLD", path=path, version=host.version_str,
                        minimum=".".join(map(str, MINIMUM_PYTHON)))
    return host


_SHAPE: dict[str, Any] = {"executable": str, "implementation": str, "prefix": str, "base_prefix": str,
                          "base_executable": str, "site_packages": list, "conda": bool, "has_ipykernel": bool}


def _shape_problem(data: Any) -> str:
    """What is wrong with the interpreter's answer ('' when it has every field, each of its type)."""
    if not isinstance(data, dict):
        return f"its answer is a JSON {type(data).__name__}, not an object"
    version = data.get("version")
    if not (isinstance(version, list) and len(version) >= 2 and all(type(v) is int for v in version[:3])):
        return f"version is {version!r}, not a list of numbers"
    for key, kind in _SHAPE.items():
        if key not in data:
            return f"no {key} in its answer"
        if not isinstance(data[key], kind) or (kind is int and isinstance(data[key], bool)):
            return f"{key} is {data[key]!r}, not a {kind.__name__}"
    if not all(isinstance(item, str) for item in data["site_packages"]):
        return "site_packages holds something other than paths"
    return ""


def _argv(path: str) -> list[str]:
    # -I: ignore PYTHON* variables and the user site, and never put the cwd on sys.path
    return [path, "-I", "-c", _INTERROGATE]


async def inspect(path: str, reason: str = "given", timeout: float = 30, cache_dir: Path | None = None) -> HostPython:
    """Ask the interpreter about itself (async, for the provisioner).

    With ``cache_dir`` the answer is reused while the interpreter file, its pyvenv.cfg and its site-packages
    folders are unchanged (installing or removing a package changes the folder's mtime): a warm start then
    starts no Python for this.
    """
    path = _absolute(path)
    _check_exists(path)
    cached = _cache_read(cache_dir, path, reason) if cache_dir is not None else None
    if cached is not None:
        return cached
    try:
        done = await process.run(_argv(path), timeout=timeout, env=_clean_env())
    except OSError as exc:
        raise HostError("HOST_PYTHON_NOT_PYTHON", path=path, detail=str(exc)) from None
    if done.timed_out:
        raise HostError("HOST_PYTHON_NOT_PYTHON", path=path, detail=f"it did not answer within {timeout} s")
    host = _parse(path, reason, done.returncode, done.stdout, done.stderr)
    if cache_dir is not None:
        _cache_write(cache_dir, path, host)
    return host


_CACHE_VERSION = 2  # 2: the console scripts' folders


def _cache_file(cache_dir: Path, path: str) -> Path:
    return cache_dir / "hosts" / (hashlib.sha256(path.encode()).hexdigest()[:24] + ".json")


def stamp(path: str, prefix: str, site_packages: list[str]) -> list[list]:
    """What the interrogation's answer depends on, as (path, mtime_ns, size, inode) of files and folders."""
    out = []
    for item in [path, os.path.realpath(path), os.path.join(prefix, "pyvenv.cfg"), *site_packages]:
        try:
            st = os.stat(item)
            out.append([item, st.st_mtime_ns, st.st_size, st.st_ino])
        except OSError:
            out.append([item, None, None, None])
    return out


def _cache_read(cache_dir: Path, path: str, reason: str) -> HostPython | None:
    try:
        data = json.loads(_cache_file(cache_dir, path).read_bytes())
        if data.get("version") != _CACHE_VERSION:
            return None
        host = dict(data["host"])
        if data["stamp"] != stamp(path, host["prefix"], host["site_packages"]):
            return None
        host.update(path=path, reason=reason, version=tuple(host["version"]))
        return HostPython(**host)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # a garbled or older cache file
        return None


def _cache_write(cache_dir: Path, path: str, host: HostPython) -> None:
    data = asdict(host)
    data["version"] = list(host.version)
    target = _cache_file(cache_dir, path)
    try:
        write_atomic(target, json.dumps({"version": _CACHE_VERSION, "host": data,
                                         "stamp": stamp(path, host.prefix, host.site_packages)}), make_parent=True)
    except OSError:
        pass


def inspect_sync(path: str, reason: str = "given", timeout: float = 30) -> HostPython:
    """Same as :func:`inspect`, for ``uvkernel install`` (no event loop there)."""
    path = _absolute(path)
    _check_exists(path)
    try:
        done = subprocess.run(_argv(path), capture_output=True, text=True, timeout=timeout, env=_clean_env())
    except subprocess.TimeoutExpired:
        raise HostError("HOST_PYTHON_NOT_PYTHON", path=path, detail=f"it did not answer within {timeout} s")
    except OSError as exc:
        raise HostError("HOST_PYTHON_NOT_PYTHON", path=path, detail=str(exc)) from None
    return _parse(path, reason, done.returncode, done.stdout, done.stderr)


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(key, None)
    return env
