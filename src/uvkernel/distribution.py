"""The distribution uvkernel ships as (``jupyter-uvkernel``), its version, and the unrelated ``uvkernel`` on PyPI.

The name ``uvkernel`` on PyPI belongs to another project (PEP 723 kernels).  Both own a top-level ``uvkernel``
package and a ``uvkernel`` command, so when both are installed in one environment whichever came last
overwrote the other's files.  :func:`foreign_distributions` finds that case so the CLI can say what to do.
"""

from __future__ import annotations

import functools
import sys
from importlib import metadata

from . import __version__
from .errors import UvkernelError
from .shared import canonical

DIST_NAME = "jupyter-uvkernel"
IMPORT_NAME = "uvkernel"


@functools.lru_cache(maxsize=None)
def version() -> str:
    """The installed distribution's version (package metadata); the source's ``__version__`` when not installed."""
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        return __version__


def foreign_distributions(deep: bool = False) -> list[tuple[str, str]]:
    """(name, version) of other distributions in this environment that own the ``uvkernel`` package or command.

    The quick check looks a distribution named ``uvkernel`` up by name (cheap enough for every CLI start);
    ``deep`` also reads every distribution's file list for ``uvkernel/`` files (``uvkernel check``).
    """
    found: dict[str, tuple[str, str]] = {}
    try:
        dist = metadata.distribution(IMPORT_NAME)
        found[canonical(dist.metadata["Name"] or IMPORT_NAME)] = (dist.metadata["Name"] or IMPORT_NAME, dist.version)
    except metadata.PackageNotFoundError:
        pass
    if deep:
        for dist in metadata.distributions():
            name = dist.metadata["Name"] or ""
            key = canonical(name)
            if not name or key == DIST_NAME or key in found:
                continue
            try:
                files = dist.files or []
            except Exception:  # a broken RECORD is not ours to report
                continue
            if any(f.parts[:1] == (IMPORT_NAME,) or f.name == IMPORT_NAME and "bin" in f.parts for f in files):
                found[key] = (name, dist.version)
    return sorted(found.values())


def foreign_warning(deep: bool = False) -> str:
    """The warning text (errors.FOREIGN_UVKERNEL), or '' when no other distribution owns uvkernel's files."""
    others = foreign_distributions(deep)
    if not others:
        return ""
    names = ", ".join(f"{n} {v}" for n, v in others)
    uninstall = " ".join(n for n, _ in others)
    return str(UvkernelError("FOREIGN_UVKERNEL", names=names, prefix=sys.prefix, python=sys.executable,
                             uninstall=uninstall))
