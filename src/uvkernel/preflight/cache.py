"""The preflight cache: successful deep results, keyed on everything the cheap layer saw.

The key hashes the whole cheap report (python and sys.path, the env's pyvenv.cfg, every copy of the
required packages with the stats of the files that decide what importing them does, nvidia-* distributions,
the driver and its devices as NVML reports them, ``/dev/nvidia*`` access, the relevant environment variables
(CUDA_*, NVIDIA_*, LD_*, PYTHON*, TORCH_*, UVKERNEL_*, ...), the user, groups, host name, machine and boot id)
plus what the deep layer was asked to do and the probe's own source.  Anything that changes there is a miss.

The env's own path is replaced by a placeholder in the key, and entries live in one file per user (not per
env): a new env on the same host, with the same packages resolving to the same host copies, reuses a deep
result instead of importing torch again (the cold start of a new project).  Anything the env changes that the
deep layer depends on (a shadowing copy, nvidia-* wheels, a .pth, pyvenv.cfg) is still in the key.  The
project's own folder (its editable's source folder on sys.path) is a placeholder too, and a torch companion is
keyed on its wheel (name, version, tags and RECORD's hashes of its shared objects) rather than on its files' stats
in one env: a second env with the same companion wheel on the same host reuses the verdict.

Entries expire after ``preflight_cache_ttl`` seconds; ``--recheck`` ignores them; failed results are never
stored.  The file is under the per-user cache folder (private: 0700).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

from filelock import FileLock

from .. import __version__
from ..files import write_atomic
from .probe import PROBE_FORMAT

_VOLATILE = ("timings", "notebook_dir")  # per start or per notebook: not what the deep layer depends on
_KEEP = 64  # entries: a few CUDA_VISIBLE_DEVICES or kernel-spec variants of several hosts side by side
_PROBE_SOURCE = hashlib.sha256(Path(__file__).with_name("probe.py").read_bytes()).hexdigest()


def key(cheap: Mapping[str, Any], deep_request: Mapping[str, Any], env_path: Path | str | None = None,
        project_root: Path | str | None = None) -> str:
    material = {k: v for k, v in cheap.items() if k not in _VOLATILE}
    if isinstance(material.get("pyvenv_cfg"), dict):  # the prompt is the project's name: nothing torch reads
        material["pyvenv_cfg"] = {k: v for k, v in material["pyvenv_cfg"].items() if k != "prompt"}
    if isinstance(material.get("companions"), list):
        material["companions"] = [_wheel_identity(c) for c in material["companions"]]
    blob = json.dumps({"facts": material, "request": deep_request, "uvkernel": __version__,
                       "probe": [PROBE_FORMAT, _PROBE_SOURCE]}, sort_keys=True, default=str)
    if env_path:
        blob = blob.replace(json.dumps(str(env_path))[1:-1], "<env>")
    if project_root:
        # the project's own source folders on sys.path (its editable's .pth) are the project's, like the env:
        # what they hold of the packages the deep layer imports is in the facts as copies, with their stats
        root = json.dumps(str(project_root))[1:-1]
        blob = blob.replace(f'"{root}/', '"<project>/').replace(f'"{root}"', '"<project>"')
    return hashlib.sha256(blob.encode()).hexdigest()


def _wheel_identity(companion: Any) -> Any:
    """A companion as its wheel (name, version, tags, RECORD's lines of its shared objects), so a verdict on a
    wheel serves every env it is installed in; its files' stats (another per env install) when RECORD carries
    no hashes to tell the wheel by."""
    if not isinstance(companion, dict) or not companion.get("wheel_id"):
        return companion
    return {k: v for k, v in companion.items() if k not in ("files", "dist_info", "location")}


def path_for(cache_root: Path, env_path: Path) -> Path:
    """The cache file (one per user; ``env_path`` is kept in the signature for the callers' clarity)."""
    return cache_root / "preflight" / "deep-results.json"


def lock_for(cache_root: Path, env_path: Path) -> FileLock:
    """One deep run at a time (across processes: several servers or kernels starting together)."""
    path = path_for(cache_root, env_path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return FileLock(str(path) + ".lock", thread_local=False)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return {}
    if not (isinstance(data, dict) and isinstance(data.get("entries"), dict)):
        return {}
    # entries of another shape (a garbled or older file) are dropped, not trusted
    data["entries"] = {k: v for k, v in data["entries"].items() if isinstance(v, dict) and "deep" in v
                       and isinstance(v.get("time"), (int, float)) and not isinstance(v.get("time"), bool)
                       and isinstance(v.get("deep"), dict)}
    return data


def lookup(cache_root: Path, env_path: Path, cache_key: str, ttl: float, now: float | None = None
           ) -> dict[str, Any] | None:
    """The cached entry ({'time', 'deep'}) for this key, if it is younger than ttl."""
    if ttl <= 0:
        return None
    entry = _read(path_for(cache_root, env_path)).get("entries", {}).get(cache_key)
    if not isinstance(entry, dict) or "deep" not in entry:
        return None
    age = (time.time() if now is None else now) - float(entry.get("time", 0))
    if age < 0 or age > ttl:
        return None
    return {**entry, "age": age}


def store(cache_root: Path, env_path: Path, cache_key: str, deep: Mapping[str, Any], now: float | None = None) -> Path:
    path = path_for(cache_root, env_path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    data = _read(path) or {"entries": {}}
    data["entries"][cache_key] = {"time": time.time() if now is None else now, "deep": dict(deep)}
    write_newest(path, data, _KEEP)
    return path


def write_newest(path: Path, data: dict[str, Any], keep: int) -> None:
    """Keep the ``keep`` newest of ``data["entries"]`` and write the file private to its owner, atomically: a
    concurrent start reads the old or the new file, never half of one."""
    newest = sorted(data["entries"].items(), key=lambda kv: kv[1].get("time", 0), reverse=True)[:keep]
    data["entries"] = dict(newest)
    write_atomic(path, json.dumps(data, default=str), private=True)


