"""Writing uvkernel's own files whole or not at all: a concurrent start reads the old file or the new one, never
half of one (several servers and terminals may start kernels for one env or host at once)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str, *, private: bool = False, make_parent: bool = False) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    ``private``: readable by its owner only (the per-user cache); ``make_parent``: create the folder first,
    private to its owner.  Raises OSError (callers decide whether a failed write matters)."""
    if make_parent:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
