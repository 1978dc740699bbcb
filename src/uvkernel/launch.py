"""Stage 4: the kernel's command line and environment.

The kernel runs the env's python directly (no ``uv run`` wrapper), so interrupts and restarts reach
ipykernel.  The environment is a copy: the incoming dict is never mutated (jupyter_client saves it for
restarts).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

from .errors import UvkernelError
from .files import private_dir, write_atomic
from .host import HostPython
from .settings import SETTING_NAMES, UvKernelSettings
from .shared import LAUNCHER

# Variables that would make the env's python load another installation's stdlib or packages.
_DROP = ("PYTHONHOME", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_PROMPT_MODIFIER", "CONDA_SHLVL",
         "CONDA_PYTHON_EXE", "CONDA_EXE", "_CE_CONDA", "_CE_M", "PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__",
         "UV_PYTHON", "UV_SYSTEM_PYTHON")
# UV_PROJECT_ENVIRONMENT is kept: `!uv add X` in the kernel must target the env the kernel runs from.

MAGIC_STUB_FILE = Path(__file__).with_name("kernel_magic_stub.py")  # registers %uvkernel (kernel_extension.py)
REPORT_VAR = "UVKERNEL_REPORT"
# What started the kernel, so `!uvkernel add X` in a cell (and `uvkernel run`'s children) use the same host and
# policy without --kernel: the spec's name, and the effective settings as JSON (the spec's config plus any jupyter
# config file, host_python resolved).  cli._settings_for reads them.
KERNEL_VAR = "UVKERNEL_KERNEL"
SETTINGS_VAR = "UVKERNEL_SETTINGS"


def kernel_environment(
    base: Mapping[str, str],
    env_path: Path,
    *,
    uv_dir: str | None = None,
    report_file: Path | None = None,
    excludes_file: Path | None = None,
    constraints_file: Path | None = None,
    tools_dir: Path | None = None,
    host_scripts: Path | None = None,
    context: Mapping[str, str] | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in _DROP}
    env["VIRTUAL_ENV"] = str(env_path)
    first = [str(env_path / "bin")]
    if tools_dir is not None:
        first.append(str(tools_dir))  # `!uvkernel add X` runs the uvkernel that started this kernel
    if host_scripts is not None:
        first.append(str(host_scripts))  # `!torchrun` runs the host's script under the env's python
    path_parts = first + [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p not in first]
    if uv_dir and uv_dir not in path_parts:
        path_parts.append(uv_dir)  # `!uv pip install` works even where uv is not on the server's PATH
    env["PATH"] = os.pathsep.join(path_parts)
    env["PYTHONNOUSERSITE"] = "1"  # a `pip install --user` torch in ~/.local would win over the host's
    if report_file is not None:
        env[REPORT_VAR] = str(report_file)
    # Installing from the notebook (docs/dependencies.md): `%pip`, `!pip` and `!uv pip` all install into the env
    # (VIRTUAL_ENV, the env's bin first on PATH, which holds a `pip` that runs the env's python) and keep the
    # host's packages.
    if excludes_file is not None:
        env["UV_EXCLUDE"] = str(excludes_file)  # `!uv pip install X`: host names are never installed/downloaded
    if constraints_file is not None:
        # `%pip install X`: the host's exact versions are kept (a constraint the server already had is kept too;
        # pip splits this variable on whitespace)
        theirs = env.get("PIP_CONSTRAINT", "")
        ours = str(constraints_file)
        env["PIP_CONSTRAINT"] = f"{theirs} {ours}" if theirs and " " not in ours and ours not in theirs.split() else ours
    env["PIP_REQUIRE_VIRTUALENV"] = "1"  # a host pip found further down PATH refuses to install into the host
    # `!uv add X` / `!uv remove X` / `!uv run` must not sync: a sync installs torch and its CUDA wheels into the
    # env (uv cannot see the host's). uv still edits pyproject.toml and uv.lock as asked; the next kernel
    # (re)start installs the change the uvkernel way.
    env["UV_NO_SYNC"] = "1"
    env.update(context or {})
    return env


def insert_after_env(path_value: str, env_path: Path, ours: Sequence[Path | None], dirs: Sequence[str]) -> str:
    """PATH with ``dirs`` right after the env's bin and uvkernel's own folders (``ours``), before the rest."""
    parts = [p for p in path_value.split(os.pathsep) if p]
    first = {str(env_path / "bin")} | {str(d) for d in ours if d is not None}
    keep = [p for p in parts if p in first]
    rest = [p for p in parts if p not in keep and p not in dirs]
    return os.pathsep.join(keep + [d for d in dirs if d not in keep] + rest)


def settings_context(settings: UvKernelSettings, host_python: str) -> dict[str, str]:
    """``UVKERNEL_SETTINGS`` for the kernel's environment: every setting's effective value, the host resolved."""
    values = {name: getattr(settings, name) for name in SETTING_NAMES}
    values["host_python"] = host_python
    return {SETTINGS_VAR: json.dumps(values, default=list, sort_keys=True)}


def tools_dir(cache_root: Path) -> Path | None:
    """A folder holding only a ``uvkernel`` command that runs this uvkernel (the one that prepared the env).

    On the kernel's PATH right after the env's bin, so `!uvkernel add pandas` in a cell finds it even where the
    server's bin folder is not on PATH, and never another ``uvkernel`` further down PATH.  Only that one name
    is added: the server's other commands (its python, pip, jupyter) stay out of the kernel's way.
    """
    digest = hashlib.sha256(sys.executable.encode()).hexdigest()[:16]
    folder = cache_root / "bin" / digest
    script = folder / "uvkernel"
    text = f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(LAUNCHER)} \"$@\"\n"
    try:
        if not script.is_file() or script.read_text() != text:
            private_dir(folder, readable=True)  # never a folder others may write into
            write_atomic(script, text, mode=0o755)
    except (OSError, UvkernelError):
        return None  # a read-only cache: the kernel works, only `!uvkernel` needs the full path
    return folder


def runs_host_python(script: str, host: HostPython) -> bool:
    """True when ``script``'s shebang runs the host's interpreter (a console script of a package installed into
    the host: torchrun).  That python sees none of the env's packages."""
    try:
        with open(script, "rb") as fh:
            first = fh.readline(512)
    except OSError:
        return False
    words = first[2:].decode(errors="replace").split() if first.startswith(b"#!") else []
    if not words:
        return False
    interpreter = words[0]
    return interpreter == host.executable or (not host.is_venv
                                              and os.path.realpath(interpreter) == os.path.realpath(host.executable))


