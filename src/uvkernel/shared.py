"""The small things every layer of uvkernel uses: the log callback's type, the phase hook, the canonical package
name, and the kernel spec's names and launcher (here, not in kernelspec.py, so the CLI's parser and the launch
code need no jupyter_client)."""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import Callable

Log = Callable[[str], None]  # one line for the user (the CLI's stderr, the server's log)

# Told when a start enters a stage ("finding the project", "preparing the env", "checking the host stack"): the
# provisioner's progress events name the phase without reading it out of the log lines' wording.
PHASE: "ContextVar[Callable[[str], None] | None]" = ContextVar("uvkernel_phase", default=None)


def phase(name: str) -> None:
    hook = PHASE.get()
    if hook is not None:
        hook(name)


def canonical(name: str) -> str:
    """A distribution name as packaging.utils.canonicalize_name writes it: runs of ``-_.`` become ``-``, lowercase."""
    return re.sub(r"[-_.]+", "-", name).lower()


DEFAULT_NAME = "uvkernel"
DEFAULT_DISPLAY_NAME = "Python (uv + host stack)"

# ``python -m uvkernel`` would put the kernel's cwd (the notebook's folder) first on sys.path, so a json.py or
# uvkernel/ there would run in Jupyter's interpreter; -c puts '' there, and it is removed before any import.
LAUNCHER = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
            "from uvkernel.cli import main; sys.exit(main())")
