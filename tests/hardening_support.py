"""Helpers for the concurrency, fault, bad-input and security tests: file snapshots, `uvkernel check --json`,
env package listings, tmpfs mounts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """relative path -> content hash (files) or link target (symlinks), for everything under ``folder``."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        rel_dir = os.path.relpath(dirpath, folder)
        dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(rel_dir, d)) not in skip]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in skip:
                continue
            if os.path.islink(path):
                out[rel] = "link:" + os.readlink(path)
            else:
                with open(path, "rb") as fh:
                    out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def env_packages(env: Path) -> dict[str, str]:
    """name -> version of the distributions installed in the env itself (not inherited ones)."""
    sites = list((env / "lib").glob("python3.*/site-packages"))
    out: dict[str, str] = {}
    for site in sites:
        for meta in site.glob("*.dist-info/METADATA"):
            name = version = ""
            for line in meta.read_text(errors="replace").splitlines():
                if line.startswith("Name: "):
                    name = line[6:].strip().lower().replace("_", "-")
                elif line.startswith("Version: "):
                    version = line[9:].strip()
                if name and version:
                    break
            out[name] = version
    return out


def check(folder: Path | str, *args: str, env: dict[str, str] | None = None,
          timeout: float = 600) -> tuple[int, dict[str, Any], str]:
    """Run `uvkernel check FOLDER --json ARGS`; returns (exit status, report, stderr)."""
    done = subprocess.run([sys.executable, "-m", "uvkernel", "check", str(folder), "--json", *args],
                          capture_output=True, text=True, env=env or os.environ.copy(), timeout=timeout)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"uvkernel check printed no JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.returncode, report, done.stderr


def assert_clear_error(message: str, code: str, *must_contain: str) -> None:
    """An actionable error: its code, every fact the caller names (what, where), and a fix."""
    assert message, "no error message"
    assert f"[{code}]" in message, f"expected {code}:\n{message}"
    for text in must_contain:
        assert text in message, f"{text!r} missing from:\n{message}"
    assert "How to fix: " in message, message
    fix = message.split("How to fix: ", 1)[1].strip()
    assert len(fix) > 20, f"the fix says too little: {fix!r}"
    assert "%" not in message, "jupyter_server doubles '%' in messages"


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "4m", read_only: bool = False) -> Iterator[Path]:
    """A real tmpfs mounted at ``path`` (needs root, as on this project's machines and CI); always unmounted."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {path} (this test needs root and mount): {done.stderr}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, read_only: bool) -> None:
    mode = "ro" if read_only else "rw"
    done = subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot remount {path} {mode}: {done.stderr}")


def wait_for_journal(proc: subprocess.Popen, journal: Path, reached, what: str, timeout: float = 300) -> None:
    """Poll an add/remove's journal until ``reached(data)`` holds, while ``proc`` still runs (it must not end
    first); fail, saying ``what`` never happened, at the time limit."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if reached(json.loads(journal.read_text())):
                return
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.005)
    pytest.fail(what)


def add_journal(project: Path) -> Path:
    """Where `uvkernel add`/`remove` keep their journal for ``project`` (the test's own uvkernel cache)."""
    from uvkernel.project_edit import edits_folder

    return edits_folder(project, Path(os.environ["XDG_CACHE_HOME"]) / "uvkernel") / "journal.json"


SLOW_BUILD = "uvkernel-slow-build"


def slow_sdist(links: Path, gate: Path, version: str = "1.0") -> Path:
    """A source distribution of ``uvkernel-slow-build`` in the find-links folder ``links`` whose metadata uv must
    build (its dependencies are dynamic), with an in-tree build backend (nothing to download) that writes
    ``gate/building`` (its pid) and then waits for ``gate/go``: uv is held mid-run, after `uv add` wrote
    pyproject.toml and before uv.lock, for as long as the test wants."""
    import io
    import tarfile
    import textwrap
    import time

    norm = SLOW_BUILD.replace("-", "_")
    base = f"{norm}-{version}"
    meta = f"Metadata-Version: 2.1\\nName: {SLOW_BUILD}\\nVersion: {version}\\n"
    backend = textwrap.dedent(f'''\
        import os, pathlib, time, zipfile

        GATE = pathlib.Path({str(gate)!r})
        DIST = "{base}.dist-info"

        def _held():
            GATE.mkdir(parents=True, exist_ok=True)
            (GATE / "building").write_text(str(os.getpid()))
            deadline = time.monotonic() + 600
            while not (GATE / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)

        def get_requires_for_build_wheel(config_settings=None):
            return []

        def prepare_metadata_for_build_wheel(directory, config_settings=None):
            _held()
            (pathlib.Path(directory) / DIST).mkdir()
            (pathlib.Path(directory) / DIST / "METADATA").write_text("{meta}")
            return DIST

        def build_wheel(directory, config_settings=None, metadata_directory=None):
            _held()
            name = "{base}-py3-none-any.whl"
            with zipfile.ZipFile(pathlib.Path(directory) / name, "w") as zf:
                zf.writestr(DIST + "/METADATA", "{meta}")
                zf.writestr(DIST + "/WHEEL", "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n")
                zf.writestr(DIST + "/RECORD", "")
            return name
        ''')
    pyproject = textwrap.dedent(f'''\
        [build-system]
        requires = []
        build-backend = "slow_backend"
        backend-path = ["."]

        [project]
        name = "{SLOW_BUILD}"
        version = "{version}"
        dynamic = ["dependencies"]
        ''')
    links.mkdir(parents=True, exist_ok=True)
    out = links / f"{base}.tar.gz"
    with tarfile.open(out, "w:gz") as tf:
        for rel, text in (("pyproject.toml", pyproject), ("slow_backend.py", backend)):
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{rel}")
            info.size, info.mtime = len(data), int(time.time())
            tf.addfile(info, io.BytesIO(data))
    return out
