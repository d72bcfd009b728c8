"""The mutation harness in ``make reliability``: every planted bug is caught.

``mutants.py`` plants each bug in a copy of the tree and runs the property test there;
this test runs it (two at a time), fails if the unmutated copy fails or any mutant is
missed, and puts the outcome of each in the report's "mutation harness" table.
"""

from __future__ import annotations

import time

import pytest

from tests.reliability import mutants
from tests.reliability.report import REPORT

pytestmark = pytest.mark.reliability

JOBS = 2


@pytest.mark.timeout(1200)
def test_the_property_test_catches_every_planted_bug(postgres_url: str) -> None:
    started = time.monotonic()
    baseline, outcomes = mutants.run_all(postgres_url, jobs=JOBS)
    seconds = time.monotonic() - started
    table = REPORT.table(
        f"mutation harness: the property test ({mutants.EXAMPLES} examples) on planted bugs",
        "tree",
        "result",
        "seconds",
        "caught by",
    )
    table.add(baseline.name, "FAILED" if baseline.failed else "passed", round(baseline.seconds), "")
    for outcome in outcomes:
        result = "caught" if outcome.failed else "MISSED"
        table.add(outcome.name, result, round(outcome.seconds), outcome.why)
    missed = [o.name for o in outcomes if not o.failed]
    caught = len(outcomes) - len(missed)
    table.add(f"{caught} caught, {len(missed)} missed", "", round(seconds), f"{JOBS} at a time")
    assert not baseline.failed, f"the property test fails on the unmutated tree: {baseline.why}"
    assert not missed, f"planted bugs the property test missed: {missed}"
