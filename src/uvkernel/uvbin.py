"""Finding the uv binary.

Order (documented in the README): the ``uv_path`` setting, then the binary shipped by the ``uv`` PyPI
package (``uv.find_uv_bin()``), then ``uv`` on PATH.  PATH comes last because a spawner's or a systemd
unit's PATH is rarely a login shell's.
"""

from __future__ import annotations

import os
import shutil

from .errors import UvError


def find_uv(explicit: str = "", spec: str = "the kernel spec") -> tuple[str, str]:
    """Return (path, how it was found).  An explicit ``uv_path`` that is not usable is an error, never skipped."""
    looked: list[str] = []
    if explicit:
        path = os.path.expanduser(explicit)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path), "uv_path setting"
        raise UvError("UV_PATH_INVALID", path=explicit, spec=spec)
    try:
        import uv  # the PyPI package that ships the binary

        path = uv.find_uv_bin()
        if path and os.path.isfile(path):
            return path, "the uv Python package"
        looked.append("the uv Python package")
    except (ImportError, FileNotFoundError):
        looked.append("the uv Python package (not installed)")
    found = shutil.which("uv")
    if found:
        return found, "PATH"
    looked.append("PATH")
    raise UvError("UV_NOT_FOUND", looked=", ".join(looked))


def uv_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment uv runs with: never download a Python, never pick one up from the project."""
    env = dict(os.environ if base is None else base)
    env["UV_PYTHON_DOWNLOADS"] = "never"
    for key in ("UV_PYTHON", "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONHOME", "UV_SYSTEM_PYTHON"):
        env.pop(key, None)
    env.setdefault("UV_NO_PROGRESS", "1")
    return env
