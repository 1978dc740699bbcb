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
  removed if there was none).  uv runs under a small watcher (``uv_watch.py``, its own session) that outlives a
  killed uvkernel and records what uv left, so the next command can put back what uv wrote after uvkernel died.
* The env is then prepared exactly as a kernel start would (:func:`pipeline.prepare`), never by ``uv sync``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from filelock import FileLock, Timeout
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from . import pipeline, project as project_mod, trust
from .env import (declarations, env_distributions, host_distributions, lock_for, locked, private_dir, protection,
                  read_lock, resolve, site_packages_of)
from .errors import DependencyError, ProjectError, UvError, UvkernelError, note, notice
from .files import read_input, write_atomic
from .settings import UvKernelSettings
from .shared import Log, canonical
from .terminal import summary as env_summary
from .uv_watch import boot_id, process_start
from .uvbin import find_uv, run_uv

PROJECT_FILES = ("pyproject.toml", "uv.lock")
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
    uninstalled: list[str] = field(default_factory=list)  # remove: "name version" taken out of the env


JOURNAL = "journal.json"
WATCHER = Path(__file__).with_name("uv_watch.py")


def _digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _current(path: Path) -> bytes | None:
    try:
        return read_input(path)
    except FileNotFoundError:
        return None


def _put_back(path: Path, data: bytes | None) -> None:
    if data is None:
        path.unlink(missing_ok=True)
    else:
        with open(path, "wb") as fh:  # in place: the file keeps its owner and mode
            fh.write(data)


def files_of(project: Any) -> dict[str, Path]:
    """The files uv writes for a change to ``project``, by name: its pyproject.toml, and the uv.lock it uses (a
    workspace member's is the workspace's, at the workspace root)."""
    root = project.root
    return {"pyproject.toml": root / "pyproject.toml", "uv.lock": project.lock_path or root / "uv.lock"}


def _files_in_journal(root: Path, given: Any) -> dict[str, Path]:
    """The paths a journal names, kept only where they can be this project's files: its own pyproject.toml, and a
    uv.lock in its folder or a folder above (a workspace's); anything else, or a journal without paths (an older
    uvkernel's), gives the project folder's own."""
    files = {name: root / name for name in PROJECT_FILES}
    if isinstance(given, dict) and isinstance(given.get("uv.lock"), str):
        lock = Path(given["uv.lock"])
        if lock.name == "uv.lock" and lock.is_absolute() and ".." not in lock.parts and \
                (lock.parent == root or lock.parent in root.parents):
            files["uv.lock"] = lock
    return files


def edits_folder(root: Path, cache_root: Path) -> Path:
    return cache_root / "edits" / hashlib.sha256(str(root).encode()).hexdigest()[:24]


class Backup:
    """Byte copies of pyproject.toml and uv.lock in uvkernel's cache, and a journal beside them.

    The journal holds the digests of the files before the command and of every version uv left; a file is put
    back only while it still holds bytes uv wrote, so a save from the user's editor during the command is never
    overwritten.  A command killed half-way (SIGKILL, power loss) leaves the journal: the next uvkernel command
    for the project rolls it back (:func:`recover`).  Each uv run gets a record file named in the journal before
    uv starts, where uv's watcher writes what uv left even when this process is gone.  The copies, the journal and
    the records reach the disk before they count (``durable``): after a power loss the journal names copies that
    exist."""

    def __init__(self, root: Path, cache_root: Path, verb: str = "add", files: dict[str, Path] | None = None) -> None:
        self.root = root
        self.files = files or {name: root / name for name in PROJECT_FILES}
        self.verb = verb
        self.folder = edits_folder(root, cache_root)
        self.saved: dict[str, bytes | None] = {}
        self.written: dict[str, list[str | None]] = {name: [] for name in PROJECT_FILES}  # None: uv removed it
        self.notes: list[str] = []  # files left as the user changed them (EDIT_NOT_RESTORED)
        self.phase = "uv"  # "uv" while uv may write, "prepare" once every uv call returned
        self.runs: list[str] = []  # the watchers' record files, one per uv run
        private_dir(self.folder)
        for name in PROJECT_FILES:
            data = _current(self.files[name])
            self.saved[name] = data
            copy = self.folder / name
            if data is None:
                copy.unlink(missing_ok=True)
                write_atomic(self.folder / f"{name}.absent", "", private=True, durable=True)
            else:
                write_atomic(copy, data, private=True, durable=True)
                (self.folder / f"{name}.absent").unlink(missing_ok=True)
        write_atomic(self.folder / "project", str(root) + "\n", private=True, durable=True)
        self._journal()

    def _journal(self) -> None:
        write_atomic(self.folder / JOURNAL, json.dumps({
            "root": str(self.root), "files": {n: str(p) for n, p in self.files.items()}, "verb": self.verb,
            "pid": os.getpid(), "start": process_start(os.getpid()),
            "boot": boot_id(),
            "before": {n: _digest(d) for n, d in self.saved.items()}, "uv_wrote": self.written, "phase": self.phase,
            "runs": self.runs}), private=True, durable=True)

    def uv_starting(self) -> Path:
        """The record file the next uv run's watcher writes, named in the journal before uv can write anything."""
        record = self.folder / f"uv-{len(self.runs) + 1}.json"
        record.unlink(missing_ok=True)  # one a killed command left: not this run's
        self.runs.append(record.name)
        self._journal()
        return record

    def uv_wrote(self, last: bool = False) -> None:
        """What the files hold now is uv's (called right after each uv call, whatever its outcome); ``last``: uv
        is done, the env is prepared next."""
        self.phase = "prepare" if last else "uv"
        for name in PROJECT_FILES:
            digest = _digest(_current(self.files[name]))
            if digest != _digest(self.saved[name]) and digest not in self.written[name]:
                self.written[name].append(digest)
        self._journal()

    def restore(self) -> bool:
        """Put back what uv changed; True when every file is as before.  Files changed since uv wrote them are
        left, their pre-command copy kept under another name and named in :attr:`notes`."""
        self.notes = _roll_back(self.files, self.folder, self.verb, self.saved, self.written)
        self.finish()
        return not self.notes

    def finish(self) -> None:
        _forget(self.folder, self.runs)


