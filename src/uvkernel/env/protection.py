"""What the host provides, and which of it is protected.

The interface::

    host_distributions(host, cache_root) -> {name: HostDist}   # read in the host interpreter, cached
    mark(host, settings) -> {name: HostDist}                    # the same, each with .protected set
    provided(host, allow_shadowing) -> the protected ones        # what uv must leave alone
    write_placeholders(host, folder), write_excludes(folder, keep), find_links_env(folder)

Two tiers.  What must stay the host's is its GPU stack: torch, its CUDA runtime, triton, and what is built
against them; a second copy of any of those in the env shadows the host's build and breaks it.  Anything else the
host happens to have (a distro's PyYAML, pip, setuptools, numpy, torch's pure-Python dependencies) is a version
that was there first: it is used when it satisfies the project, and a project that needs another gets its own
copy, as ``uv sync`` would give it, provided every protected host package that depends on it accepts it.

The protected set (``host_packages = "stack"``, the default):

* torch itself;
* torch's ``Requires-Dist`` closure on the host (markers evaluated, extras such as ``cuda-toolkit[cublas]``
  followed), limited to the names of a GPU stack (``torch*``, ``triton``, ``pytorch-triton*``, ``nvidia-*``,
  ``cuda-*``): torch's pure-Python dependencies are not part of it, nor is markupsafe under jinja2, which ships a
  small C speed-up but has nothing to do with torch's build;
* ``cupy-cuda*`` and ``jax-cuda*`` where present (hosts without torch);
* the host's companions of its torch: distributions that require torch (or are named ``torch*``) and ship
  compiled code, such as a host torchvision built for the host's torch;
* ``required_packages`` and ``protected_packages`` (names or shell patterns).

``host_packages = "all"`` keeps the old rule: every host distribution is protected.  ``allow_shadowing`` wins over
both: a name it matches is never protected (the env may get its own copy on purpose).

uv cannot see inherited packages (it only reads the env's own site-packages), so uvkernel tells it in two ways:

* for resolving, every host distribution becomes a placeholder wheel holding only a dist-info (its name, version
  and real ``Requires-Dist``) in a temporary find-links folder.  The protected ones are pinned to the host's
  version by a constraint and take part in the resolution, so uv honours what they need (torch's
  ``fsspec>=0.8.5``); the others are preferences, taken when they fit.  Placeholders never reach the isolated
  environments uv builds sdists in (a build constraint excludes each of their versions there), and they are
  never installed;
* for installing (and for ``!uv pip install`` in the kernel), every protected name goes into an ``--excludes``
  file, so uv neither installs nor downloads torch and its CUDA closure.

``pip`` sees inherited packages by itself; in the kernel it gets the protected packages' versions as constraints.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from .. import process
from ..files import write_atomic
from ..host import HostPython, stamp
from ..settings import UvKernelSettings
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
    # does its RECORD list a shared object? (what is built against torch is among those that do)
    record = d.read_text("RECORD") or ""
    compiled = any(".so," in line or ".so." in line.split(",", 1)[0] for line in record.splitlines())
    out[key] = {"name": name, "version": d.version, "location": loc, "requires": reqs, "compiled": compiled}
print(json.dumps(out))
"""

# names that belong to a GPU stack: the filter on torch's closure
_STACK_NAMES = re.compile(r"^(torch.*|triton|pytorch-triton(-.*)?|nvidia-.*|cuda-.*)$")
# accelerator builds of other frameworks, protected wherever a host has them
_OTHER_STACKS = re.compile(r"^(cupy-cuda.*|jax-cuda.*)$")
ROOTS = ("torch",)


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Is ``name`` one of ``patterns`` (names or shell patterns such as ``nvidia-*``, compared canonically)?"""
    key = canonical(name)
    return any(fnmatch.fnmatchcase(key, canonical(p)) for p in patterns)


def _requirements(requires: Iterable[str]) -> list[Requirement]:
    out = []
    for text in requires:
        try:
            out.append(Requirement(text))
        except InvalidRequirement:
            continue
    return out


def _applies(req: Requirement, env: Mapping[str, str], extras: Iterable[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in ("", *extras))


def closure(host: Mapping[str, Any], roots: Iterable[str], marker_env: Mapping[str, str] | None = None) -> set[str]:
    """Canonical names reachable from ``roots`` through the host's ``Requires-Dist`` (markers evaluated for the
    host, extras followed), among the host's own distributions."""
    env = dict(marker_env) if marker_env else {k: str(v) for k, v in default_environment().items()}
    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(canonical(r), frozenset()) for r in roots]
    visited: set[tuple[str, frozenset[str]]] = set()
    while todo:
        key, extras = todo.pop()
        if (key, extras) in visited or key not in host:
            continue
        visited.add((key, extras))
        seen.add(key)
        for req in _requirements(getattr(host[key], "requires", []) or []):
            if _applies(req, env, extras):
                todo.append((canonical(req.name), frozenset(req.extras)))
    return seen


