"""The preflight's outcome: facts, failures with stable codes, notices."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import MESSAGES, PreflightError


@dataclass
class Failure:
    code: str
    fields: dict[str, Any] = field(default_factory=dict)
    facts: list[tuple[str, Any]] = field(default_factory=list)
    detail: str = ""

    def error(self, result: "PreflightResult | None" = None, also: list["Failure"] | None = None) -> PreflightError:
        detail = self.detail
        if also:
            lines = [f"also: {f.error().summary} [{f.code}]" for f in also]
            detail = (detail.rstrip() + "\n\n" if detail.strip() else "") + "\n".join(lines)
        return PreflightError(self.code, result=result, facts=self.facts, detail=detail, **self.fields)

    def to_json(self) -> dict[str, Any]:
        err = self.error()
        return {"code": self.code, "summary": err.summary, "fix": err.fix,
                "facts": {str(k): v for k, v in self.facts}, "detail": self.detail, "message": str(err)}


@dataclass
class PreflightResult:
    facts: dict[str, Any] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    cached: bool = False  # the deep facts came from the cache (no torch import this start)
    skipped: bool = False  # preflight = false
    deep: str = "not run"  # ran | cached | not run (why)
    cheap: str = "ran"  # ran | reused (nothing the cheap facts were read from changed: no probe this start)
    gpu_expected: bool = False
    gpu_reason: str = ""
    cache: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def error(self) -> PreflightError | None:
        if not self.failures:
            return None
        return self.failures[0].error(self, also=self.failures[1:])

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "cached": self.cached, "skipped": self.skipped, "deep": self.deep,
                "cheap": self.cheap,
                "gpu_expected": self.gpu_expected, "gpu_reason": self.gpu_reason, "notices": self.notices,
                "failures": [f.to_json() for f in self.failures], "cache": self.cache, "timings": self.timings,
                "facts": self.facts}


assert "PROBE_FAILED" in MESSAGES