def _forget(folder: Path, runs: list[str]) -> None:
    (folder / JOURNAL).unlink(missing_ok=True)  # first: a journal never names records that are gone
    for name in runs:
        (folder / name).unlink(missing_ok=True)


def _alive(who: Any) -> bool:
    """``who`` ([pid, start time], as a record holds it) still runs: the same pid with the same start time, so a
    reused pid is not taken for the process, and not a zombie (one that ended, its parent not yet told)."""
    if not (isinstance(who, list) and len(who) == 2 and isinstance(who[0], int) and who[1]):
        return False
    if process_start(who[0]) != who[1]:
        return False
    try:
        with open(f"/proc/{who[0]}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return os.path.isdir("/proc/self") is False  # no procfs: the pid and its start time are all there is


def _uv_left(record: Path, root: Path, paths: dict[str, Path], verb: str, deadline: float, timeout: float,
             log: Log | None = None) -> dict[str, list[str | None]]:
    """What one uv run of an interrupted command wrote in the project files (name -> digests), from its watcher's
    record: what uv left when it ended, and what the watcher saw uv write while it ran (so uv and its watcher
    killed together, or a power loss, still leave it known).  A file uv changed in the last moment before such an
    end, unseen, is left to the user, never guessed.  Waits, until ``deadline``, for a watcher
    or a uv that still runs; past it, EDIT_STILL_RUNNING.  ``log`` hears once that it waits, and for which pid."""
    files = {str(paths[name]): name for name in PROJECT_FILES}
    waited_for_uv = False
    told = False
    while True:
        try:
            data = json.loads(read_input(record))
        except (OSError, ValueError, UvkernelError):
            return {}
        if not isinstance(data, dict):
            return {}
        found = data.get("seen")
        seen: dict[str, list[str | None]] = {
            files[p]: [d for d in ds if d is None or isinstance(d, str)]
            for p, ds in (found.items() if isinstance(found, dict) else ()) if p in files and isinstance(ds, list)}
        if data.get("state") == "done" and isinstance(data.get("digests"), dict):
            left = {files[p]: d for p, d in data["digests"].items() if p in files and (d is None or isinstance(d, str))}
            return _joined(seen, left)
        uv = data.get("uv")
        if data.get("boot") != boot_id():  # written before a reboot (a power loss): nothing of it runs now
            return seen
        if not _alive(data.get("watcher")) and not _alive(uv):
            if waited_for_uv:  # uv ended just now, its watcher gone before it: what uv left is what is there now
                return _joined(seen, {name: _digest(_current(paths[name])) for name in PROJECT_FILES})
            return seen
        waited_for_uv = waited_for_uv or _alive(uv)
        if time.monotonic() > deadline:
            who = uv[0] if isinstance(uv, list) and _alive(uv) else data["watcher"][0]
            raise ProjectError("EDIT_STILL_RUNNING", pid=who, verb=verb, root=str(root), timeout=int(timeout))
        if log is not None and not told:
            told = True
            who = uv[0] if isinstance(uv, list) and _alive(uv) else data["watcher"][0]
            log(notice("EDIT_WAITING_FOR_UV", verb=verb, root=str(root), pid=who, timeout=int(timeout)))
        time.sleep(0.05)


def _joined(seen: dict[str, list[str | None]], left: dict[str, str | None]) -> dict[str, list[str | None]]:
    out = {name: list(digests) for name, digests in seen.items()}
    for name, digest in left.items():
        if digest not in out.setdefault(name, []):
            out[name].append(digest)
    return out


def _roll_back(paths: dict[str, Path], folder: Path, verb: str, before: dict[str, Any],
               written: dict[str, list[str | None]]) -> list[str]:
    """Put each file back when it holds what uv wrote; ``before`` maps names to bytes (a live command) or to
    digests (a journal), the bytes then coming from the copies in ``folder``."""
    notes = []
    for name in PROJECT_FILES:
        path = paths[name]
        try:
            now = _digest(_current(path))
        except (OSError, UvkernelError):
            now = "unreadable"
        old = before.get(name)
        old_digest = old if isinstance(old, str) or old is None else _digest(old)
        if now == old_digest:
            continue
        if now in written.get(name, []):
            data = old if isinstance(old, bytes) or old is None else (folder / name).read_bytes()
            _put_back(path, data)
            continue
        kept = folder / f"{name}.before-{verb}-{time.strftime('%Y%m%d-%H%M%S')}"
        if old is not None and (folder / name).exists():
            os.replace(folder / name, kept)
        else:
            write_atomic(kept, "", private=True)  # the file did not exist before: an empty copy says so
        notes.append(note("EDIT_NOT_RESTORED", path=str(path), verb=verb, backup=str(kept)))
    return notes


def recover(root: Path, cache_root: Path, wait: float = 0.0, log: Log | None = None) -> list[str]:
    """Finish what an interrupted ``uvkernel add``/``remove`` of ``root`` left: roll back the files that still
    hold what uv wrote, leave (and name) the ones changed since.  Returns the notices ([] when nothing was left).
    A journal whose command still runs is left alone; a uv it started that still runs (with its watcher) is
    waited for, ``wait`` seconds at most (then EDIT_STILL_RUNNING, the journal kept)."""
    folder = edits_folder(root, cache_root)
    try:
        data = json.loads(read_input(folder / JOURNAL))
    except (OSError, ValueError, UvkernelError):
        return []
    if not isinstance(data, dict) or data.get("root") != str(root):
        return []
    pid = data.get("pid")
    if (isinstance(pid, int) and pid != os.getpid() and data.get("start") and data.get("boot") == boot_id()
            and process_start(pid) == data.get("start")):
        return []  # that command is still running
    verb = str(data.get("verb") or "add")
    found_before, found_written = data.get("before"), data.get("uv_wrote")
    before: dict[str, Any] = found_before if isinstance(found_before, dict) else {}
    given: dict[str, Any] = found_written if isinstance(found_written, dict) else {}
    written: dict[str, list[str | None]] = {name: [d for d in given.get(name) or [] if isinstance(d, str)]
                                           for name in PROJECT_FILES}
    runs = [r for r in data.get("runs") or [] if isinstance(r, str) and re.fullmatch(r"uv-\d+\.json", r)]
    paths = _files_in_journal(root, data.get("files"))
    deadline = time.monotonic() + wait
    for run in runs:  # what uv wrote after this command's last look: its watcher's record says
        for name, digests in _uv_left(folder / run, root, paths, verb, deadline, wait, log).items():
            for digest in digests:
                if digest is not None and digest != before.get(name) and digest not in written[name]:
                    written[name].append(digest)
    notes = _roll_back(paths, folder, verb, before, written)
    _forget(folder, runs)
    outcome = notice("EDIT_PARTLY_ROLLED_BACK") if notes else notice("EDIT_ROLLED_BACK")
    return [note("EDIT_RECOVERED", verb=verb, root=str(root), outcome=outcome, backup=str(folder)), *notes]


def recover_for_folder(settings: UvKernelSettings, folder: str | None, log: Log | None = None,
                       environ: Mapping[str, str] | None = None) -> list[str]:
    """:func:`recover` for the project holding ``folder`` (the CLI calls it before check, sync and run; the
    provisioner before a kernel start, with the start's ``environ``).  Blocks for lock_timeout at most."""
    root, _data = project_mod.find_root(project_mod.notebook_folder(folder, environ or {}))
    if root is None:
        return []
    cache_root = pipeline.cache_root(settings)
    if not (edits_folder(root, cache_root) / JOURNAL).exists():
        return []
    lock = FileLock(str(edits_folder(root, cache_root) / "journal.lock"), thread_local=False)
    try:
        with lock.acquire(timeout=0):
            return recover(root, cache_root, wait=settings.lock_timeout, log=log)
    except Timeout:
        return []  # an add or remove of this project runs now


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
    """(requirements, exact pins) for ``uv add``, recording what ``uv add`` would record, bounded only where the
    host must stay admissible: a protected host package, or a package that needs one (a companion of the host's
    torch), without a version gets ``>=V`` and is locked at ``==V``, V being the newest version that works with
    the host's packages.  Anything else is left to uv as written: uv records its own bound and locks it for every
    Python that requires-python admits (pandas 2.3.3 for 3.10, 3.1.1 for 3.11 and later)."""
    root = project.root
    reqs = [_requirement(text, root) for text in change.packages]
    host_dists = await protection.marked(await host_distributions(host, cache_root), settings)
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
    keep = protection.provided(host_dists, settings.allow_shadowing)
    held = set(keep)  # the names the host holds fixed, and those that need one of them
    for req, via in resolved:
        for spec in req.specifier:
            if spec.operator == "==":
                versions[canonical(req.name)] = spec.version
        if canonical(req.name) in keep:
            held |= {canonical(v.strip()) for v in via.split(",") if v.strip() and not v.strip().startswith("-")}
    bounded: list[str] = []
    pins: list[str] = []
    for text, req in zip(change.packages, reqs):
        version = versions.get(canonical(req.name)) if req in open_ended and canonical(req.name) in held else None
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
                     settings: UvKernelSettings, record: Path) -> None:
    argv = [uv, change.verb, "--no-sync", "--python", str(env_python), *change.flags(), *specs]
    # uv writes the files under its watcher, which records what uv left in ``record`` even if uvkernel is killed
    # meanwhile (-I: the watcher sees neither the user's site-packages nor PYTHONPATH)
    watcher = [sys.executable, "-I", str(WATCHER), str(record), str(settings.uv_timeout),
               *(str(files_of(project)[name]) for name in PROJECT_FILES), "--"]
    # UV_PROJECT_ENVIRONMENT: uv looks at the env uvkernel prepared (by absolute path) and never makes another
    done = await run_uv(argv, step=f"recorded the change (uv {change.verb} --no-sync)", timeout=settings.uv_timeout,
                        cwd=project.root, check=False, via=watcher,
                        extra_env={"UV_PROJECT_ENVIRONMENT": str(project.env_path)})
    if done.returncode != 0:
        raise UvError("CHANGE_FAILED", verb=" ".join([change.verb, *change.flags(), *specs]),
                      returncode=done.returncode, detail=done.output[-4000:])


