"""What the host provides: its installed distributions, read in the host interpreter.

uv cannot see inherited packages (it only reads the env's own site-packages), so uvkernel tells it in two ways:

* for resolving, every host distribution becomes a tiny placeholder wheel (name, version, no files, no
  requirements) in a temporary find-links folder, pinned to the host's exact version by a constraint.  uv
  then resolves the project's requirements *against the host's versions*: it backtracks to a
  ``torchvision`` built for the host's torch, or says precisely which requirement the host cannot meet;
* for installing (and for ``!uv pip install`` in the kernel), every host name goes into an ``--excludes``
  file, so uv neither installs nor downloads torch and its CUDA closure.

``pip`` sees inherited packages by itself; in the kernel it gets the host's exact versions as constraints.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from packaging.version import InvalidVersion, Version

from .. import process
from ..files import write_atomic
from ..host import HostPython, stamp
from ..shared import canonical

# Runs in the host (stdlib only).  Reads the site-packages folders passed as arguments, nothing else, so a
# user-site or PYTHONPATH copy is never mistaken for the host's.
_LIST_DISTS = r"""
import json, sys
try:
    from importlib import metadata
except ImportError:
    print("{}"); raise SystemExit
out = {}
for d in metadata.distributions(path=sys.argv[1:]):
    name = d.metadata["Name"]
    if not name:
        continue
    key = name.lower().replace("_", "-").replace(".", "-")
    while "--" in key:
        key = key.replace("--", "-")
    if key in out:
        continue
    try:
        loc = str(d.locate_file(""))
    except Exception:
        loc = ""
    reqs = d.requires or []
    out[key] = {"name": name, "version": d.version, "location": loc, "requires": reqs}
print(json.dumps(out))
"""

# The torch stack: never installed into an env unless the user allows it, whatever else happens.
_STACK = re.compile(r"^(torch|triton|pytorch-triton(-.*)?|nvidia-.*|cuda-.*|cupy-cuda.*|jax-cuda.*)$")


def is_stack_package(name: str) -> bool:
    return bool(_STACK.match(canonical(name)))


def allowed(name: str, patterns: Iterable[str]) -> bool:
    """Is ``name`` in ``allow_shadowing``?  Entries are names or shell patterns (``nvidia-*``, ``*``)."""
    key = canonical(name)
    return any(fnmatch.fnmatchcase(key, canonical(p)) for p in patterns)


@dataclass
class HostDist:
    name: str
    version: str
    location: str
    requires: list[str]

    @property
    def pin(self) -> str | None:
        """``name==version`` for a constraint file, or None when the version is not a valid one."""
        try:
            return f"{self.name}=={Version(self.version)}"
        except InvalidVersion:
            return None


async def list_host_distributions(python: str, site_packages: list[str], timeout: float = 60) -> dict[str, HostDist]:
    done = await process.run([python, "-I", "-c", _LIST_DISTS, *site_packages], timeout=timeout)
    if done.returncode != 0 or done.timed_out:
        return {}
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return {key: HostDist(v["name"], v["version"], v["location"], v.get("requires") or []) for key, v in data.items()}


def provided(host: dict[str, HostDist], allow_shadowing: Iterable[str] = ()) -> dict[str, HostDist]:
    """The host distributions uv must leave alone: all of them, less those the user allows to be replaced."""
    patterns = list(allow_shadowing)
    return {key: d for key, d in host.items() if not allowed(d.name, patterns)}


def signature(site_packages: Iterable[str]) -> str:
    """Changes when a package is added, removed or upgraded in the host (each install touches the folder)."""
    parts = []
    for folder in site_packages:
        try:
            st = os.stat(folder)
            parts.append(f"{folder}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{folder}:absent")
    return "|".join(parts)


def write_placeholders(host: dict[str, HostDist], folder: Path) -> tuple[list[str], list[str]]:
    """Placeholder wheels for the resolver; returns (constraint lines, names without a valid version).

    A placeholder is a wheel holding only a dist-info: the host's name and version and no requirements (the
    host is responsible for its own packages' dependencies).  It is never installed: everything host-provided
    is excluded from the install that follows.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pins, unversioned = [], []
    for dist in host.values():
        pin = dist.pin
        if pin is None:
            unversioned.append(dist.name)
            continue
        version = str(Version(dist.version))
        stem = re.sub(r"[-_.]+", "_", dist.name).lower()
        info = f"{stem}-{version}.dist-info"
        with zipfile.ZipFile(folder / f"{stem}-{version}-py3-none-any.whl", "w") as whl:
            whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist.name}\nVersion: {version}\n"
                                             "Summary: provided by the host interpreter (uvkernel placeholder)\n")
            whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: uvkernel\nRoot-Is-Purelib: true\n"
                                          "Tag: py3-none-any\n")
            whl.writestr(f"{info}/RECORD", "")
        pins.append(pin)
    return sorted(pins), sorted(unversioned)


def write_excludes(folder: Path, keep: dict[str, HostDist]) -> Path:
    """An ``--excludes`` file naming every distribution the host keeps providing: uv neither installs nor
    downloads them."""
    path = folder / "host-provided.txt"
    path.write_text("\n".join(sorted(d.name for d in keep.values())) + "\n")
    return path


def find_links_env(folder: Path) -> dict[str, str]:
    """uv's environment with the placeholders added to the user's find-links.  ``UV_FIND_LINKS`` is a
    comma-separated list; a ``--find-links`` flag would replace the user's list (an air-gapped wheelhouse) instead
    of adding to it."""
    user = os.environ.get("UV_FIND_LINKS", "").strip().strip(",")
    return {"UV_FIND_LINKS": f"{user},{folder}" if user else str(folder)}


async def host_distributions(host: HostPython, cache_root: Path) -> dict[str, HostDist]:
    """The host's distributions, cached in the per-user cache while the host's site-packages folders are unchanged
    (installing, upgrading or removing a package changes a folder's mtime)."""
    digest = hashlib.sha256(host.executable.encode()).hexdigest()[:24]
    path = cache_root / "hosts" / f"{digest}.dists.json"
    current = stamp(host.executable, host.prefix, host.site_packages)
    try:
        data = json.loads(path.read_bytes())
        if data["stamp"] == current:
            return {k: HostDist(**v) for k, v in data["dists"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # a garbled or older cache file
        pass
    dists = await list_host_distributions(host.executable, host.site_packages)
    if dists:
        try:
            write_atomic(path, json.dumps({"stamp": current, "dists": {k: vars(v) for k, v in dists.items()}}),
                         make_parent=True)
        except OSError:
            pass
    return dists
