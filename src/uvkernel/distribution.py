"""The distribution uvkernel ships as (``jupyter-uvkernel``), its version, and the unrelated ``uvkernel`` on PyPI.

The name ``uvkernel`` on PyPI belongs to another project (PEP 723 kernels).  Both own a top-level ``uvkernel``
package and a ``uvkernel`` command, so when both are installed in one environment whichever came last
overwrote the other's files.  :func:`foreign_distributions` finds that case so the CLI can say what to do.

Both are read without ``importlib.metadata`` (its import and its parsing of every distribution cost more than
the CLI's whole start): the version is the source's ``__version__``, which the build writes into the
distribution's metadata (pyproject.toml reads it from ``__init__.py``), and the lookup lists the ``sys.path``
folders' ``*.dist-info`` names and reads only the files it needs.
"""

from __future__ import annotations

import os
import sys

from . import __version__
from .errors import UvkernelError
from .shared import canonical

DIST_NAME = "jupyter-uvkernel"
IMPORT_NAME = "uvkernel"


def version() -> str:
    """uvkernel's version: the source's, which is also the installed distribution's (one value, at build time)."""
    return __version__


def _dist_infos() -> list[str]:
    """The ``*.dist-info`` / ``*.egg-info`` folders on sys.path, first copy of a name first (import order)."""
    found = []
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        found += [os.path.join(entry or ".", n) for n in names if n.endswith((".dist-info", ".egg-info"))]
    return found


def _name_and_version(folder: str) -> tuple[str, str]:
    stem = os.path.basename(folder).rsplit(".", 1)[0]
    name, _, version = stem.partition("-")
    for header in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(folder, header), encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if not line.strip():
                        break
                    key, _, value = line.partition(":")
                    if key.lower() == "name":
                        name = value.strip()
                    elif key.lower() == "version":
                        version = value.strip()
            break
        except OSError:
            continue
    return name, version


def _owns_uvkernel(folder: str) -> bool:
    """Does the file list name ``uvkernel/`` files or a ``uvkernel`` command?  Read as bytes, not parsed."""
    for listing in ("RECORD", "installed-files.txt"):
        try:
            with open(os.path.join(folder, listing), "rb") as fh:
                data = b"\n" + fh.read()
        except OSError:
            continue
        if b"\nuvkernel/" in data or b"\n./uvkernel/" in data or b"/bin/uvkernel," in data:
            return True
    return False


def foreign_distributions(deep: bool = False) -> list[tuple[str, str]]:
    """(name, version) of other distributions in this environment that own the ``uvkernel`` package or command.

    The quick check looks for a distribution named ``uvkernel`` (a folder listing: cheap enough for every CLI
    start); ``deep`` also reads every distribution's file list for ``uvkernel/`` files (``uvkernel check``)."""
    found: dict[str, tuple[str, str]] = {}
    for folder in _dist_infos():
        stem = canonical(os.path.basename(folder).rsplit(".", 1)[0].partition("-")[0])
        if stem == IMPORT_NAME:
            name, version = _name_and_version(folder)
            found.setdefault(canonical(name or IMPORT_NAME), (name or IMPORT_NAME, version))
        elif deep and stem != DIST_NAME and stem not in found and _owns_uvkernel(folder):
            name, version = _name_and_version(folder)
            if name and canonical(name) != DIST_NAME:
                found.setdefault(canonical(name), (name, version))
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
