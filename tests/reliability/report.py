"""The tally ``make reliability`` prints at the end: what was injected, tried and seen.

Tests add to the one ``REPORT``; ``conftest.py`` prints it as a table after the run and
writes it to ``test-artifacts/reliability/report.json``. Every figure comes from what a
test actually did or observed, never from a constant.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["REPORT", "Report"]


@dataclass
class Report:
    faults: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    events_checked: int = 0
    lost: int = 0
    duplicated: int = 0
    attacks_tried: Counter[str] = field(default_factory=Counter)
    attacks_succeeded: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)

    def fault(self, name: str) -> None:
        self.faults[name] += 1

    def attack(self, name: str, *, tried: int, succeeded: int) -> None:
        """``tried`` attempts of attack ``name``, of which ``succeeded`` got through."""
        self.attacks_tried[name] += tried
        self.attacks_succeeded[name] += succeeded

    def rows(self) -> list[tuple[str, int]]:
        rows = [
            ("faults injected", sum(self.faults.values())),
            *((f"  {name}", count) for name, count in sorted(self.faults.items())),
            ("requests made", self.requests),
            ("events checked", self.events_checked),
            ("events lost", self.lost),
            ("events duplicated", self.duplicated),
            ("attacks tried", sum(self.attacks_tried.values())),
            ("attacks that succeeded", sum(self.attacks_succeeded.values())),
        ]
        rows += [(name, count) for name, count in sorted(self.other.items())]
        return rows

    def as_json(self) -> dict[str, object]:
        return {
            "faults": dict(self.faults),
            "requests": self.requests,
            "events_checked": self.events_checked,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "attacks": {
                name: {"tried": tried, "succeeded": self.attacks_succeeded[name]}
                for name, tried in sorted(self.attacks_tried.items())
            },
            "other": dict(self.other),
        }


REPORT = Report()
