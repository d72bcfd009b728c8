"""TwoFactor decisions: given these events, when this command, then these events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain import events as ev
from shared.domain import twofactor as tf
from shared.domain.base import DomainEvent
from shared.domain.errors import AlreadyEnabled, NoPendingEnrolment, NotAllowed, NotEnabled
from shared.eventstore.snapshots import TwoFactorFold

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
POLICY = tf.Policy()
HASHES = ("h0", "h1", "h2", "h3", "h4", "h5")
STEP = 59_000_000


def given(*events: DomainEvent) -> tf.TwoFactorState:
    return tf.fold(tf.TwoFactorState(), events)


def enrolled() -> list[DomainEvent]:
    return [
        ev.EnrolmentStarted(encrypted_secret="ct", expires_at=NOW + timedelta(minutes=10)),
        ev.TwoFactorEnabled(
            session_id=None, enabled_at=NOW, time_step=STEP, recovery_code_hashes=HASHES
        ),
    ]


def types(events: Sequence[DomainEvent]) -> list[str]:
    return [e.type for e in events]


def test_enrolment_starts_and_confirms_with_a_matching_code() -> None:
    started = tf.start_enrolment(tf.TwoFactorState(), "ct", NOW, POLICY)
    assert types(started) == ["twofa.enrolment_started"]
    state = given(*started)
    assert tf.secret_to_confirm(state, NOW) == "ct"
    verdict = tf.confirm_enrolment(state, STEP, HASHES, NOW, POLICY)
    assert verdict.accepted and types(verdict.events) == ["twofa.enabled"]
    state = tf.fold(state, verdict.events)
    assert state.enabled and state.secret == "ct" and state.codes_left == 6
    assert tf.requires_second_factor(state, NOW)


def test_restarting_enrolment_replaces_the_secret() -> None:
    state = given(ev.EnrolmentStarted(encrypted_secret="old", expires_at=NOW + timedelta(1)))
    state = tf.fold(state, tf.start_enrolment(state, "new", NOW, POLICY))
    assert tf.secret_to_confirm(state, NOW) == "new"


def test_enrolment_refused_while_enabled() -> None:
    with pytest.raises(AlreadyEnabled):
        tf.start_enrolment(given(*enrolled()), "ct", NOW, POLICY)


def test_confirm_without_pending_enrolment_is_refused() -> None:
    with pytest.raises(NoPendingEnrolment):
        tf.confirm_enrolment(tf.TwoFactorState(), STEP, HASHES, NOW, POLICY)


def test_expired_enrolment_cannot_be_confirmed() -> None:
    state = given(*tf.start_enrolment(tf.TwoFactorState(), "ct", NOW, POLICY))
    with pytest.raises(NoPendingEnrolment):
        tf.confirm_enrolment(state, STEP, HASHES, NOW + timedelta(minutes=11), POLICY)


def test_wrong_first_code_keeps_enrolment_pending_and_counts() -> None:
    state = given(*tf.start_enrolment(tf.TwoFactorState(), "ct", NOW, POLICY))
    verdict = tf.confirm_enrolment(state, None, HASHES, NOW, POLICY)
    assert not verdict.accepted and verdict.reason == "invalid_code"
    assert verdict.attempts_left == 4
    state = tf.fold(state, verdict.events)
    assert not state.enabled and state.failures == 1 and tf.secret_to_confirm(state, NOW) == "ct"


def test_same_time_step_twice_is_a_replay() -> None:
    state = given(*enrolled())
    first = tf.verify_otp(state, STEP + 1, "login", NOW, POLICY)
    assert first.accepted
    state = tf.fold(state, first.events)
    again = tf.verify_otp(state, STEP + 1, "login", NOW, POLICY)
    assert not again.accepted and again.reason == "replayed"
    older = tf.verify_otp(tf.fold(state, again.events), STEP, "login", NOW, POLICY)
    assert older.reason == "replayed"


def test_the_enrolment_step_itself_cannot_be_replayed_at_login() -> None:
    verdict = tf.verify_otp(given(*enrolled()), STEP, "login", NOW, POLICY)
    assert verdict.reason == "replayed"


def test_five_failures_lock_for_fifteen_minutes_then_doubling_capped() -> None:
    state = given(*enrolled())
    locks = []
    now = NOW
    for _ in range(10):
        for attempt in range(5):
            verdict = tf.verify_otp(state, None, "login", now, POLICY)
            state = tf.fold(state, verdict.events)
            if attempt < 4:
                assert verdict.attempts_left == 4 - attempt
        assert verdict.reason == "locked" and verdict.locked_until is not None
        assert types(verdict.events)[-1] == "twofa.locked"
        locks.append(verdict.locked_until - now)
        # While locked even the right code is refused, and nothing is recorded.
        blocked = tf.verify_otp(state, STEP + 99, "login", now, POLICY)
        assert blocked.reason == "locked" and blocked.events == ()
        now = verdict.locked_until
    assert locks[:4] == [timedelta(minutes=m) for m in (15, 30, 60, 120)]
    assert max(locks) == timedelta(hours=24) == locks[-1]


def test_only_a_second_factor_success_resets_the_count() -> None:
    state = given(*enrolled())
    for _ in range(3):
        state = tf.fold(state, tf.verify_otp(state, None, "login", NOW, POLICY).events)
    assert state.failures == 3
    ok = tf.verify_otp(state, STEP + 5, "login", NOW, POLICY)
    assert tf.fold(state, ok.events).failures == 0


def test_recovery_codes_work_once_each() -> None:
    state = given(*enrolled())
    used = tf.redeem_recovery_code(state, 2, "login", NOW, POLICY)
    assert used.accepted
    assert used.events == (ev.RecoveryCodeUsed(code_index=2, purpose="login", remaining=5),)
    state = tf.fold(state, used.events)
    again = tf.redeem_recovery_code(state, 2, "login", NOW, POLICY)
    assert not again.accepted and again.reason == "invalid_code"
    assert tf.redeem_recovery_code(state, None, "login", NOW, POLICY).reason == "invalid_code"
    assert tf.redeem_recovery_code(state, 99, "login", NOW, POLICY).reason == "invalid_code"


def test_regenerated_codes_replace_the_old_set() -> None:
    state = given(*enrolled())
    state = tf.fold(state, tf.regenerate_recovery_codes(state, ("n0", "n1"), NOW))
    assert state.code_hashes == ("n0", "n1")


def test_verify_and_disable_refused_when_off() -> None:
    with pytest.raises(NotEnabled):
        tf.verify_otp(tf.TwoFactorState(), STEP, "login", NOW, POLICY)
    with pytest.raises(NotEnabled):
        tf.redeem_recovery_code(tf.TwoFactorState(), 0, "login", NOW, POLICY)
    with pytest.raises(NotEnabled):
        tf.disable(tf.TwoFactorState(), "totp", now=NOW)


def test_disable_turns_it_off_and_a_new_enrolment_can_start() -> None:
    state = tf.fold(given(*enrolled()), tf.disable(given(*enrolled()), "totp", now=NOW))
    assert not state.enabled and not tf.requires_second_factor(state, NOW)
    assert types(tf.start_enrolment(state, "ct2", NOW, POLICY)) == ["twofa.enrolment_started"]


def reset_requested() -> list[DomainEvent]:
    return [
        *enrolled(),
        ev.ResetRequested(request_id="r1", requested_by="sup-a", ticket="T-1", reason="lost"),
    ]


def test_reset_needs_two_different_support_accounts_and_a_delay() -> None:
    state = given(*enrolled())
    with pytest.raises(NotAllowed):
        tf.request_reset(
            state, account_id="u", request_id="r", requested_by="u", ticket="t", reason="r", now=NOW
        )
    state = given(*reset_requested())
    with pytest.raises(NotAllowed):  # four eyes
        tf.approve_reset(
            state, account_id="u", request_id="r1", approved_by="sup-a", now=NOW, policy=POLICY
        )
    with pytest.raises(NotAllowed):  # the user approving their own reset
        tf.approve_reset(
            state, account_id="u", request_id="r1", approved_by="u", now=NOW, policy=POLICY
        )
    with pytest.raises(NotAllowed):  # unknown request
        tf.approve_reset(
            state, account_id="u", request_id="nope", approved_by="sup-b", now=NOW, policy=POLICY
        )
    approved = tf.approve_reset(
        state, account_id="u", request_id="r1", approved_by="sup-b", now=NOW, policy=POLICY
    )
    assert types(approved) == ["twofa.reset_approved"]
    state = tf.fold(state, approved)
    assert tf.requires_second_factor(state, NOW + timedelta(hours=23))
    assert not tf.requires_second_factor(state, NOW + timedelta(hours=24))
    # The next command on the stream records the completion.
    later = NOW + timedelta(hours=25)
    started = tf.start_enrolment(state, "fresh", later, POLICY)
    assert types(started) == ["twofa.reset_completed", "twofa.enrolment_started"]


def test_zero_delay_reset_completes_at_approval() -> None:
    policy = tf.Policy(reset_cooling_off=timedelta(0))
    events = tf.approve_reset(
        given(*reset_requested()),
        account_id="u",
        request_id="r1",
        approved_by="sup-b",
        now=NOW,
        policy=policy,
    )
    assert types(events) == ["twofa.reset_approved", "twofa.reset_completed"]


def test_owner_second_factor_cancels_a_pending_reset() -> None:
    state = given(*reset_requested())
    verdict = tf.verify_otp(state, STEP + 1, "login", NOW, POLICY)
    assert types(verdict.events) == ["twofa.otp_verified", "twofa.reset_cancelled"]
    assert tf.fold(state, verdict.events).reset is None


def test_only_one_reset_pending_at_a_time_and_cancel_rules() -> None:
    state = given(*reset_requested())
    with pytest.raises(NotAllowed):
        tf.request_reset(
            state,
            account_id="u",
            request_id="r2",
            requested_by="s",
            ticket="t",
            reason="r",
            now=NOW,
        )
    cancelled = tf.cancel_reset(state, request_id="r1", cancelled_by="sup-b", reason="dup", now=NOW)
    assert tf.fold(state, cancelled).reset is None
    with pytest.raises(NotAllowed):
        tf.cancel_reset(state, request_id="zz", cancelled_by="s", reason="r", now=NOW)


def test_snapshot_round_trips_every_field() -> None:
    fold = TwoFactorFold()
    state = tf.fold(
        given(*reset_requested()),
        [
            ev.OtpFailed(method="totp", purpose="login", reason="x", consecutive_failures=1),
            ev.ResetApproved(request_id="r1", approved_by="b", effective_at=NOW),
            ev.RecoveryCodeUsed(code_index=1, purpose="login", remaining=5),
        ],
    )
    import orjson

    data = orjson.loads(orjson.dumps(fold.to_snapshot(state)))
    assert fold.from_snapshot(data) == state


def test_password_only_sessions_lose_their_right_when_2fa_is_enabled() -> None:
    assert tf.password_only_allowed(tf.TwoFactorState(), "s1")  # no second factor yet
    state = given(
        ev.EnrolmentStarted(encrypted_secret="ct", expires_at=NOW + timedelta(minutes=10)),
        ev.TwoFactorEnabled(
            session_id="s1", enabled_at=NOW, time_step=STEP, recovery_code_hashes=HASHES
        ),
    )
    assert tf.password_only_allowed(state, "s1")  # it confirmed the first code
    assert not tf.password_only_allowed(state, "s2")
    state = tf.fold(state, tf.disable(state, tf.TOTP, "s2", now=NOW))
    assert tf.password_only_allowed(state, "s2")
    assert tf.password_only_allowed(given(*enrolled()), "s1") is False  # enabled by an operator


def test_a_reset_that_took_effect_refuses_disable_and_new_codes() -> None:
    state = tf.fold(
        given(*reset_requested()),
        [ev.ResetApproved(request_id="r1", approved_by="b", effective_at=NOW)],
    )
    later = NOW + timedelta(seconds=1)
    with pytest.raises(NotEnabled):
        tf.disable(state, tf.TOTP, now=later)
    with pytest.raises(NotEnabled):
        tf.regenerate_recovery_codes(state, ("n0",), later)
    # Before it takes effect both still work.
    assert tf.disable(state, tf.TOTP, now=NOW - timedelta(seconds=1))


# The rules the layout moved into the domain: a lockout kills an open login, the status
# both services show, and the one decision on either kind of code.


def locked_at(moment: datetime) -> DomainEvent:
    return ev.SecondFactorLocked(
        factor="second_factor",
        locked_at=moment,
        until=moment + timedelta(minutes=15),
        consecutive_failures=5,
    )


def test_an_open_login_survives_when_nothing_happened() -> None:
    assert tf.challenge_still_open(given(*enrolled()), NOW, NOW + timedelta(minutes=1))


def test_a_lockout_after_the_password_step_kills_the_login_once_it_ends() -> None:
    state = given(*enrolled(), locked_at(NOW + timedelta(minutes=1)))
    after_the_lock = NOW + timedelta(minutes=20)
    assert not tf.challenge_still_open(state, NOW, after_the_lock)


def test_while_locked_the_login_stays_open_for_the_check_to_answer_locked() -> None:
    state = given(*enrolled(), locked_at(NOW + timedelta(minutes=1)))
    during = NOW + timedelta(minutes=2)
    assert tf.challenge_still_open(state, NOW, during)
    verdict = tf.verify_otp(state, STEP + 1, "login", during, POLICY)
    assert (verdict.accepted, verdict.reason) == (False, "locked")


def test_a_lockout_before_the_password_step_does_not_kill_the_login() -> None:
    state = given(*enrolled(), locked_at(NOW - timedelta(hours=1)))
    assert tf.challenge_still_open(state, NOW, NOW + timedelta(minutes=1))


def test_no_login_step_is_open_once_2fa_is_off() -> None:
    state = given(*enrolled(), ev.TwoFactorDisabled(session_id=None, method="totp"))
    assert not tf.challenge_still_open(state, NOW, NOW)


def test_status_counts_a_reset_past_its_cooling_off_as_done() -> None:
    state = given(
        *enrolled(),
        ev.ResetRequested(request_id="r1", requested_by="s1", ticket="T-1", reason="lost"),
        ev.ResetApproved(request_id="r1", approved_by="s2", effective_at=NOW + timedelta(hours=1)),
    )
    before = tf.status(state, NOW)
    assert (before.enabled, before.recovery_codes_left, before.enabled_at) == (True, 6, NOW)
    assert before.reset is not None and before.reset.approved_by == "s2"
    after = tf.status(state, NOW + timedelta(hours=2))
    assert (after.enabled, after.recovery_codes_left, after.enabled_at, after.reset) == (
        False,
        0,
        None,
        None,
    )


def test_status_shows_a_pending_enrolment_until_it_expires() -> None:
    started = given(
        ev.EnrolmentStarted(encrypted_secret="ct", expires_at=NOW + timedelta(minutes=10))
    )
    assert tf.status(started, NOW).pending_enrolment_expires_at == NOW + timedelta(minutes=10)
    assert tf.status(started, NOW + timedelta(minutes=11)).pending_enrolment_expires_at is None


def test_one_decision_serves_both_kinds_of_code() -> None:
    state = given(*enrolled())
    otp = tf.check_second_factor(state, tf.TOTP, STEP + 1, "login", NOW, POLICY)
    code = tf.check_second_factor(state, tf.RECOVERY_CODE, 1, "login", NOW, POLICY)
    assert [e.type for e in otp.events] == ["twofa.otp_verified"]
    assert [e.type for e in code.events] == ["twofa.recovery_code_used"]
    replayed = tf.check_second_factor(state, tf.TOTP, STEP, "login", NOW, POLICY)
    assert (replayed.accepted, replayed.reason) == (False, "replayed")
