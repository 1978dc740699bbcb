"""The two small things every layer of uvkernel uses: the log callback's type and the canonical package name."""

from __future__ import annotations

import re
from typing import Callable

Log = Callable[[str], None]  # one line for the user (the CLI's stderr, the server's log)


def canonical(name: str) -> str:
    """A distribution name as packaging.utils.canonicalize_name writes it: runs of ``-_.`` become ``-``, lowercase."""
    return re.sub(r"[-_.]+", "-", name).lower()
