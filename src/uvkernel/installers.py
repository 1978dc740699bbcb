"""Files in the env that the kernel's own installers read, so installs from a notebook leave the host alone.

``launch.kernel_environment`` points the kernel at them: ``UV_EXCLUDE`` (``!uv pip install``), ``PIP_CONSTRAINT``
(``%pip``/``!pip``), and a ``bin/pip`` so ``!pip`` is the env's pip and never the host's further down PATH.
"""

from __future__ import annotations

from pathlib import Path

from .files import write_atomic
from .host_packages import HostDist, provided

# For installs from inside the kernel: `!uv pip install` reads UV_EXCLUDE, `%pip install` PIP_CONSTRAINT.
HOST_EXCLUDES = ".uvkernel-host-provided.txt"
HOST_CONSTRAINTS = ".uvkernel-host-pins.txt"


def write_host_files(env_path: Path, host_dists: dict[str, HostDist], allow_shadowing: list[str]) -> None:
    """Files the kernel's installers read so they leave host packages alone (see launch.kernel_environment).

    HOST_EXCLUDES: every host name, for uv (``UV_EXCLUDE``): uv never installs or downloads them.
    HOST_CONSTRAINTS: the host's exact versions, for pip (``PIP_CONSTRAINT``): pip sees the host's packages
    and keeps them; a package that needs another version of one fails instead of shadowing it.
    """
    keep = provided(host_dists, allow_shadowing)
    names = sorted(d.name for d in keep.values())
    pins = sorted(p for p in (d.pin for d in keep.values()) if p)
    for name, lines in ((HOST_EXCLUDES, names), (HOST_CONSTRAINTS, pins)):
        write_atomic(env_path / name, "\n".join(lines) + "\n")


PIP_SHIM_MARK = "# uvkernel: pip for this env"
_PIP_SHIM = f"""#!/bin/sh
{PIP_SHIM_MARK} (uv venvs have no pip of their own). The env's python runs pip, so it installs here,
# never into the host; the kernel's PIP_CONSTRAINT keeps the host's packages.
exec "$(dirname -- "$0")/python" -m pip "$@"
"""


def write_pip_command(env_path: Path) -> None:
    """``!pip install X`` in the kernel must reach this env's pip, not the host's ``pip`` further down PATH."""
    for name in ("pip", "pip3"):
        target = env_path / "bin" / name
        if target.exists() or target.is_symlink():
            continue  # the env has a pip of its own (uv venv --seed, or pip installed into it)
        write_atomic(target, _PIP_SHIM, mode=0o755)