async def apply(change: Change, settings: UvKernelSettings, folder: str, environ: Mapping[str, str],
                log: Any) -> Outcome:
    """Record ``change`` with uv, then prepare the env as a kernel start would; on any failure restore the files."""
    host, project, cache_root = await _locate(settings, folder, environ, change.verb)
    # uv add resolves, and may build the project and sdists: with require_trust, only a trusted project
    guarded = settings.require_trust and settings.project_dependencies
    if guarded:
        trust.require(project, cache_root)
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
    specs, pins = list(change.packages), list[str]()
    if change.verb == "add":
        log("finding versions that work with the host's packages")
        specs, pins = await bounds(change, settings=settings, host=host, project=project, cache_root=cache_root,
                                   uv=uv, env_python=env_python)
    assert project.root is not None
    edit_lock = FileLock(str(lock_for(project.env_path, cache_root).lock_file) + ".edit",
                         thread_local=False)
    private_dir(edits_folder(project.root, cache_root))
    journal_lock = FileLock(str(edits_folder(project.root, cache_root) / "journal.lock"), thread_local=False)
    with edit_lock.acquire(timeout=settings.lock_timeout), journal_lock.acquire(timeout=settings.lock_timeout):
        # an earlier add/remove that was killed half-way
        for text in recover(project.root, cache_root, wait=settings.lock_timeout, log=log):
            log(text)
        backup = Backup(project.root, cache_root, change.verb, files_of(project))
        was_locked = _lock_names(project.lock_path) if change.verb == "remove" else set()
        try:
            batches = ([pins] if pins else []) + [specs]  # the pins first: uv.lock gets these versions
            for i, batch in enumerate(batches, 1):
                log("uv " + change.verb + " " + " ".join(batch))
                record = backup.uv_starting()
                try:
                    await _uv_change(uv, change, batch, project, env_python, settings, record)
                finally:
                    backup.uv_wrote(last=i == len(batches))
            if guarded:  # the user's own change to a project they trusted: still trusted as uv wrote it
                trust.grant(project, cache_root)
            prepared = await pipeline.prepare(settings, cwd=folder, environ=environ, log=log)
        except BaseException as exc:  # uv's error, the env's, Ctrl-C (CancelledError): nothing of uv's stays
            whole = backup.restore()
            if guarded and whole:  # the files are as the user trusted them again
                trust.grant(project, cache_root)
            if isinstance(exc, UvkernelError):
                exc.restored = whole  # type: ignore[attr-defined]  # for the CLI's text only, read with getattr
                exc.left = backup.notes  # type: ignore[attr-defined]  # likewise
            raise
        backup.finish()
    recorded = _recorded(project.root, specs) if change.verb == "add" else specs
    outcome = Outcome(prepared, recorded, project.root / "pyproject.toml")
    if change.verb == "remove":
        dropped = was_locked - _lock_names(project.lock_path)
        outcome.uninstalled = await _uninstall(dropped, prepared, uv, settings, cache_root)
    return outcome


