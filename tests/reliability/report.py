"""The tally ``make reliability`` prints at the end: what was injected, tried and seen.

Tests add to the one ``REPORT``; ``conftest.py`` prints it as a table after the run and
writes it to ``test-artifacts/reliability/report.json``. Every figure comes from what a
test actually did or observed, never from a constant.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["REPORT", "Report", "Table"]


@dataclass
class Table:
    """A titled table of its own in the report (per fault, per fuzzed operation, ...)."""

    title: str
    header: tuple[str, ...]
    rows: list[tuple[object, ...]] = field(default_factory=list)

    def add(self, *row: object) -> None:
        if len(row) != len(self.header):
            raise ValueError(f"{self.title}: {len(row)} cells for {len(self.header)} columns")
        self.rows.append(row)

    def lines(self) -> list[str]:
        cells = [tuple(str(c) for c in self.header), *(tuple(str(c) for c in r) for r in self.rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.header))]

        def line(row: tuple[str, ...]) -> str:
            first, *rest = row
            return "  ".join(
                [
                    first.ljust(widths[0]),
                    *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)),
                ]
            )

        return [self.title, *(line(row) for row in cells)]


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
    tables: dict[str, Table] = field(default_factory=dict)

    def table(self, title: str, *header: str) -> Table:
        """The table called ``title`` (made on first use with these column names)."""
        if title not in self.tables:
            self.tables[title] = Table(title, header)
        return self.tables[title]

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
            "tables": {
                t.title: [dict(zip(t.header, row, strict=True)) for row in t.rows]
                for t in self.tables.values()
            },
        }


REPORT = Report()
