"""The envs uvkernel keeps in its per-user cache: what each one serves, listing them, removing the unused ones.

A notebook folder outside any project (and a read-only project) gets an env in ``<cache>/envs/<name>-<hash>``.
Nothing else ever removes them, so ``uvkernel gc`` does, and ``uvkernel envs`` shows them.  What it relies on:

* ``<env>/.uvkernel-env.json`` (written at every start, cache envs only): the folder the env serves, the host,
  when it was created and last started.  An env without it (made by an older uvkernel) has an unknown folder:
  only ``--older-than`` can remove it;
* liveness markers ``<cache>/running/<id>.json``, one per kernel starting or running from a cache env: the pid
  and that process's start time (a pid reused by another process does not count).  The provisioner writes one
  before it prepares the env, points it at the kernel's process once launched and removes it at cleanup;
  ``uvkernel kernel`` marks its own process (it becomes the kernel by exec, keeping pid and start time).  The env
  python is the host's, so a process list could not tell which env a kernel runs from;
* the env's lock (held while a start prepares the env): gc takes it before removing, so a start that arrives
  meanwhile waits and then builds the env afresh;
* project ``.venv``\\ s are remembered in ``<cache>/projects/`` only to be listed: they are the project's,
  never removed by uvkernel.

A folder counts as gone only when uvkernel can prove it: at every start the folder's device and mount point are
recorded, and a missing folder is gone only while that mount point is still mounted with that device and the
folder's parent exists on it.  An unmounted home or volume leaves an empty mount point behind,
which must not look like a deletion: it is "unreachable", and its env stays.  An env recorded without a device
(an older uvkernel) is gone only when its parent exists.  An entry of ``<cache>/envs`` without uvkernel's files is
left alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from filelock import Timeout

from . import __version__
from .env import STATE_FILE, lock_for
from .errors import CacheError
from .files import write_atomic
from .preflight import verdicts
from .uv_watch import process_start  # one definition; the watcher must run without uvkernel's other modules

META_FILE = ".uvkernel-env.json"
STARTING_MAX_AGE = 3600.0  # a "starting" marker older than this belongs to a start that died without cleanup
DAY = 86400.0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=1), private=True, make_parent=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# --- recording, at every start ---------------------------------------------------------------------------
def record_start(cache_root: Path, env_path: Path, *, folder: Path, in_cache: bool, host: str,
                 now: float | None = None) -> None:
    """Which folder the env serves and when it last started (a cache env), or that a project env was seen."""
    now = time.time() if now is None else now
    try:
        if in_cache:
            path = env_path / META_FILE
            old = _read_json(path)
            _write_json(path, {"uvkernel": __version__, "env": str(env_path), "folder": str(folder), "host": host,
                               "created": old.get("created", now), "last_start": now, **where_it_lives(folder)})
        else:
            _write_json(cache_root / "projects" / f"{_digest(str(env_path))}.json",
                        {"env": str(env_path), "project": str(folder), "host": host, "last_start": now,
                         **{f"env_{k.split('_')[1]}": v for k, v in where_it_lives(env_path).items()}})
    except OSError:
        pass  # a read-only env or cache costs the listing its date, never the start


# --- liveness markers ------------------------------------------------------------------------------------

class Liveness:
    """One kernel's marker: written before its env is prepared, pointed at the kernel once launched, removed at
    cleanup.  ``pid`` is the process to watch while starting (default: this one)."""

    def __init__(self, pid: int | None = None, phase: str = "starting") -> None:
        self.pid = pid or os.getpid()
        self.phase = phase
        self.path: Path | None = None
        self.env_path: Path | None = None

    def mark(self, cache_root: Path, env_path: Path) -> None:
        if self.path is None:
            self.path = cache_root / "running" / f"{uuid.uuid4().hex}.json"
        self.env_path = env_path
        self._write(env_path, self.pid, self.phase)

    def _write(self, env_path: Path, pid: int, phase: str) -> None:
        assert self.path is not None
        try:
            _write_json(self.path, {"env": str(env_path), "pid": pid, "process_start": process_start(pid),
                                    "phase": phase, "time": time.time()})
        except OSError:
            pass

    def launched(self, pid: int | None) -> None:
        """The kernel process now runs: the marker follows it (the start's own process may be the server)."""
        if self.path is not None and self.env_path is not None and pid:
            self._write(self.env_path, pid, "running")

    def clear(self) -> None:
        if self.path is not None:
            try:
                self.path.unlink()
            except OSError:
                pass
            self.path = None
            self.env_path = None


def live_markers(cache_root: Path, *, remove_stale: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Markers of processes still alive, by env path.  Stale ones (process gone or pid reused) are dropped."""
    out: dict[str, list[dict[str, Any]]] = {}
    folder = cache_root / "running"
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return out
    now = time.time()
    for name in names:
        if not name.endswith(".json"):
            continue
        data = _read_json(folder / name)
        pid = data.get("pid")
        alive = (isinstance(pid, int) and data.get("process_start") is not None
                 and process_start(pid) == data.get("process_start"))
        if alive and data.get("phase") == "starting" and now - float(data.get("time", 0)) > STARTING_MAX_AGE:
            alive = False
        if alive:
            out.setdefault(str(data.get("env")), []).append(data)
        elif remove_stale and data:
            try:
                (folder / name).unlink()
            except OSError:
                pass
    return out


# --- listing ---------------------------------------------------------------------------------------------
def own_bytes(env: Path) -> dict[str, int]:
    """Disk the env adds, counted as benchmarks/disk.py does: bytes in files with one link (not hard links into
    uv's cache), each inode once."""
    own = linked = files = 0
    seen: set[tuple[int, int]] = set()
    for folder, _dirs, names in os.walk(env):
        for name in names:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):  # lstat: a link is not a regular file, whatever it points at
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            files += 1
            if st.st_nlink > 1:
                linked += st.st_size
            else:
                own += st.st_size
    return {"own_bytes": own, "hardlinked_bytes": linked, "files": files}


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points() -> dict[str, str] | None:
    """The mount points of this process's mount namespace, each with its file system ("type source"); None
    without /proc (the device numbers decide alone).

    A bind mount keeps its source's device number, and the kernel hands an unmounted tmpfs's or network mount's
    device number to the next one mounted, so the list and the file system's name say more than the number."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        # field 5 is the mount point; after the " - " separator come the type and the source (octal escapes)
        head, _, tail = line.partition(" - ")
        fields, rest = head.split(" "), tail.split(" ")
        if len(fields) > 4:
            out[_unescape(fields[4])] = " ".join(_unescape(f) for f in rest[:2])
    return out


def mount_point_of(path: str, mounts: dict[str, str] | None = None) -> str:
    """The mount point holding ``path`` (a real path): the longest listed mount point above it, else the highest
    folder above it on the same device."""
    mounts = mount_points() if mounts is None else mounts
    if mounts:
        probe = path
        while True:
            if probe in mounts:
                return probe
            parent = os.path.dirname(probe)
            if parent == probe:
                return probe
            probe = parent
    dev = os.stat(path).st_dev
    probe = path
    while True:
        parent = os.path.dirname(probe)
        if parent == probe or os.stat(parent).st_dev != dev:
            return probe
        probe = parent


def where_it_lives(folder: Path | str) -> dict[str, Any]:
    """The folder's device, mount point and file system, recorded at each start so that gc can later tell a
    deleted folder from one whose volume is not mounted ({} when the folder cannot be looked at)."""
    try:
        real = os.path.realpath(folder)
        mounts = mount_points()
        mount = mount_point_of(real, mounts)
        return {"folder_dev": os.stat(real).st_dev, "folder_mount": mount,
                "folder_fs": (mounts or {}).get(mount, "")}
    except OSError:
        return {}


def folder_state(folder: str | None, dev: int | None = None, mount: str | None = None, fs: str | None = None) -> str:
    """exists | gone (provably deleted) | unreachable (its volume is not mounted, or was replaced, or it cannot
    be looked at) | unknown (not recorded).

    With the recorded device and mount point (``dev``, ``mount``): gone only while ``mount`` is still mounted
    with device ``dev`` and the folder's parent exists on that device too.  Without them
    (an older record): gone when its parent exists."""
    if not folder:
        return "unknown"
    try:
        os.stat(folder)
        return "exists"
    except FileNotFoundError:
        pass
    except OSError:
        return "unreachable"  # no permission to look: not proof of anything
    if not isinstance(dev, int) or not isinstance(mount, str):
        parent = os.path.dirname(folder.rstrip(os.sep)) or os.sep
        return "gone" if os.path.isdir(parent) else "unreachable"
    mounts = mount_points()
    try:
        if os.stat(mount).st_dev != dev or (mounts is not None and mount not in mounts):
            return "unreachable"  # unmounted, or another volume is mounted there now
        if fs and mounts is not None and mounts.get(mount) != fs:
            return "unreachable"  # another file system mounted there, given the same device number
    except OSError:
        return "unreachable"
    # its parent must exist too (a missing parent may be an automount or volume not there now), on that device
    parent = os.path.dirname(os.path.realpath(folder))
    try:
        st = os.stat(parent)
    except OSError:
        return "unreachable"
    inside = parent == mount or parent.startswith(mount.rstrip(os.sep) + os.sep)
    return "gone" if inside and st.st_dev == dev else "unreachable"


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


@dataclass
class CacheEnv:
    path: str
    folder: str | None
    folder_state: str
    last_start: float | None
    host: str | None = None
    own_bytes: int | None = None
    hardlinked_bytes: int | None = None
    running: list[int] = field(default_factory=list)  # pids of kernels starting or running from it
    preparing: bool = False  # a start holds its lock now

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_start_iso"] = iso_time(self.last_start)
        return data


def iso_time(stamp: float | None) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else None


def is_uvkernels(entry: Path) -> bool:
    """An entry of <cache>/envs that uvkernel made: a real folder holding a venv and uvkernel's own files."""
    return (entry.is_dir() and not entry.is_symlink() and (entry / "pyvenv.cfg").is_file()
            and ((entry / META_FILE).is_file() or (entry / STATE_FILE).is_file()))


def _lock_held(cache_root: Path, env: Path) -> bool:
    lock = lock_for(env, cache_root)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def describe(cache_root: Path, entry: Path, live: dict[str, list[dict[str, Any]]], *, sizes: bool = True) -> CacheEnv:
    meta = _read_json(entry / META_FILE)
    folder = meta.get("folder")
    last = meta.get("last_start") or max(filter(None, [_mtime(entry / n) for n in
                                                       (".uvkernel-report.json", STATE_FILE, "pyvenv.cfg")]),
                                         default=None)
    env = CacheEnv(str(entry), folder, folder_state(folder, meta.get("folder_dev"), meta.get("folder_mount"), meta.get("folder_fs")),
                   last, meta.get("host"),
                   running=sorted(m["pid"] for m in live.get(str(entry), [])),
                   preparing=_lock_held(cache_root, entry))
    if sizes:
        size = own_bytes(entry)
        env.own_bytes, env.hardlinked_bytes = size["own_bytes"], size["hardlinked_bytes"]
    return env


def list_envs(cache_root: Path, *, sizes: bool = True) -> tuple[list[CacheEnv], list[str]]:
    """(uvkernel's cache envs, other entries of <cache>/envs that uvkernel did not make)."""
    folder = cache_root / "envs"
    live = live_markers(cache_root)
    envs: list[CacheEnv] = []
    others: list[str] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return envs, others
    for entry in entries:
        if is_uvkernels(entry):
            envs.append(describe(cache_root, entry, live, sizes=sizes))
        else:
            others.append(str(entry))
    return envs, others


def list_projects(cache_root: Path) -> list[dict[str, Any]]:
    """Project envs uvkernel started kernels from (listed only: they belong to their projects)."""
    out: list[dict[str, Any]] = []
    folder = cache_root / "projects"
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return out
    for name in names:
        data = _read_json(folder / name)
        if data.get("env"):
            data["exists"] = os.path.isdir(data["env"])
            data["last_start_iso"] = iso_time(data.get("last_start"))
            out.append(data)
    return out


# --- gc --------------------------------------------------------------------------------------------------
@dataclass
class Decision:
    env: CacheEnv
    action: str  # removed | would remove | kept
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, **self.env.to_json()}


def _why_remove(env: CacheEnv, older_than: float | None, now: float) -> str | None:
    if env.folder_state == "gone":
        return f"its folder {env.folder} is gone"
    if older_than is not None and (env.last_start is None or now - env.last_start > older_than * DAY):
        age = "never started" if env.last_start is None else f"last started {iso_time(env.last_start)}"
        return f"not started for more than {older_than:g} days ({age})"
    return None


def _why_keep(env: CacheEnv) -> str:
    if env.folder_state == "unreachable":
        return (f"its folder {env.folder} cannot be reached (its volume is not mounted, another one is mounted in "
                f"its place, or its parent is missing too: an unmounted volume?); it is not proof of a deletion")
    if env.folder_state == "unknown":
        return "the folder it serves was not recorded (made by an older uvkernel): only --older-than removes it"
    return "in use" if env.folder_state == "exists" else "kept"


def collect(cache_root: Path, *, older_than: float | None = None, dry_run: bool = False,
            now: float | None = None) -> tuple[list[Decision], list[str]]:
    """Remove the cache envs whose folder is gone, and with ``older_than`` (days) those not started for that long.

    Never an env a kernel is starting or running from, nor one a start is preparing.  Returns the decision for
    every cache env, and the entries of <cache>/envs left alone because uvkernel did not make them.
    """
    now = time.time() if now is None else now
    live_markers(cache_root, remove_stale=not dry_run)
    envs, others = list_envs(cache_root, sizes=False)
    decisions = []
    for env in envs:
        reason = _why_remove(env, older_than, now)
        if reason is None:
            decisions.append(Decision(env, "kept", _why_keep(env)))
            continue
        if env.running or env.preparing:
            busy = f"a kernel is starting or running from it (pid {', '.join(map(str, env.running))})" \
                if env.running else "a kernel start is preparing it now"
            decisions.append(Decision(env, "kept", f"{busy}; it would otherwise be removed: {reason}"))
            continue
        size = own_bytes(Path(env.path))
        env.own_bytes, env.hardlinked_bytes = size["own_bytes"], size["hardlinked_bytes"]
        if dry_run:
            decisions.append(Decision(env, "would remove", reason))
            continue
        lock = lock_for(Path(env.path), cache_root)
        try:
            lock.acquire(timeout=0)  # a start arriving now waits, then builds the env afresh
        except Timeout:
            decisions.append(Decision(env, "kept", f"a kernel start is preparing it now; it would otherwise be "
                                                   f"removed: {reason}"))
            continue
        try:
            if live_markers(cache_root).get(env.path):  # a start that began since the first look
                decisions.append(Decision(env, "kept", f"a kernel is starting from it; it would otherwise be "
                                                       f"removed: {reason}"))
                continue
            # looked at again under the lock: a volume mounted, or a folder made, since the first look
            meta = _read_json(Path(env.path) / META_FILE)
            env.folder_state = folder_state(meta.get("folder"), meta.get("folder_dev"), meta.get("folder_mount"),
                                            meta.get("folder_fs"))
            reason = _why_remove(env, older_than, now)
            if reason is None or not is_uvkernels(Path(env.path)):
                decisions.append(Decision(env, "kept", _why_keep(env)))
                continue
            shutil.rmtree(env.path)
            verdicts.forget(cache_root, Path(env.path))
            decisions.append(Decision(env, "removed", reason))
        except OSError as exc:
            decisions.append(Decision(env, "kept", f"could not be removed ({exc}); it would be removed: {reason}"))
        finally:
            lock.release()
    if not dry_run:
        _forget_missing_projects(cache_root)
    return decisions, others


def _forget_missing_projects(cache_root: Path) -> None:
    """Drop uvkernel's own notes about project envs that no longer exist (the projects themselves are untouched)."""
    for data in list_projects(cache_root):
        if not data["exists"] and folder_state(data["env"], data.get("env_dev"), data.get("env_mount"),
                                                       data.get("env_fs")) == "gone":
            try:
                (cache_root / "projects" / f"{_digest(data['env'])}.json").unlink()
            except OSError:
                pass


def parse_days(value: str) -> float:
    try:
        days = float(value)
    except (TypeError, ValueError):
        raise CacheError("GC_OLDER_THAN_INVALID", value=value) from None
    if days != days or days < 0 or days == float("inf"):
        raise CacheError("GC_OLDER_THAN_INVALID", value=value)
    return days


def human_size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def total(decisions: Iterable[Decision], action: str) -> int:
    return sum(d.env.own_bytes or 0 for d in decisions if d.action == action)