def _lock_names(lock: Path | None) -> set[str]:
    """The canonical names uv.lock (the workspace's, for a member) holds; none without a lock."""
    try:
        return set(read_lock(lock)) if lock is not None and lock.is_file() else set()
    except UvkernelError:
        return set()


async def _uninstall(dropped: set[str], prepared: pipeline.Prepared, uv: str, settings: UvKernelSettings,
                     cache_root: Path) -> list[str]:
    """Take out of the env what `uv remove` dropped from uv.lock (the package, and what only it needed), as the
    `uv sync` after a `uv remove` does; ["name version", ...].  Only the env's own copies: the host is never
    touched, and a package uv.lock still holds (another requirement needs it) stays."""
    env = prepared.env
    site = site_packages_of(env.path, prepared.host.version)
    if not dropped:
        return []
    async with locked(env.path, cache_root, settings.lock_timeout):  # no kernel start prepares the env meanwhile
        present = await env_distributions(site)
        names = sorted(k for k in present if k in dropped)
        if not names:
            return []
        done = await run_uv([uv, "pip", "uninstall", "--python", str(env.python), *names],
                            step=f"uninstalled what uv remove dropped from uv.lock ({', '.join(names)})",
                            timeout=settings.uv_timeout, check=False, disk=str(env.path))
    if done.returncode != 0:
        error = UvError("REMOVE_UNINSTALL_FAILED", names=" ".join(names), env=str(env.path),
                        python=str(env.python), returncode=done.returncode, detail=done.output[-3000:])
        error.recorded = True  # type: ignore[attr-defined]  # the files keep the change: the CLI says no restore
        raise error
    return [f"{present[k].name} {present[k].version}" for k in names]


