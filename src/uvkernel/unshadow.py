"""``uvkernel unshadow [DIR] [--dry-run]``: remove the env's copies of packages the host provides.

A copy in the env wins over the host's on sys.path (the env's site-packages comes before the inherited ones): a torch installed by a plain
``uv sync`` or ``uv pip install`` hides the host's CUDA build.  This command removes exactly the env's
distributions whose names the host also provides, with ``uv pip uninstall --python <env>``, and nothing
else: not the rest of the env, not the host, not pyproject.toml or uv.lock.  Only copies of the host's protected
packages (its GPU stack) are removed: the env's own copy of a package outside the stack is what the project
needs, and packages listed in ``allow_shadowing`` are kept (they shadow the host on purpose).  It runs under the env's lock, so it never
races a kernel start preparing the same env.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

from . import env as stage2, pipeline
from .errors import MESSAGES, fill
from .settings import UvKernelSettings
from .uvbin import find_uv, run_uv


def say(code: str, out: Any = None, **fields: Any) -> None:
    message = MESSAGES[code]
    print(f"uvkernel: {fill(message.summary, fields)}", file=out or sys.stdout)
    print(f"next: {fill(message.fix, fields)}", file=out or sys.stdout)


def _row(item: dict[str, Any]) -> str:
    return (f"  {item['name']} {item['env_version']} in the env hides the host's {item['host_version']}"
            f" ({item['host_location']})")


async def shadows(settings: UvKernelSettings, folder: str, environ: Mapping[str, str]):
    """(host, project, host distributions, env distributions, [shadowing copies]) for the project holding ``folder``."""
    host, project, _root = await pipeline.locate(settings, folder, environ)
    site = stage2.site_packages_of(project.env_path, host.version)
    host_dists = await stage2.protection.marked(
        await stage2.list_host_distributions(host.executable, host.site_packages), settings)
    env_dists = await stage2.env_distributions(site)
    return host, project, host_dists, env_dists, stage2.shadowing(env_dists, host_dists, settings.allow_shadowing)


async def main(settings: UvKernelSettings, dir: str, environ: Mapping[str, str], dry_run: bool = False) -> int:
    host, project, host_dists, env_dists, found = await shadows(settings, dir, environ)
    env_path = project.env_path
    where = str(project.root or project.notebook_dir)
    if not (env_path / "pyvenv.cfg").exists():
        say("UNSHADOW_NO_ENV", env=env_path, project=where)
        return 0
    kept = [s for s in found if s["on_purpose"]]
    remove = [s for s in found if not s["on_purpose"]]
    for item in kept:
        why = "allow_shadowing" if item.get("protected", True) else "the env's own copy of a package outside the host's stack"
        print(f"  kept on purpose ({why}): {item['name']} {item['env_version']}")
    if not remove:
        say("UNSHADOW_NONE", env=env_path)
        return 0
    for item in remove:
        print(_row(item))
    if dry_run:
        say("UNSHADOW_DRY_RUN", count=len(remove), env=env_path, project=where)
        return 0

    uv, _how = find_uv(settings.uv_path)
    async with stage2.locked(env_path, pipeline.cache_root(settings), settings.lock_timeout):
        # a time-out or an unrunnable uv is an error like everywhere else; a failed uninstall is reported below
        done = await run_uv([uv, "pip", "uninstall", "--python", str(env_path / "bin" / "python"),
                             *[item["name"] for item in remove]], step=f"removed shadowing copies from {env_path}",
                            timeout=settings.uv_timeout, check=False, disk=str(env_path))
    if done.returncode != 0:
        print(done.output[-3000:], file=sys.stderr)
        say("UNSHADOW_FAILED", out=sys.stderr, env=env_path, returncode=done.returncode)
        return 1
    say("UNSHADOW_DONE", count=len(remove), env=env_path, project=where)
    # What is left in the env may have been built for the versions just removed: say so, remove nothing more.
    after = await stage2.env_distributions(stage2.site_packages_of(env_path, host.version))
    broken = stage2.broken_requirements(after, host_dists, host.version)
    if broken:
        for package, requirement, host_version in broken:
            print(f"  {package} requires {requirement}; the host has {host_version}")
        say("UNSHADOW_BROKEN")
    return 0


__all__ = ["main", "shadows"]
