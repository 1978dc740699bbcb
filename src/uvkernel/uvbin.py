"""Finding the uv binary.

Order (documented in the README): the ``uv_path`` setting, then the binary shipped by the ``uv`` PyPI
package (``uv.find_uv_bin()``), then ``uv`` on PATH.  PATH comes last because a spawner's or a systemd
unit's PATH is rarely a login shell's.
"""

from __future__ import annotations

import functools
import os
import shutil
from typing import Mapping, Sequence

from . import process, progress
from .errors import EnvError, UvError


def find_uv(explicit: str = "", spec: str = "the kernel spec") -> tuple[str, str]:
    """Return (path, how it was found).  An explicit ``uv_path`` that is not usable is an error, never skipped."""
    looked: list[str] = []
    if explicit:
        path = os.path.expanduser(explicit)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path), "uv_path setting"
        raise UvError("UV_PATH_INVALID", path=explicit, spec=spec)
    path, how = _packaged_uv()
    if path and os.path.isfile(path):
        return path, "the uv Python package"
    looked.append(how)
    found = shutil.which("uv")
    if found:
        return found, "PATH"
    looked.append("PATH")
    raise UvError("UV_NOT_FOUND", looked=", ".join(looked))


@functools.lru_cache(maxsize=1)
def _packaged_uv() -> tuple[str, str]:
    """The uv PyPI package's binary, looked up once per process (its lookup expands sysconfig's paths: 0.5 ms of
    every start); the caller checks the file is still there."""
    try:
        import uv  # the PyPI package that ships the binary

        return uv.find_uv_bin() or "", "the uv Python package"
    except (ImportError, FileNotFoundError):
        return "", "the uv Python package (not installed)"


def uv_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment uv runs with: never download a Python, never pick one up from the project."""
    env = dict(os.environ if base is None else base)
    env["UV_PYTHON_DOWNLOADS"] = "never"
    # FORCE_COLOR / CLICOLOR_FORCE: ipykernel sets them for `!` commands (`!uvkernel add X`); uv's output is parsed
    for key in ("UV_PYTHON", "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONHOME", "UV_SYSTEM_PYTHON", "FORCE_COLOR",
                "CLICOLOR_FORCE"):
        env.pop(key, None)
    env["NO_COLOR"] = "1"
    env.setdefault("UV_NO_PROGRESS", "1")
    return env


GENERIC_FIX = "read uv's message above; run uvkernel check in the notebook's folder for the full report"


def no_space(text: str) -> bool:
    return "No space left on device" in text or "os error 28" in text


async def run_uv(args: list[str], *, step: str, timeout: float, cwd: "os.PathLike[str] | str | None" = None,
                 fix: str = GENERIC_FIX, check: bool = True, disk: str = "the env",
                 extra_env: Mapping[str, str] | None = None, via: Sequence[str] = ()):
    """Run uv (async, own process group) and turn its failures into uvkernel errors, in one place.

    ``step`` completes "uv failed while it ..."; ``check=False`` returns a failed run to the caller (which
    explains it better), but a time-out, an unrunnable binary and a full disk are always errors.
    ``extra_env``: variables set for this uv run only (e.g. UV_PROJECT_ENVIRONMENT for `uv add`); ``via``: a
    command uv runs under (the watcher of `uv add`), which takes uv's arguments after its own.
    """
    # the preparation's progress hears the command, then each line uv writes as it writes it ("Resolved N
    # packages", "Building X"), so a long build shows what it is doing while it runs
    on_line = progress.uv_started([str(a) for a in args], step)
    try:
        done = await process.run([*via, *args], env={**uv_environment(), **(extra_env or {})}, timeout=timeout,
                                 cwd=cwd, on_line=on_line)
    except OSError as exc:  # uv_path names something that cannot be executed
        raise UvError("UV_FAILED", step=step, returncode=exc.errno or -1, detail=f"{args[0]}: {exc.strerror or exc}",
                      fix="point uv_path at a working uv binary, or remove the setting") from None
    if done.timed_out:
        raise UvError("UV_TIMEOUT", step=step, timeout=int(timeout))
    if done.returncode != 0 and no_space(done.output):
        raise EnvError("DISK_FULL", env=disk, step=step, detail=done.output[-2000:])
    if done.returncode != 0 and check:
        raise UvError("UV_FAILED", step=step, returncode=done.returncode, detail=done.output[-4000:], fix=fix)
    return done
