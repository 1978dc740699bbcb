"""What of the host is protected, and what of it is only preferred.

The interface::

    split(host, settings) -> Protection      # the host's distributions in two tiers
    Protection.protected                     # never installed into the env, fixed at the host's versions
    Protection.preferred                     # used when their version satisfies the project; else the env
                                             # gets its own copy
    stack_of(host) -> set[str]               # torch, its GPU closure and the host's compiled companions

Why two tiers: what must stay the host's is the GPU stack (torch, its CUDA runtime, triton, and whatever is
built against them); a second copy of any of those in the env shadows the host's build and breaks it.  Anything
else the host happens to have (a distro's PyYAML, pip, setuptools, numpy, torch's pure-Python dependencies) is
just a version that was there first: a project that needs another gets its own copy, as ``uv sync`` would give
it, provided every protected host package that depends on it accepts that version.

The protected set (``host_packages = "stack"``, the default):

* torch itself;
* torch's ``Requires-Dist`` closure on the host (markers evaluated, extras such as ``cuda-toolkit[cublas]``
  followed), limited to the names of a GPU stack (``torch*``, ``triton``, ``pytorch-triton*``, ``nvidia-*``,
  ``cuda-*``): torch's pure-Python dependencies (sympy, jinja2, and markupsafe under it, which ships a small C
  speed-up) are not part of it;
* ``cupy-cuda*`` and ``jax-cuda*`` where present (hosts without torch);
* the host's companions of its torch: distributions that require torch (or are named ``torch*``) and ship
  compiled code, such as a host torchvision built for the host's torch;
* ``required_packages`` and ``protected_packages`` (names or shell patterns).

``host_packages = "all"`` keeps the old rule: every host distribution is protected.  ``allow_shadowing`` wins over
both: a name it matches is never protected (the env may get its own copy on purpose).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

# names that belong to a GPU stack: the filter on torch's closure
_STACK_NAMES = re.compile(r"^(torch.*|triton|pytorch-triton(-.*)?|nvidia-.*|cuda-.*)$")
# accelerator builds of other frameworks, protected wherever a host has them
_OTHER_STACKS = re.compile(r"^(cupy-cuda.*|jax-cuda.*)$")
ROOTS = ("torch",)


def canonical(name: str) -> str:
    return canonicalize_name(name)


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
    env = dict(marker_env or default_environment())
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

    def why(self) -> dict[str, str]:
        return {d.name: d.version for d in self.protected.values()}


def split(host: Mapping[str, Any], settings: Any, marker_env: Mapping[str, str] | None = None) -> Protection:
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


__all__ = ["Protection", "split", "stack_of", "closure", "is_companion", "matches", "canonical"]


# --- what stands for the protected packages while uv resolves ---------------------------------------------

def _extras_of(requires: Iterable[str]) -> list[str]:
    found = set()
    for text in requires:
        found.update(re.findall(r"""extra\s*==\s*['"]([^'"]+)['"]""", text))
    return sorted(found)


def placeholder_requires(dist: Any, protected: Mapping[str, Any]) -> list[str]:
    """A protected distribution's own ``Requires-Dist``, less requirements on GPU-stack names the host does not
    have (an optional CUDA wheel it lacks is the host's business, never something to fetch into the env)."""
    out = []
    for text in getattr(dist, "requires", []) or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        key = canonical(req.name)
        if key in protected:
            out.append(text)
        elif _STACK_NAMES.match(key) or _OTHER_STACKS.match(key):
            continue
        else:
            out.append(text)
    return out


def write_placeholders(protected: Mapping[str, Any], folder: Path) -> tuple[list[str], list[str]]:
    """A wheel for each protected distribution, holding only its dist-info: the host's name and version and its
    real requirements, so uv's resolution honours what the host's stack needs (torch's ``fsspec>=0.8.5``, a
    host torchvision's numpy).  Returns (``name==version`` pins, names without a valid version).

    They are offered only to the resolution of the project's own requirements, never to the isolated
    environments uv builds sdists in, and they are never installed."""
    import zipfile

    from packaging.version import InvalidVersion, Version

    folder.mkdir(parents=True, exist_ok=True)
    pins, unversioned = [], []
    for dist in protected.values():
        try:
            version = str(Version(dist.version))
        except InvalidVersion:
            unversioned.append(dist.name)
            continue
        requires = placeholder_requires(dist, protected)
        stem = re.sub(r"[-_.]+", "_", dist.name).lower()
        info = f"{stem}-{version}.dist-info"
        lines = [f"Metadata-Version: 2.1", f"Name: {dist.name}", f"Version: {version}",
                 "Summary: provided by the host interpreter (uvkernel placeholder)"]
        lines += [f"Provides-Extra: {extra}" for extra in _extras_of(requires)]
        lines += [f"Requires-Dist: {text}" for text in requires]
        with zipfile.ZipFile(folder / f"{stem}-{version}-py3-none-any.whl", "w") as whl:
            whl.writestr(f"{info}/METADATA", "\n".join(lines) + "\n")
            whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: uvkernel\nRoot-Is-Purelib: true\n"
                                          "Tag: py3-none-any\n")
            whl.writestr(f"{info}/RECORD", "")
        pins.append(f"{dist.name}=={version}")
    return sorted(pins), sorted(unversioned)
