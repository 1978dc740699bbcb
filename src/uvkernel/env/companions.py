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
import tempfile
from pathlib import Path

from packaging.version import Version

from ..errors import DependencyError
from ..files import write_atomic
from ..settings import UvKernelSettings
from ..shared import Log, canonical
from ..uvbin import run_uv
from . import installed, requirements
from ..torch_builds import index_for, variant
from .protection import HostDist, allowed, provided, resolution_files, write_excludes


def mismatched(env_dists: dict[str, installed.EnvDist], host: dict[str, HostDist],
               declared: set[str]) -> list[installed.EnvDist]:
    """Env distributions built against torch (a shared object of theirs links libtorch/libc10: requiring torch is
    not enough, bitsandbytes requires it and links nothing of it), not of the host torch's variant, and without a
    declared source."""
    torch = host.get("torch")
    if torch is None or not variant(torch.version):
        return []
    want = variant(torch.version)
    return [d for k, d in sorted(env_dists.items())
            if k not in host and k not in declared and not d.editable and d.compiled and variant(d.version) != want
            and installed.links_torch(d)]


async def select(project_root: Path | None, env_python: Path, site_packages: Path, host: dict[str, HostDist],
                 settings: UvKernelSettings, uv: str, declared: set[str], cached: Path, log: Log) -> list[dict[str, str]]:
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
        try:
            pins = await _resolve(pins, wrong, env_python, host, settings, uv, index, project_root, log, torch)
        except DependencyError as exc:
            return _deferred(wrong, index, torch, exc, log)
        try:
            write_atomic(cached, "\n".join(pins) + "\n", make_parent=True)
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
        return _deferred(wrong, index, torch, refusal(wrong, index, torch.version, done.output), log)
    versions = {canonical(p.split("==")[0]): p.split("==")[1] for p in pins}
    return [{"name": d.name, "from": d.version, "to": versions.get(canonical(d.name), "?"), "index": index}
            for d in wrong]


async def _resolve(pins: list[str], wrong: list[installed.EnvDist], env_python: Path, host: dict[str, HostDist],
                   settings: UvKernelSettings, uv: str, index: str, cwd: Path | None, log: Log, torch: HostDist) -> list[str]:
    """The same releases of the host's variant, resolved against the host (their torch requirement included)."""
    keep = provided(host, settings.allow_shadowing)
    with tempfile.TemporaryDirectory(prefix="uvkernel-companions-") as tmp_name:
        tmp = Path(tmp_name)
        host_args, host_env, output = await asyncio.to_thread(resolution_files, host, keep, tmp)
        (tmp / "companions.txt").write_text("\n".join(pins) + "\n")
        log(f"looking for {', '.join(pins)} at {index}")
        done = await run_uv([uv, "pip", "compile", "--python", str(env_python), "--no-header", "--no-annotate",
                             "--quiet", str(tmp / "companions.txt"), *host_args, "--index", index],
                            step="resolved companions of the host's build", timeout=settings.uv_timeout, cwd=cwd,
                            check=False, extra_env=host_env)
        text = output.read_text() if done.returncode == 0 else ""
    if done.returncode != 0:
        raise refusal(wrong, index, torch.version, done.output)
    names = {canonical(d.name) for d in wrong}
    out = [line.strip() for line in text.splitlines()
           if (req := requirements.parse_requirement(line)) is not None and canonical(req.name) in names]
    return out or pins


def _deferred(wrong: list[installed.EnvDist], index: str, torch: HostDist, exc: DependencyError,
              log: Log) -> list[dict[str, str]]:
    """The variant's builds could not be had: whether the builds uv installed work is the preflight's to say (it
    loads them on the host's torch); a refusal then names the index and these builds."""
    log(f"notice: builds of {', '.join(d.name for d in wrong)} for the host's torch {torch.version} could not be "
        f"had from {index}; the preflight checks whether the installed ones load on the host's torch")
    return [{"name": d.name, "from": d.version, "to": "", "index": index, "unavailable": "true",
             "torch": torch.version, "detail": exc.detail[-2000:]} for d in wrong]


def unavailable_error(records: list[dict[str, str]], failed: set[str]) -> DependencyError | None:
    """COMPANION_BUILD_UNAVAILABLE for the deferred companions the preflight found not to load (``failed``: their
    canonical names), None when none of them failed."""
    chosen = [r for r in records if r.get("unavailable") and canonical(r["name"]) in failed]
    if not chosen:
        return None
    return refusal([installed.EnvDist(r["name"], r["from"], "", []) for r in chosen], chosen[0]["index"],
                   chosen[0]["torch"], chosen[0].get("detail", ""))


def refusal(wrong: list[installed.EnvDist], index: str, torch_version: str, output: str) -> DependencyError:
    names = ", ".join(f"{d.name} {d.version}" for d in wrong)
    want = variant(torch_version)
    return DependencyError(
        "COMPANION_BUILD_UNAVAILABLE", names=names, index=index, variant=want, torch=torch_version,
        first=wrong[0].name, pins=" ".join(f"'{d.name}=={Version(d.version).public}+{want}'" for d in wrong),
        facts=[("the host's torch", f"{torch_version} (build +{want})"),
               ("companions of another build", names), ("index asked", index),
               ("why", "they do not load on the host's torch, and the builds made for it could not be had")],
        detail=requirements.tail(output))
