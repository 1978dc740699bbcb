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

    def error(self, result: "PreflightResult | None" = None) -> PreflightError:
        return PreflightError(self.code, result=result, facts=self.facts, detail=self.detail, **self.fields)

    def to_json(self) -> dict[str, Any]:
        err = self.error()
        return {"code": self.code, "summary": err.summary, "fix": err.fix,
                "facts": {k: v for k, v in self.facts}, "detail": self.detail}


@dataclass
class PreflightResult:
    facts: dict[str, Any] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    cached: bool = False
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures

    def error(self) -> PreflightError | None:
        return self.failures[0].error(self) if self.failures else None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "cached": self.cached, "skipped": self.skipped, "notices": self.notices,
                "failures": [f.to_json() for f in self.failures], "facts": self.facts}


assert "PROBE_FAILED" in MESSAGES
