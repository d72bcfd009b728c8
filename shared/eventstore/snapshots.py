"""The folds the repository loads streams with, and their snapshot codecs.

A snapshot is the folded state written as JSON every ``snapshot_every`` events, so a
load reads the latest snapshot and only the events after it. Changing a state's shape
means a new ``snapshot_schema_version``: older snapshots are then ignored and the
stream is folded from its first event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.domain.account.state import AccountState, Challenge, Session, Throttle
from shared.domain.account.state import evolve as evolve_account
from shared.domain.base import DomainEvent
from shared.domain.twofactor.state import PendingReset, TwoFactorState
from shared.domain.twofactor.state import evolve as evolve_twofactor

__all__ = ["AccountFold", "TwoFactorFold"]


class TwoFactorFold:
    """The ``Fold`` the repository loads ``twofactor-*`` streams with."""

    snapshot_type = "twofactor"
    snapshot_schema_version = 2

    def initial(self) -> TwoFactorState:
        return TwoFactorState()

    def evolve(self, state: TwoFactorState, event: DomainEvent) -> TwoFactorState:
        return evolve_twofactor(state, event)

    def to_snapshot(self, state: TwoFactorState) -> dict[str, Any]:
        data = _plain(state)
        data["reset"] = None if state.reset is None else _plain(state.reset)
        return data

    def from_snapshot(self, data: dict[str, Any]) -> TwoFactorState:
        values = dict(data)
        for name in ("enabled_at", "pending_expires_at", "locked_until", "last_locked_at"):
            values[name] = _time(values[name])
        values["code_hashes"] = tuple(values["code_hashes"])
        if values["reset"] is not None:
            reset = dict(values["reset"])
            reset["effective_at"] = _time(reset["effective_at"])
            values["reset"] = PendingReset(**reset)
        return TwoFactorState(**values)


class AccountFold:
    """The ``Fold`` the repository loads ``account-*`` streams with."""

    snapshot_type = "account"
    snapshot_schema_version = 3  # 2: spent refresh-token hashes; 3: session start times

    def initial(self) -> AccountState:
        return AccountState()

    def evolve(self, state: AccountState, event: DomainEvent) -> AccountState:
        return evolve_account(state, event)

    def to_snapshot(self, state: AccountState) -> dict[str, Any]:
        return {
            "registered": state.registered,
            "username": state.username,
            "email": state.email,
            "password_hash": state.password_hash,
            "roles": sorted(state.roles),
            "untrusted": _plain(state.untrusted),
            "trusted": _plain(state.trusted),
            "challenges": [_plain(c) for c in state.challenges.values()],
            "sessions": [_plain(s) for s in state.sessions.values()],
        }

    def from_snapshot(self, data: dict[str, Any]) -> AccountState:
        challenges = [
            Challenge(c["challenge_id"], _at(c["issued_at"]), _at(c["expires_at"]))
            for c in data["challenges"]
        ]
        sessions = [
            Session(
                s["session_id"],
                s["refresh_hash"],
                s["generation"],
                tuple(s["spent_hashes"]),
                tuple(s["amr"]),
                s["acr"],
                _at(s["auth_time"]),
                _at(s["expires_at"]),
                _at(s["started_at"]),
            )
            for s in data["sessions"]
        ]
        return AccountState(
            registered=data["registered"],
            username=data["username"],
            email=data["email"],
            password_hash=data["password_hash"],
            roles=frozenset(data["roles"]),
            untrusted=_throttle(data["untrusted"]),
            trusted=_throttle(data["trusted"]),
            challenges={c.challenge_id: c for c in challenges},
            sessions={s.session_id: s for s in sessions},
        )


def _plain(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


def _time(value: str | datetime | None) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _throttle(data: dict[str, Any]) -> Throttle:
    last = data["last_failure_at"]
    return Throttle(data["failures"], _at(last) if last else None)