def is_companion(dist: Any) -> bool:
    """A host distribution built against the host's torch: it requires torch (or is named torch*) and ships
    compiled code.  A pure-Python one (torchmetrics) runs on any torch and stays a preference."""
    if not getattr(dist, "compiled", False):
        return False
    if canonical(dist.name).startswith("torch"):
        return True
    return any(canonical(r.name) == "torch" and (r.marker is None or "extra" not in str(r.marker))
               for r in _requirements(getattr(dist, "requires", []) or []))


def stack_of(host: Mapping[str, Any], marker_env: Mapping[str, str] | None = None) -> set[str]:
    """torch, its GPU closure, other frameworks' accelerator builds and the host's compiled companions."""
    reach = closure(host, ROOTS, marker_env)
    out = {k for k in reach if _STACK_NAMES.match(k)}
    out |= {k for k in host if _OTHER_STACKS.match(k)}
    out |= {k for k, d in host.items() if k != "torch" and is_companion(d)}
    return out


@dataclass
class Protection:
    protected: dict[str, Any] = field(default_factory=dict)  # canonical name -> host distribution
    preferred: dict[str, Any] = field(default_factory=dict)
    rule: str = "stack"


def mark(host: Mapping[str, HostDist], settings: UvKernelSettings, marker_env: Mapping[str, str] | None = None
         ) -> dict[str, HostDist]:
    """The host's distributions, each a copy with ``protected`` set by the rule of the module's doc."""
    tiers = split(host, settings, marker_env)
    return {k: replace(d, protected=k in tiers.protected) for k, d in host.items()}


async def marked(host: Mapping[str, HostDist], settings: UvKernelSettings) -> dict[str, HostDist]:
    """:func:`mark` in a thread: it reads the ELF headers of the host's compiled packages (tens of ms on a CUDA
    host), which must not hold the Jupyter server's event loop."""
    return await asyncio.to_thread(mark, host, settings)


def split(host: Mapping[str, Any], settings: UvKernelSettings, marker_env: Mapping[str, str] | None = None) -> Protection:
    """The host's distributions in two tiers (see the module's doc)."""
    rule = str(getattr(settings, "host_packages", "stack") or "stack").lower()
    allow = list(getattr(settings, "allow_shadowing", []) or [])
    named = [*(getattr(settings, "required_packages", []) or []), *(getattr(settings, "protected_packages", []) or [])]
    if rule == "all":
        wanted = set(host)
    else:
        wanted = stack_of(host, marker_env) | {k for k, d in host.items() if matches(d.name, named)}
    result = Protection(rule=rule)
    for key, dist in host.items():
        if key in wanted and not matches(dist.name, allow):
            result.protected[key] = dist
        else:
            result.preferred[key] = dist
    return result


__all__ = ["Protection", "mark", "marked", "split", "stack_of", "closure", "is_companion", "matches", "canonical"]



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
    compiled: bool = False  # ships shared objects (its RECORD lists one)
    protected: bool = True  # part of the host's stack (see mark()); uv never installs a protected one

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
    return {key: HostDist(v["name"], v["version"], v["location"], v.get("requires") or [], bool(v.get("compiled")))
            for key, v in data.items()}


def provided(host: dict[str, HostDist], allow_shadowing: Iterable[str] = ()) -> dict[str, HostDist]:
    """The host distributions uv must leave alone: the protected ones, less those the user allows to be
    replaced."""
    patterns = list(allow_shadowing)
    return {key: d for key, d in host.items() if d.protected and not allowed(d.name, patterns)}


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


def placeholder_requires(dist: HostDist, host: Mapping[str, HostDist]) -> list[str]:
    """A host distribution's own ``Requires-Dist``, less requirements on GPU-stack names the host does not have
    (an optional CUDA wheel it lacks is the host's business, never something to fetch into the env)."""
    out = []
    for text in dist.requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        key = canonical(req.name)
        if key not in host and (_STACK_NAMES.match(key) or _OTHER_STACKS.match(key)):
            continue
        out.append(text)
    return out


def _extras_of(requires: Iterable[str]) -> list[str]:
    found: set[str] = set()
    for text in requires:
        found.update(re.findall(r"""extra\s*==\s*['"]([^'"]+)['"]""", text))
    return sorted(found)


