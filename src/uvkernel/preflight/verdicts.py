"""The cheap layer's facts, reused while nothing they were read from has changed: a warm start runs no Python.

The cheap probe (probe.py) costs one Python start in the env on every kernel start.  Its facts depend only on
files, folders and values that can be checked from here with a few ``stat`` calls, no interpreter:

* the env's python (link and target) and ``pyvenv.cfg``; every folder on the probe's ``sys.path`` (an install,
  upgrade or removal in the env, the host's or the user's site-packages changes the folder's mtime), the
  ``.pth`` files in them, and the user site folder even when it does not exist yet;
* the files that identify each copy of a checked package (torch's ``version.py``, ``_C*.so``, ``lib/*``…);
* the kernel's environment values the probe reports or that change imports (``CUDA_*``, ``NVIDIA_*``,
  ``LD_*``, ``PYTHON*``, ``UVKERNEL_*``…), and who and where (user, groups, host name, boot id);
* the notebook folder's entries named like a checked package (``torch.py``, ``torch/``…);
* the NVIDIA device files (``/dev/nvidia*`` and ``/dev/nvidia-caps``: names, modes, owners, access); the
  driver's ``/proc/driver/nvidia/version``, its ``gpus/`` list and MIG ``capabilities/``; the NVML library the
  probe loaded (a driver upgrade replaces it: library vs kernel module), the loader cache and
  ``LD_LIBRARY_PATH`` folders;
* the probe's source, its configuration and uvkernel's version.

All of these are collected into a digest; the entry is reused only when the digest is equal and the facts
passed the policy last time.  Anything else runs the probe.  Reading a stat or a ``/proc`` text file is all
this module does: NVML and CUDA are never loaded into the Jupyter server's process.

The entries live in the per-user cache (``preflight/cheap/<env digest>.json``), a few per env (one per
notebook folder and settings).  The paths to check are those of the facts; reading them does not depend on how
many distributions an env holds (folders are stat-ed, not listed).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from .. import __version__
from . import probe
from .cache import _PROBE_SOURCE, write_newest

FORMAT = 1
_KEEP = 16  # entries per env: notebook folders and setting variants side by side
NVIDIA_PROC_VAR = "UVKERNEL_PROBE_NVIDIA_PROC"  # tests point it at a folder standing in for /proc/driver/nvidia
NVIDIA_PROC = "/proc/driver/nvidia"
LOADER_CACHE = "/etc/ld.so.cache"


def file_for(cache_root: Path, env_path: Path) -> Path:
    digest = hashlib.sha256(str(env_path).encode()).hexdigest()[:24]
    return cache_root / "preflight" / "cheap" / f"{digest}.json"


def _slot(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _stat(path: str) -> list[Any] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode, st.st_uid, st.st_gid]


def _lstat(path: str) -> list[Any] | None:
    try:
        st = os.lstat(path)
        target = os.readlink(path) if os.path.islink(path) else None
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_ino, target]


def _read(path: str, limit: int = 65536) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def _names(folder: str) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def user_site(environ: Mapping[str, str], version: str) -> str:
    """The user site folder the env's python would use (as site.getusersitepackages() computes it on POSIX)."""
    base = environ.get("PYTHONUSERBASE") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".local")
    major_minor = ".".join(version.split(".")[:2])
    return os.path.join(base, "lib", f"python{major_minor}", "site-packages")


def relevant_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The probe's environment inputs, and every other variable that changes what Python imports or loads."""
    return {k: v for k, v in environ.items()
            if k in probe.ENV_NAMES or k.startswith(probe.ENV_PREFIXES) or k.startswith(("PYTHON", "LD_"))}


