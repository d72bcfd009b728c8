"""``make reliability``: the report table after the run."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.reliability.report import REPORT

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = REPORT.rows()
    width = max(len(name) for name, _ in rows)
    terminalreporter.section("reliability report")
    for name, count in rows:
        terminalreporter.write_line(f"{name.ljust(width)}  {count:>8}")
    if REPORT.attacks_tried:
        terminalreporter.write_line("")
        terminalreporter.write_line(f"{'attack'.ljust(58)} {'tried':>7} {'got in':>7}")
        for name, tried in sorted(REPORT.attacks_tried.items()):
            got_in = REPORT.attacks_succeeded[name]
            terminalreporter.write_line(f"{name.ljust(58)} {tried:>7} {got_in:>7}")
    for table in REPORT.tables.values():
        terminalreporter.write_line("")
        for line in table.lines():
            terminalreporter.write_line(line)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "report.json").write_bytes(
        orjson.dumps(REPORT.as_json(), option=orjson.OPT_INDENT_2)
    )
