"""A pytest plugin: a run that skipped or xfailed any test fails.

A skipped test checks nothing, and an xfail hides a known bug behind a green run; in
this project both are failures (``make test``, ``make reliability``, ``.ci/run``).
Loaded for every run through ``addopts`` in pyproject.toml.
"""

from __future__ import annotations

import pytest

OUTCOMES = ("skipped", "xfailed", "xpassed")


def not_run(stats: dict[str, list[object]]) -> str:
    """ "2 skipped, 1 xfailed", or "" when every test ran for real."""
    counts = {outcome: len(stats.get(outcome, [])) for outcome in OUTCOMES}
    return ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    if not_run(reporter.stats) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if found := not_run(terminalreporter.stats):
        terminalreporter.write_line(f"failing the run: {found} (no test may be skipped)", red=True)
