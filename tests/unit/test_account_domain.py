"""Account decisions: throttling, mfa challenges, sessions and refresh-token rotation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from shared.domain import account as acct
from shared.domain import events as ev
from shared.domain.base import DomainEvent
from shared.domain.errors import NotAllowed
from shared.eventstore.snapshots import AccountFold

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
POLICY = acct.PasswordPolicy()


def given(*events: DomainEvent) -> acct.AccountState:
    return acct.fold(acct.AccountState(), events)


def registered() -> acct.AccountState:
    return given(
        *acct.register(acct.AccountState(), username="ann", email="a@x.org", password_hash="H")
    )


def fail(state: acct.AccountState, times: int, trusted: bool, now: datetime) -> acct.AccountState:
    for _ in range(times):
        state = acct.fold(state, acct.fail_password(state, trusted, now, POLICY))
    return state


def test_register_once() -> None:
    state = registered()
    assert state.registered and state.username == "ann"
    with pytest.raises(NotAllowed):
        acct.register(state, username="ann", email="a@x.org", password_hash="H")


def test_password_failures_throttle_with_growing_capped_delays() -> None:
    state = fail(registered(), 9, False, NOW)
    assert acct.retry_password_at(state, False, NOW, POLICY) is None
    state = fail(state, 1, False, NOW)
    assert acct.retry_password_at(state, False, NOW, POLICY) == NOW + timedelta(seconds=1)
    state = fail(state, 5, False, NOW)
    assert acct.retry_password_at(state, False, NOW, POLICY) == NOW + timedelta(seconds=32)
    state = fail(state, 30, False, NOW)
    assert acct.retry_password_at(state, False, NOW, POLICY) == NOW + timedelta(minutes=15)
    assert acct.retry_password_at(state, False, NOW + timedelta(minutes=15), POLICY) is None


def test_a_stranger_cannot_throttle_the_owner_on_a_trusted_device() -> None:
    state = fail(registered(), 50, False, NOW)
    assert acct.retry_password_at(state, False, NOW, POLICY) is not None
    assert acct.retry_password_at(state, True, NOW, POLICY) is None


def test_throttle_is_derived_from_failures_without_lock_events() -> None:
    state = fail(registered(), 9, False, NOW)
    events = acct.fail_password(state, False, NOW, POLICY)
    assert [e.type for e in events] == ["login.failed"]


def test_a_right_password_clears_password_failures() -> None:
    state = fail(registered(), 12, False, NOW)
    state = acct.fold(state, acct.open_challenge("c1", NOW, timedelta(minutes=5)))
    assert state.untrusted == acct.Throttle()


def test_mfa_challenge_is_single_use_and_expires() -> None:
    state = acct.fold(registered(), acct.open_challenge("c1", NOW, timedelta(minutes=5)))
    assert acct.open_challenge_for(state, "c1", NOW).challenge_id == "c1"
    with pytest.raises(NotAllowed):
        acct.open_challenge_for(state, "c1", NOW + timedelta(minutes=5))
    done = acct.complete_login(
        session_id="s1",
        refresh_hash="r",
        amr=("pwd", "otp", "mfa"),
        acr="aal2",
        now=NOW,
        session_ttl=timedelta(hours=12),
        challenge_id="c1",
    )
    state = acct.fold(state, done)
    with pytest.raises(NotAllowed):
        acct.open_challenge_for(state, "c1", NOW)
    assert state.sessions["s1"].acr == "aal2"


def logged_in(*sessions: str) -> acct.AccountState:
    state = registered()
    for sid in sessions:
        state = acct.fold(
            state,
            acct.complete_login(
                session_id=sid,
                refresh_hash=f"hash-{sid}-0",
                amr=("pwd",),
                acr="aal1",
                now=NOW,
                session_ttl=timedelta(hours=12),
            ),
        )
    return state


def test_refresh_rotates_and_reuse_revokes_the_session() -> None:
    state = logged_in("s1")
    ok, events = acct.refresh_session(
        state, session_id="s1", generation=0, presented_hash="hash-s1-0", new_hash="h1", now=NOW
    )
    assert ok and events == [
        ev.SessionRefreshed(session_id="s1", generation=1, refresh_token_hash="h1")
    ]
    state = acct.fold(state, events)
    # A forged token of a spent generation (wrong secret) changes nothing.
    forged, events = acct.refresh_session(
        state, session_id="s1", generation=0, presented_hash="guess", new_hash="x", now=NOW
    )
    assert not forged and events == []
    ok, events = acct.refresh_session(
        state, session_id="s1", generation=0, presented_hash="hash-s1-0", new_hash="h2", now=NOW
    )
    assert not ok
    assert events == [ev.SessionRevoked(session_id="s1", reason="refresh_token_reuse")]
    state = acct.fold(state, events)
    with pytest.raises(NotAllowed):
        acct.refresh_session(
            state, session_id="s1", generation=1, presented_hash="h1", new_hash="h3", now=NOW
        )


def test_wrong_refresh_secret_is_refused_without_events() -> None:
    ok, events = acct.refresh_session(
        logged_in("s1"), session_id="s1", generation=0, presented_hash="nope", new_hash="x", now=NOW
    )
    assert not ok and events == []


def test_password_change_ends_every_other_session() -> None:
    state = logged_in("s1", "s2", "s3")
    state = acct.fold(state, acct.change_password(state, "H2", current_session="s2"))
    assert set(state.sessions) == {"s2"} and state.password_hash == "H2"


def test_roles_are_granted_once_and_unknown_roles_refused() -> None:
    state = registered()
    state = acct.fold(state, acct.set_role(state, "support", True))
    assert acct.set_role(state, "support", True) == []
    assert state.roles == {"support"}
    with pytest.raises(NotAllowed):
        acct.set_role(state, "root", True)


def test_snapshot_round_trips() -> None:
    state = fail(logged_in("s1", "s2"), 3, True, NOW)
    state = acct.fold(state, acct.open_challenge("c9", NOW, timedelta(minutes=5)))
    state = acct.fold(state, acct.set_role(state, "security", True))
    fold = AccountFold()
    assert fold.from_snapshot(orjson.loads(orjson.dumps(fold.to_snapshot(state)))) == state


def test_a_change_revokes_only_sessions_that_started_before_it() -> None:
    state = logged_in("old", "keep")
    later = acct.complete_login(
        session_id="new",
        refresh_hash="h",
        amr=("pwd", "otp", "mfa"),
        acr="aal2",
        now=NOW + timedelta(seconds=5),
        session_ttl=timedelta(hours=1),
    )
    state = acct.fold(state, later)
    revoked = acct.revoke_other_sessions(state, "keep", "twofa_enabled", started_before=NOW)
    assert revoked == [ev.SessionRevoked(session_id="old", reason="twofa_enabled")]
