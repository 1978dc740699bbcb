"""The watcher ``uvkernel add``/``remove`` runs uv under: it outlives a killed uvkernel and says what uv left.

Run as ``python -I uv_watch.py RECORD TIMEOUT FILE... -- UV ARGS...`` in its own session (the caller starts it
with ``start_new_session``), so a SIGKILL to uvkernel, or a signal to uvkernel's process group (Ctrl-C, a closed
terminal), leaves it running.  uv runs as its child, in the watcher's process group: whoever stops the watcher's
group stops uv with it, and uv is never left writing with nobody watching.

RECORD (a JSON file, written whole and flushed to disk before each step counts) says, in turn:

* ``{"state": "running", "watcher": [pid, start], "uv": null, "boot": id}`` before uv starts;
* the same with ``"uv": [pid, start]`` once uv runs;
* the same with ``"seen": {FILE: [sha256, ...]}`` each time uv changes a FILE while it runs (looked at every
  50 ms): a power loss or a kill of the watcher's whole group still leaves what uv had written by then;
* ``{"state": "done", ..., "returncode": N, "digests": {FILE: sha256 or null}}`` once uv ended: the bytes uv left
  in each FILE (null: absent).

The next uvkernel command for the project reads it (waiting while this process or uv still runs) and puts back
only files that still hold those bytes.  Standard library only, and no import of uvkernel: it must start fast and
work whatever state the package is in.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from typing import Any

LIMIT = 32 * 1024 * 1024  # larger than any real pyproject.toml or uv.lock
POLL = 0.05  # seconds between two looks at the files while uv runs


def _look(path: str) -> tuple[int, int, int, int] | None:
    """What tells a rewrite of the file without reading it: inode, size, mtime and ctime (None: absent)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def process_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the pid, names one process even after pid reuse."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        pass
    if not os.path.isdir("/proc/self"):  # no procfs: the pid alone
        try:
            os.kill(pid, 0)
            return "?"
        except PermissionError:
            return "?"
        except OSError:
            return None
    return None


def boot_id() -> str | None:
    """This boot's id: a pid and a start time from before a reboot name no process of this one."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def digest(path: str) -> str | None:
    """sha256 of a regular file's bytes, None when it is absent; a FIFO or a device is never read (it could
    block or never end), it gets a mark that matches no digest."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > LIMIT:
            return "not a regular file of a readable size"
        h = hashlib.sha256()
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)
    finally:
        os.close(fd)


def write_durably(path: str, data: dict[str, Any]) -> None:
    """Whole or not at all, and on disk before it counts (a power loss leaves the old record or the new one)."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".record.", suffix=".uvkernel-tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv) < 4:
        print("usage: uv_watch.py RECORD TIMEOUT FILE... -- UV ARGS...", file=sys.stderr)
        return 2
    cut = argv.index("--")
    record, timeout, files, command = argv[0], float(argv[1]), argv[2:cut], argv[cut + 1:]
    me = [os.getpid(), process_start(os.getpid())]
    state: dict[str, Any] = {"state": "running", "watcher": me, "uv": None, "boot": boot_id()}
    write_durably(record, state)
    # The terminal's or a closed session's signals are not the watcher's to act on (it has its own session);
    # a SIGTERM sent to it is passed to uv, and the watcher still records what uv left.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The files as they were before uv: taken after uv started, a write uv made in its first instant (uv add
    # writes pyproject.toml early, and a loaded machine can hold the watcher that long) would pass for the
    # starting state and never be recorded as uv's.
    looks = {f: _look(f) for f in files}
    firsts = {f: digest(f) for f in files}
    try:
        uv = subprocess.Popen(command)
    except OSError as exc:
        state.update(state="done", returncode=127, digests={f: digest(f) for f in files})
        write_durably(record, state)
        print(f"{command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    signal.signal(signal.SIGTERM, lambda _sig, _frame: uv.send_signal(signal.SIGTERM))
    state["uv"] = [uv.pid, process_start(uv.pid)]
    write_durably(record, state)
    deadline = time.monotonic() + timeout
    seen: dict[str, list[str | None]] = {}
    while True:
        try:
            code = uv.wait(timeout=min(POLL, max(0.0, deadline - time.monotonic())))
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                uv.kill()  # the caller's time limit, kept even when the caller is gone
                deadline = time.monotonic() + 30
        # what uv has written so far, on disk before uv can go on much further: what a power loss leaves is known
        changed = False
        for f in files:
            now = _look(f)
            if now == looks[f]:
                continue
            looks[f] = now
            d = digest(f)
            if d != firsts[f] and d not in seen.get(f, []):
                seen.setdefault(f, []).append(d)
                changed = True
        if changed:
            state["seen"] = seen
            write_durably(record, state)
    state.update(state="done", returncode=code, digests={f: digest(f) for f in files})
    write_durably(record, state)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
