"""Which twofa process holds which key: the table ``Settings.load(process=...)`` checks.

A process holds only the keys it needs (DESIGN principle 10; README, "Keys per
process"): a key it holds is required in production, a secret key it does not hold is
refused there; public keys (the verify keys) are never refused. ``twofa migrate``
holds none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "KEY_HOLDERS",
    "PROCESSES",
    "KeyUse",
    "Process",
    "key_variables",
    "without_foreign_keys",
]

Process = Literal["auth", "enrolment", "audit", "relay", "migrate"]
PROCESSES: tuple[Process, ...] = ("auth", "enrolment", "audit", "relay", "migrate")


@dataclass(frozen=True, slots=True)
class KeyUse:
    """Who holds one key setting; a secret one is refused to every other process."""

    holders: frozenset[str]
    secret: bool
    companions: tuple[str, ...] = ()  # settings that go with it (its active key id)


def _held_by(*processes: Process) -> frozenset[str]:
    return frozenset(processes)


# Which process holds which key (README, "Keys per process"). A new key setting is one
# line here plus its check in Settings._KEY_CHECKS; a setting named here that does not
# exist yet is skipped. `twofa migrate` holds none.
KEY_HOLDERS: dict[str, KeyUse] = {
    "encryption_keys": KeyUse(
        _held_by("auth", "enrolment"), secret=True, companions=("encryption_active_key_id",)
    ),
    "jwt_signing_keys": KeyUse(_held_by("auth"), secret=True, companions=("jwt_active_key_id",)),
    "jwt_verify_keys": KeyUse(_held_by("enrolment", "audit"), secret=False),
    "recovery_code_key": KeyUse(_held_by("auth", "enrolment"), secret=True),
    "device_token_key": KeyUse(_held_by("auth"), secret=True),
    "event_signing_keys": KeyUse(
        _held_by("relay"), secret=True, companions=("event_signing_active_key_id",)
    ),
    "event_verify_keys": KeyUse(_held_by("auth", "enrolment", "audit"), secret=False),
    "snapshot_keys": KeyUse(
        _held_by("auth", "enrolment"), secret=True, companions=("snapshot_active_key_id",)
    ),
}


def key_variables(process: str) -> set[str]:
    """The environment variables of the keys ``process`` holds (with their active ids)."""
    return {
        f"TWOFA_{name.upper()}"
        for setting, use in KEY_HOLDERS.items()
        if process in use.holders
        for name in (setting, *use.companions)
    }


def without_foreign_keys(env: Mapping[str, str], process: str) -> dict[str, str]:
    """``env`` without any key variable ``process`` does not hold: what to start it with."""
    foreign = {
        f"TWOFA_{name.upper()}"
        for setting, use in KEY_HOLDERS.items()
        if process not in use.holders
        for name in (setting, *use.companions)
    }
    return {name: value for name, value in env.items() if name not in foreign}
