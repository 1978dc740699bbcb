"""Stage 3: verify, before the kernel starts, that the host's torch and CUDA are usable from the env.

Interface used by the pipeline (and the CLI):

    result = await run(python=..., env=..., cwd=..., settings=..., host=..., env_path=..., project_root=...,
                       cache_root=..., recheck=False)
    result.ok, result.failures, result.notices, result.facts, result.cached, result.to_json()
    result.error()  -> PreflightError for the first failure, or None
"""

from __future__ import annotations

from .result import Failure, PreflightResult
from .runner import run

__all__ = ["Failure", "PreflightResult", "run"]