def host_scripts_dir(cache_root: Path, host: HostPython) -> Path | None:
    """A folder of stand-ins for the host's console scripts, for the kernel's PATH after the env's own bin.

    A console script of a host package (`torchrun`) starts the host's python, which sees none of the env's
    packages: `!torchrun train.py` in a cell would run the training script, and every worker it starts, without
    the project's dependencies.  Each stand-in runs the same script under the kernel's python (``$VIRTUAL_ENV``),
    which sees the host's packages and the env's, as ``uvkernel run`` does.  Only the folder the host's installer
    writes scripts into is mirrored (a venv's bin, Debian's /usr/local/bin): the distribution's own tools keep
    their python.  None when the folder cannot be written (the kernel then finds the host's scripts as before).
    """
    if not host.scripts:
        return None
    source = host.scripts[0]
    digest = hashlib.sha256(host.executable.encode()).hexdigest()[:16]
    folder = cache_root / "bin" / f"host-{digest}"
    # A warm start reads one stamp: an installer adds, removes or replaces scripts by renaming, which changes the
    # folder's own mtime, so an unchanged folder has the stand-ins it had.  A folder changed in the last seconds
    # gets no stamp (a change within the same clock tick would leave the mtime as it was): it is read again.
    try:
        st = os.stat(source)
        settled = time.time_ns() - st.st_mtime_ns > 2_000_000_000
        stamp = json.dumps([source, host.executable, st.st_ino, st.st_mtime_ns]) if settled else ""
    except OSError:
        stamp = ""
    stamp_file = folder / ".source"
    try:
        if stamp and stamp_file.read_text() == stamp:
            return folder
    except (OSError, UnicodeDecodeError):
        pass
    wanted: dict[str, str] = {}
    try:
        names = sorted(os.listdir(source))
    except OSError:
        names = []
    for name in names:
        script = os.path.join(source, name)
        if name.startswith(".") or not os.path.isfile(script) or not os.access(script, os.X_OK):
            continue
        if runs_host_python(script, host):
            quoted = shlex.quote(script)
            wanted[name] = ("#!/bin/sh\n"
                            f'[ -n "${{VIRTUAL_ENV:-}}" ] && [ -x "$VIRTUAL_ENV/bin/python" ] && exec "$VIRTUAL_ENV/bin/python" {quoted} "$@"\n'
                            f'exec {quoted} "$@"\n')
    try:
        private_dir(folder, readable=True)  # never a folder others may write into
        for name in set(os.listdir(folder)) - set(wanted) - {stamp_file.name}:
            try:
                (folder / name).unlink()  # the host's script is gone: so is its stand-in
            except OSError:
                pass
        for name, text in wanted.items():
            script_path = folder / name
            if not script_path.is_file() or script_path.read_text() != text:
                write_atomic(script_path, text, mode=0o755)
        if stamp:
            write_atomic(stamp_file, stamp)
        elif stamp_file.exists():
            stamp_file.unlink()
    except (OSError, UnicodeDecodeError, UvkernelError):
        return None
    return folder