def paths_to_check(facts: Mapping[str, Any], env_path: Path, environ: Mapping[str, str]) -> list[str]:
    """Every file and folder the facts were read from (computed once, when the facts are stored)."""
    paths: list[str] = [str(env_path / "bin" / "python"), str(env_path / "pyvenv.cfg")]
    folders = [p for p in facts.get("sys_path") or [] if isinstance(p, str) and p]
    version = str((facts.get("python") or {}).get("version") or "")
    if version:
        folders.append(user_site(environ, version))  # checked even while absent: it appearing counts
    for folder in folders:
        paths.append(folder)
        if folder.endswith(("site-packages", "dist-packages")):
            # .pth files run at start-up; one added or removed changes the folder, one edited in place does not
            paths.extend(os.path.join(folder, n) for n in _names(folder) if n.endswith(".pth"))
    for package in (facts.get("packages") or {}).values():
        for copy in (package or {}).get("copies") or []:
            location = copy.get("location")
            if not location:
                continue
            paths.append(location)
            for name in copy.get("files") or {}:
                if name != "RECORD":  # stands for the dist-info, whose folder the entry's mtime covers
                    paths.append(os.path.join(location, name) if os.path.isdir(location) else location)
    library = (facts.get("nvml") or {}).get("library")
    if library:
        paths += [library, os.path.realpath(library)]
    paths.append(LOADER_CACHE)
    paths += [d for d in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    return list(dict.fromkeys(paths))  # each once, in order


def _devices(folder: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in _names(folder):
        if name.startswith("nvidia"):
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:
                found[name] = None
                continue
            found[name] = [st.st_mode, st.st_uid, st.st_gid, st.st_rdev, os.access(path, os.R_OK | os.W_OK)]
            if name == "nvidia-caps":
                found[name].append(_names(path))
    return found


def _driver(folder: str) -> dict[str, Any]:
    """What the kernel module says: its version, its GPUs, their MIG capability entries (procfs text, tiny)."""
    gpus = {name: _read(os.path.join(folder, "gpus", name, "information"))
            for name in _names(os.path.join(folder, "gpus"))}
    caps: list[str] = []
    root = os.path.join(folder, "capabilities")
    for here, dirs, files in os.walk(root):
        dirs.sort()
        caps += [os.path.relpath(os.path.join(here, n), root) for n in sorted(files)]
        if len(caps) > 4096:
            break
    return {"version": _read(os.path.join(folder, "version")), "gpus": gpus, "capabilities": caps}


def _notebook_entries(folder: str, names: Iterable[str]) -> dict[str, Any]:
    """Entries of the notebook folder the kernel could import as a checked package (torch.py, torch/, torch.*.so)."""
    wanted = tuple(names)
    out: dict[str, Any] = {}
    for entry in _names(folder):
        stem = entry.split(".", 1)[0]
        if stem in wanted:
            path = os.path.join(folder, entry)
            out[entry] = [_stat(path)] + ([_names(path)] if os.path.isdir(path) else [])
    return out


def digest(paths: Iterable[str], *, config: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    """One value for everything the cheap facts depend on, read now."""
    names = list(config.get("packages") or [])
    if "torch" not in names:
        names.append("torch")
    material = {
        "format": FORMAT, "uvkernel": __version__, "probe": [probe.PROBE_FORMAT, _PROBE_SOURCE],
        "config": dict(config),
        "paths": {p: (_lstat(p), _stat(p)) for p in paths},
        "environment": relevant_environment(environ),
        "identity": probe.identity(),
        "notebook": _notebook_entries(str(config.get("notebook_dir") or ""), names),
        "devices": _devices(environ.get("UVKERNEL_PROBE_DEV_DIR", "/dev")),
        "driver": _driver(environ.get(NVIDIA_PROC_VAR, NVIDIA_PROC)),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("entries"), dict) else {}


def lookup(cache_root: Path, env_path: Path, config: Mapping[str, Any],
           environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The stored cheap facts when nothing they depend on changed since they were read, else None."""
    entry = _load(file_for(cache_root, env_path)).get("entries", {}).get(_slot(config))
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or not isinstance(entry.get("facts"), dict):
        return None
    if digest(entry.get("paths") or [], config=config, environ=environ) != entry.get("digest"):
        return None
    return entry["facts"]


def store(cache_root: Path, env_path: Path, config: Mapping[str, Any], environ: Mapping[str, str],
          facts: Mapping[str, Any]) -> None:
    """Keep facts that passed, with the digest of what they were read from."""
    path = file_for(cache_root, env_path)
    cheap = {k: v for k, v in facts.items() if k != "deep"}
    paths = paths_to_check(cheap, env_path, environ)
    entry = {"format": FORMAT, "time": time.time(), "paths": paths, "facts": cheap,
             "digest": digest(paths, config=config, environ=environ)}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = _load(path) or {"env": str(env_path), "entries": {}}
    data["env"] = str(env_path)
    data["entries"][_slot(config)] = entry
    write_newest(path, data, _KEEP)


def forget(cache_root: Path, env_path: Path) -> None:
    """Drop an env's entries (its env was removed)."""
    try:
        file_for(cache_root, env_path).unlink()
    except OSError:
        pass
