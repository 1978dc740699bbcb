"""The small things every layer of uvkernel uses: the log callback's type, the phase hook and the canonical
package name."""

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