# ipykernel_launcher run as `-m` runs it, except that a kernel whose start fails exits at once.  A port given in the
# connection file can be taken by another process before the kernel binds it (jupyter_client picks free ports,
# then the kernel binds them: many kernels starting at once hit it); ipykernel then raises, and its process hangs
# in interpreter shutdown with its sockets still open, alive to the server, which waits for it forever.  Exited,
# it is started again, on new ports (the provisioner reads this exit code), by the server's restarter.  sys.path[0] is the working folder, as with -m
# (the launcher drops it when it is '', as -c leaves it, and the notebook's own modules must stay importable);
# under PYTHONSAFEPATH neither adds one.
START_FAILED_EXIT = 75  # EX_TEMPFAIL: the kernel never started, another try may work
KERNEL_START = (
    "import os, sys, runpy\n"
    "if sys.path and sys.path[0] == '':\n"
    "    sys.path[0] = os.getcwd()\n"
    "try:\n"
    "    runpy.run_module('ipykernel_launcher', run_name='__main__', alter_sys=True)\n"
    "except SystemExit:\n"
    "    raise\n"
    "except BaseException:\n"
    "    import traceback\n"
    "    traceback.print_exc()\n"
    "    sys.stderr.flush()\n"
    f"    os._exit({START_FAILED_EXIT})\n"
)


def kernel_command(env_python: Path, connection_file: str, python_version: tuple[int, ...],
                   magic_stub: Path | None = MAGIC_STUB_FILE) -> list[str]:
    cmd = [str(env_python)]
    if tuple(python_version[:2]) >= (3, 11):
        cmd.append("-Xfrozen_modules=off")  # as `ipykernel install` does: the debugger needs it
    cmd += ["-c", KERNEL_START, "-f", connection_file]
    if magic_stub is not None:
        # registers %uvkernel as a stub that reads the extension file on first use: compiling it at every start
        # would delay the kernel's first reply (run_path keeps no bytecode).  Both files are stdlib + IPython
        # only; the extension runs in its own namespace.
        cmd.append(f"--IPKernelApp.exec_files={[str(magic_stub)]!r}")
    return cmd