def write_placeholders(host: dict[str, HostDist], folder: Path) -> tuple[list[str], list[str]]:
    """A wheel for each host distribution, holding only its dist-info: the host's name and version and its real
    requirements, so uv's resolution honours what the host's packages need.  Returns (``name==version`` lines,
    names without a valid version).  Never installed: what the resolution takes from the host stays the host's.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pins, unversioned = [], []
    for dist in host.values():
        pin = dist.pin
        if pin is None:
            unversioned.append(dist.name)
            continue
        version = str(Version(dist.version))
        requires = placeholder_requires(dist, host)
        stem = re.sub(r"[-_.]+", "_", dist.name).lower()
        info = f"{stem}-{version}.dist-info"
        lines = ["Metadata-Version: 2.1", f"Name: {dist.name}", f"Version: {version}",
                 "Summary: provided by the host interpreter (uvkernel placeholder)"]
        lines += [f"Provides-Extra: {extra}" for extra in _extras_of(requires)]
        lines += [f"Requires-Dist: {text}" for text in requires]
        with zipfile.ZipFile(folder / f"{stem}-{version}-py3-none-any.whl", "w") as whl:
            whl.writestr(f"{info}/METADATA", "\n".join(lines) + "\n")
            whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: uvkernel\nRoot-Is-Purelib: true\n"
                                          "Tag: py3-none-any\n")
            whl.writestr(f"{info}/RECORD", "")
        pins.append(pin)
    return sorted(pins), sorted(unversioned)


def resolution_files(host: dict[str, HostDist], keep: dict[str, HostDist], folder: Path,
                     preferences: Iterable[str] = ()) -> tuple[list[str], dict[str, str], Path]:
    """What ``uv pip compile`` needs to resolve against the host, written into ``folder``: returns (arguments,
    environment, the output file holding the preferences).

    * the placeholders of every host distribution, added to the user's find-links;
    * the protected ones as requirements and constraints at the host's versions: they take part in the
      resolution with their real requirements, whatever the project names;
    * every placeholder's version excluded from isolated builds (a build that needs setuptools gets the real one
      from the index, never an empty stand-in);
    * the output file, holding ``preferences`` (a stale lock's versions, say) then the other host versions:
      uv prefers what an existing output file lists, as ``uv lock`` keeps a lock's versions.
    """
    placeholders = folder / "host"
    pins, unversioned = write_placeholders(host, placeholders)
    protected = sorted(p for p in (d.pin for d in keep.values()) if p)
    (folder / "host-stack.txt").write_text("\n".join(protected) + "\n")
    (folder / "no-placeholder-builds.txt").write_text("\n".join(p.replace("==", "!=", 1) for p in pins) + "\n")
    given = list(preferences)
    named = {canonical(line.split("==")[0].split("[")[0]) for line in given if "==" in line}
    given += [d.pin for k, d in sorted(host.items()) if k not in keep and k not in named and d.pin]
    output = folder / "resolved.txt"
    output.write_text("\n".join(given) + "\n")
    args = [str(folder / "host-stack.txt"), "--constraints", str(folder / "host-stack.txt"),
            "--build-constraints", str(folder / "no-placeholder-builds.txt"), "--output-file", str(output)]
    if unversioned:
        (folder / "unversioned.txt").write_text("\n".join(unversioned) + "\n")
        args += ["--excludes", str(folder / "unversioned.txt")]
    return args, find_links_env(placeholders), output


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


_LISTING_FORMAT = 3  # 3: with the compiled flag of every distribution


async def host_distributions(host: HostPython, cache_root: Path) -> dict[str, HostDist]:
    """The host's distributions, cached in the per-user cache while the host's site-packages folders are unchanged
    (installing, upgrading or removing a package changes a folder's mtime)."""
    digest = hashlib.sha256(host.executable.encode()).hexdigest()[:24]
    path = cache_root / "hosts" / f"{digest}.dists.json"
    current = stamp(host.executable, host.prefix, host.site_packages)
    try:
        data = json.loads(path.read_bytes())
        if data["stamp"] == current and data.get("format") == _LISTING_FORMAT:
            return {k: HostDist(**v) for k, v in data["dists"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # a garbled or older cache file
        pass
    dists = await list_host_distributions(host.executable, host.site_packages)
    if dists:
        try:
            write_atomic(path, json.dumps({"stamp": current, "format": _LISTING_FORMAT,
                                           "dists": {k: vars(v) for k, v in dists.items()}}),
                         make_parent=True)
        except OSError:
            pass
    return dists
