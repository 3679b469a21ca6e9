"""Results of a conformance run: one row per requirement, printed as a
table or as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable


@dataclass
class Result:
    requirement: str  # e.g. "R-3.2-3"
    title: str
    passed: bool
    seen: str
    seconds: float = 0.0


@dataclass
class Report:
    target: str
    role: str
    mode: str
    results: list[Result] = field(default_factory=list)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if not r.passed]

    def table(self) -> str:
        rows = [("requirement", "result", "check", "what was seen")]
        rows += [(r.requirement, "pass" if r.passed else "FAIL", r.title, r.seen) for r in self.results]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [f"RESI conformance: {self.target} as {self.role} ({self.mode})"]
        for row in rows:
            lines.append("  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row)))
        lines.append(f"{len(self.results) - len(self.failed)} passed, {len(self.failed)} failed")
        return "\n".join(lines)

    def json(self) -> str:
        doc = {
            "target": self.target,
            "role": self.role,
            "mode": self.mode,
            "passed": len(self.results) - len(self.failed),
            "failed": len(self.failed),
            "results": [asdict(r) for r in self.results],
        }
        return json.dumps(doc, indent=2)


#: A check: its requirement id, its one-line title and the coroutine
#: function that runs it (returns what was seen; raises CheckFailed).
Check = tuple[str, str, Callable]


class CheckFailed(Exception):
    """The peer did not do what the requirement says; the text says what it did."""


def expect(cond: bool, seen: str) -> None:
    if not cond:
        raise CheckFailed(seen)


class Inconclusive(Exception):
    """The machine was too slow to tell (a timer of the peer's may rightly
    have fired): the check is tried again."""


#: A hold observed for less than this after the bytes were sent is
#: conclusive: the peer's dead timeout (default 1 s) cannot have ended it.
HOLD_WINDOW = 0.8


async def retried(check, tries: int = 3):
    """Runs `check()` again while it is inconclusive (at most `tries`)."""
    for i in range(tries):
        try:
            return await check()
        except Inconclusive as e:
            if i == tries - 1:
                raise CheckFailed(f"inconclusive {tries} times: {e}") from None
