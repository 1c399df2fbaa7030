"""Readiness: named checks each domain registers, run together with a deadline for /readyz."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

# A check returns None when its component is ready, else the reason it is not.
Check = Callable[[], Awaitable[str | None]]


@dataclass
class Readiness:
    timeout_seconds: float = 2.0
    _checks: dict[str, Check] = field(default_factory=dict)

    def add(self, name: str, check: Check) -> None:
        if name in self._checks:
            raise ValueError(f"readiness check {name!r} registered twice")
        self._checks[name] = check

    async def evaluate(self) -> tuple[bool, dict[str, str]]:
        """Run every check at once; return (all ready, {name: "ok" or reason})."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(self._checks[n]) for n in names))
        report = {name: reason or "ok" for name, reason in zip(names, results, strict=True)}
        return all(r is None for r in results), report

    async def _run(self, check: Check) -> str | None:
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await check()
        except TimeoutError:
            return f"no answer within {self.timeout_seconds:g}s"
