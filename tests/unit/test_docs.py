"""The README documents what the code reads."""

from __future__ import annotations

import re
from pathlib import Path

from shared.platform.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(TWOFA_[A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))
    settings = {f"TWOFA_{name.upper()}" for name in Settings.model_fields}
    assert settings - documented == set(), "settings missing from the README table"
    assert documented - settings == set(), "README documents settings the code does not read"


def test_readme_states_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
