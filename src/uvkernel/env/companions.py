"""Torch companions of the host's build: torchvision and friends from the index of the host torch's variant.

PyPI's torchvision (and every package with extensions built against torch) is built for PyPI's torch build; its
compiled ops do not load into a host torch from a PyTorch index (``2.13.0+cpu``, ``+cu128``, ``+rocm6.4``) or an
NGC build (each is compiled against one torch build's C++ library).  After uv installed the project, each env
distribution that requires torch, ships compiled code (pure-Python ones such as torchmetrics run on any build) and whose build does not carry the
host's variant is replaced by the same release of that variant, taken from:

* the index the project declares for it (``[tool.uv.sources]``): uv already installed it from there, so it is
  left as the project chose (the preflight's companion check still loads it);
* otherwise the ``companion_index`` setting, by default the PyTorch index of the host's variant
  (``https://download.pytorch.org/whl/cpu`` for ``+cpu``).  ``companion_index = "none"`` turns this off, and a
  name in ``allow_companion_mismatch`` is kept as uv installed it.

Resolution runs against the host's placeholders, so a companion whose requirement on torch the host does not
meet is never installed.  Offline, behind a mirror, or where that index cannot be reached, the start is refused
with the companion, the index and the ways to provide the right build.  What was chosen is kept in uvkernel's
cache, so later cold starts of the same inputs install it without asking the index again.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from ..errors import DependencyError
from ..shared import Log, canonical
from ..uvbin import run_uv
from . import installed, requirements
from .protection import HostDist, allowed, find_links_env, provided, write_excludes, write_placeholders
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
OFF = "none"


def variant(version: str) -> str:
    """The local part of a version: 'cpu' for 2.13.0+cpu, '' for a PyPI build."""
    try:
        return Version(version).local or ""
    except InvalidVersion:
        return ""


def index_for(setting: str, torch_version: str) -> str:
    """The index for companions of this torch: the setting, else the PyTorch index of its variant, else ''."""
    if setting:
        return "" if setting.strip().lower() == OFF else setting
    local = variant(torch_version)
    return PYTORCH_INDEX + local if re.fullmatch(r"cpu|cu\d+|rocm[\d.]+|xpu", local) else ""


def _requires_torch(requires: list[str]) -> bool:
    for text in requires:
        if requirements.requirement_name(text) != "torch":
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if canonical(req.name) == "torch" and (req.marker is None or "extra" not in str(req.marker)):
            return True
    return False


def mismatched(env_dists: dict[str, installed.EnvDist], host: dict[str, HostDist],
               declared: set[str]) -> list[installed.EnvDist]:
    """Env distributions that require torch and ship compiled code (a pure-Python torchmetrics runs on any torch
    build), are not of the host torch's variant, and have no declared source."""
    torch = host.get("torch")
    if torch is None or not variant(torch.version):
        return []
    want = variant(torch.version)
    return [d for k, d in sorted(env_dists.items())
            if k not in host and k not in declared and not d.editable and d.compiled and _requires_torch(d.requires)
            and variant(d.version) != want]


async def select(project_root: Path | None, env_python: Path, site_packages: Path, host: dict[str, HostDist],
                 settings: Any, uv: str, declared: set[str], cached: Path, log: Log) -> list[dict[str, str]]:
    """Replace companions of another build by the host variant's; returns one record per replacement."""
    env_dists = await installed.env_distributions(site_packages)
    # allowed by name (allow_companion_mismatch): kept as uv installed it
    let_be = {canonical(d.name) for d in env_dists.values()
              if allowed(d.name, getattr(settings, "allow_companion_mismatch", []))}
    wrong = mismatched(env_dists, host, declared | let_be)
    if not wrong:
        return []
    torch = host["torch"]
    index = index_for(getattr(settings, "companion_index", ""), torch.version)
    if not index:
        return []  # turned off: the preflight's companion check decides
    want = variant(torch.version)
    pins = [f"{d.name}=={Version(d.version).public}+{want}" for d in wrong]
    try:
        kept = cached.read_text().splitlines()
    except OSError:
        kept = []
    if kept and {canonical(p.split("==")[0]) for p in kept} == {canonical(d.name) for d in wrong}:
        pins = kept
    else:
        pins = await _resolve(pins, wrong, env_python, host, settings, uv, index, project_root, log, torch)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            cached.write_text("\n".join(pins) + "\n")
        except OSError:
            pass
    keep = provided(host, settings.allow_shadowing)
    with tempfile.TemporaryDirectory(prefix="uvkernel-companions-") as tmp:
        excludes = write_excludes(Path(tmp), keep)
        log(f"installing companions built for the host's torch {torch.version}: {', '.join(pins)} from {index}")
        done = await run_uv([uv, "pip", "install", "--python", str(env_python), "--no-deps", "--excludes",
                             str(excludes), "--index", index, *pins], step="installed companions of the host's build",
                            timeout=settings.uv_timeout, cwd=project_root, check=False)
    if done.returncode != 0:
        raise _refusal(wrong, index, torch, done.output)
    versions = {canonical(p.split("==")[0]): p.split("==")[1] for p in pins}
    return [{"name": d.name, "from": d.version, "to": versions.get(canonical(d.name), "?"), "index": index}
            for d in wrong]


async def _resolve(pins: list[str], wrong: list[installed.EnvDist], env_python: Path, host: dict[str, HostDist],
                   settings: Any, uv: str, index: str, cwd: Path | None, log: Log, torch: HostDist) -> list[str]:
    """The same releases of the host's variant, resolved against the host (their torch requirement included)."""
    keep = provided(host, settings.allow_shadowing)
    with tempfile.TemporaryDirectory(prefix="uvkernel-companions-") as tmp_name:
        tmp = Path(tmp_name)
        placeholders = tmp / "host"
        host_pins, _unversioned = await asyncio.to_thread(write_placeholders, keep, placeholders)
        (tmp / "host-versions.txt").write_text("\n".join(host_pins) + "\n")
        (tmp / "companions.txt").write_text("\n".join(pins) + "\n")
        log(f"looking for {', '.join(pins)} at {index}")
        done = await run_uv([uv, "pip", "compile", "--python", str(env_python), "--no-header", "--no-annotate",
                             "--quiet", str(tmp / "companions.txt"), "--constraints",
                             str(tmp / "host-versions.txt"), "--index", index],
                            step="resolved companions of the host's build", timeout=settings.uv_timeout, cwd=cwd,
                            check=False, extra_env=find_links_env(placeholders))
    if done.returncode != 0:
        raise _refusal(wrong, index, torch, done.output)
    names = {canonical(d.name) for d in wrong}
    out = [line.strip() for line in done.stdout.splitlines()
           if (req := requirements.parse_requirement(line)) is not None and canonical(req.name) in names]
    return out or pins


def _refusal(wrong: list[installed.EnvDist], index: str, torch: HostDist, output: str) -> DependencyError:
    names = ", ".join(f"{d.name} {d.version}" for d in wrong)
    want = variant(torch.version)
    return DependencyError(
        "COMPANION_BUILD_UNAVAILABLE", names=names, index=index, variant=want, torch=torch.version,
        first=wrong[0].name, pins=" ".join(f"'{d.name}=={Version(d.version).public}+{want}'" for d in wrong),
        facts=[("the host's torch", f"{torch.version} (build +{want})"),
               ("companions of another build", names), ("index asked", index)],
        detail=requirements.tail(output))
