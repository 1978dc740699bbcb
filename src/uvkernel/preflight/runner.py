"""Run the probe in the env with the kernel's exact environment, then apply the policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from .. import process
from .result import Failure, PreflightResult

PROBE = Path(__file__).with_name("probe.py")


async def run(*, python: Path, env: Mapping[str, str], cwd: Path, settings: Any, host: Any, env_path: Path,
              project_root: Path | None, cache_root: Path, recheck: bool = False) -> PreflightResult:
    args = [str(python), str(PROBE), json.dumps({"packages": list(settings.required_packages) + ["ipykernel"],
                                                 "host_site_packages": host.site_packages,
                                                 "env": str(env_path)})]
    done = await process.run(args, env=env, cwd=cwd, timeout=settings.preflight_timeout)
    result = PreflightResult()
    project = str(project_root or cwd)
    if done.timed_out:
        result.failures.append(Failure("PROBE_TIMEOUT", {"timeout": int(settings.preflight_timeout)}))
        return result
    try:
        facts = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result.failures.append(Failure("PROBE_FAILED", {"detail": done.output[-2000:] or "no output",
                                                        "project": project}))
        return result
    result.facts = facts
    for name, info in facts["packages"].items():
        if name == "ipykernel":
            if info["origin"] == "missing":
                result.failures.append(Failure("IPYKERNEL_MISSING", {"host_python": host.executable}))
            continue
        if info["origin"] == "missing":
            result.failures.append(Failure("TORCH_NOT_FOUND", {"package": name, "host_python": host.executable}))
        elif info["origin"] != "host" and name.lower() not in {n.lower() for n in settings.allow_shadowing}:
            result.failures.append(Failure("TORCH_SHADOWED", {"package": name, "found": info["location"],
                                                              "host": info.get("host_copy") or "none",
                                                              "project": project}))
    return result
