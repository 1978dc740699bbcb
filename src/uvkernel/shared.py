"""The small things every layer of uvkernel uses: the ``log`` parameter's type, the canonical package name, and
the kernel spec's names and launcher (here, not in kernelspec.py, so the CLI's parser and the launch code need no
jupyter_client)."""

from __future__ import annotations

import re
from typing import Callable

# What every stage takes as ``log``: a line for the user.  In a start it is a progress.Reporter, which hands the
# line with the phase, uv's counts and the elapsed time to the terminal, the server's log and the start events;
# a stage only ever calls it with the line.
Log = Callable[[str], None]


def canonical(name: str) -> str:
    """A distribution name as packaging.utils.canonicalize_name writes it: runs of ``-_.`` become ``-``, lowercase."""
    return re.sub(r"[-_.]+", "-", name).lower()


DEFAULT_NAME = "uvkernel"
DEFAULT_DISPLAY_NAME = "Python (uv + host stack)"

# ``python -m uvkernel`` would put the kernel's cwd (the notebook's folder) first on sys.path, so a json.py or
# uvkernel/ there would run in Jupyter's interpreter; -c puts '' there, and it is removed before any import.
LAUNCHER = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
            "from uvkernel.cli import main; sys.exit(main())")
