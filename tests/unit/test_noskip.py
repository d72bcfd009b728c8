"""A run with a skipped or xfailed test fails: the plugin every run loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(f"import pytest\n\n\n{body}\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.support.noskip", "-q", str(tmp_path)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ("def test_a():\n    pytest.skip('no server')", "1 skipped"),
        ("@pytest.mark.skipif(True, reason='x')\ndef test_a():\n    pass", "1 skipped"),
        ("@pytest.mark.xfail(reason='known bug')\ndef test_a():\n    assert False", "1 xfailed"),
        ("@pytest.mark.xfail(reason='fixed?')\ndef test_a():\n    pass", "1 xpassed"),
    ],
)
def test_a_run_that_did_not_run_a_test_fails(tmp_path: Path, body: str, word: str) -> None:
    result = run(tmp_path, f"def test_ok():\n    pass\n\n\n{body}")
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert f"failing the run: {word} (no test may be skipped)" in result.stdout


def test_a_run_where_every_test_ran_passes(tmp_path: Path) -> None:
    result = run(tmp_path, "def test_ok():\n    pass")
    assert result.returncode == pytest.ExitCode.OK, result.stdout
    assert "failing the run" not in result.stdout


def test_a_failing_run_keeps_its_own_exit_code(tmp_path: Path) -> None:
    result = run(
        tmp_path, "def test_bad():\n    assert False\n\n\ndef test_s():\n    pytest.skip()"
    )
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