def _recorded(root: Path, specs: list[str]) -> list[str]:
    """What uv wrote into pyproject.toml for each added requirement (``tomli-w>=1.2.0`` for ``tomli-w``): uv chooses
    the bound of an open-ended one, so the summary quotes the file."""
    try:
        data = project_mod.read_pyproject(root / "pyproject.toml")
    except UvkernelError:
        return specs
    found = data.get("project")
    table: dict[str, Any] = found if isinstance(found, dict) else {}
    lists = [table.get("dependencies"), *((table.get("optional-dependencies") or {}).values()),
             *((data.get("dependency-groups") or {}).values())]
    written = [item for value in lists if isinstance(value, list) for item in value if isinstance(item, str)]
    out = []
    for spec in specs:
        name = canonical(_requirement(spec, root).name)
        found = [w for w in written if canonical(re.split(r"[\s=<>!~;@\[(]", w.strip(), maxsplit=1)[0]) == name]
        out.append(found[-1] if found else spec)
    return out


def summary(change: Change, outcome: Outcome, elapsed: float) -> str:
    what = ", ".join(outcome.recorded)
    where = "removed" if change.verb == "remove" else "recorded"
    first = f"uvkernel {change.verb}: {where} {what} in {outcome.pyproject} (uv.lock updated by uv)"
    text = first + "\n" + env_summary(outcome.prepared, elapsed, title=f"uvkernel {change.verb}")
    if outcome.uninstalled:
        text += "\n  uninstalled from the env (no longer in uv.lock): " + ", ".join(outcome.uninstalled)
    return text
