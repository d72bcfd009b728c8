"""Property-based tests of the aggregates: random command sequences never break an invariant.

A hypothesis state machine plays a user, their phone and three support people against
the Account and TwoFactor aggregates. Each command runs the way its handler runs it
(decide on the folded state, store the events as JSON, fold them in), on a clock the
machine moves itself, and ``flow_model.Model`` says what the answer should have been.
After every step: the folded state matches the model; every new event is one its stream
allows given the state before it; a fold from scratch and one from a snapshot agree;
no event holds a secret in the clear, and none reaches the public contract.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from shared.domain import account as acct
from shared.domain import events as ev
from shared.domain import twofactor as tf
from shared.domain.base import DomainEvent
from shared.domain.errors import DomainError, NotAllowed, NotEnabled
from shared.eventstore.envelope import EventMetadata, RecordedEvent
from shared.eventstore.registry import REGISTRY
from shared.eventstore.snapshots import AccountFold, TwoFactorFold
from shared.messaging.contract import PUBLIC_EVENTS
from shared.security import totp
from shared.security.crypto import KeyRing
from shared.security.recovery import RecoveryCodeHasher, normalize
from tests.reliability.flow_model import (
    WINDOW,
    Expect,
    Model,
    ModelSession,
    doubled,
    phone_code,
    recovery_code,
    step_at,
    totp_secret,
)
from tests.reliability.report import REPORT

pytestmark = pytest.mark.reliability

ACCOUNT_ID = "5f0c2a8e-3b1d-4e7a-9c6f-0d2b8a4e1f37"
ACCOUNT, TWOFACTOR = f"account-{ACCOUNT_ID}", f"twofactor-{ACCOUNT_ID}"
AAD = TWOFACTOR.encode()
STAFF = ("support-a", "support-b", "support-c", ACCOUNT_ID)  # the owner tries it too
PASSWORDS = ("correct horse battery", "tr0ub4dor and three", "a long enough passphrase")
EMAILS = ("ann@example.org", "ann@example.net")
START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CHALLENGE_TTL, SESSION_TTL = timedelta(minutes=5), timedelta(hours=12)
KEYRING = KeyRing({"k1": bytes(range(32))}, "k1")
HASHER = RecoveryCodeHasher(b"property-test-pepper-of-32-bytes", time_cost=1, memory_cost_kib=8)
SUCCESS = (ev.OtpVerified, ev.RecoveryCodeUsed)
SECRET_FIELDS = ("encrypted_secret", "recovery_code_hashes", "password_hash", "refresh_token_hash")

# About 30,000 steps, 17 s of one core: enough to catch each of 15 deliberately planted
# domain bugs (replay, lock count and length, reset timing, four eyes, snapshots...).
SETTINGS = settings(
    max_examples=600,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

POLICIES = st.builds(
    tf.Policy,
    max_failures=st.integers(1, 6),
    lock_base=st.sampled_from([timedelta(minutes=1), timedelta(minutes=15)]),
    lock_cap=st.sampled_from([timedelta(minutes=10), timedelta(hours=2), timedelta(hours=24)]),
    enrolment_ttl=st.sampled_from([timedelta(minutes=1), timedelta(minutes=10)]),
    reset_cooling_off=st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(hours=24)]),
)
PASSWORD_POLICIES = st.builds(
    acct.PasswordPolicy,
    threshold=st.integers(1, 10),
    base_delay=st.sampled_from([timedelta(seconds=1), timedelta(seconds=30)]),
    max_delay=st.sampled_from([timedelta(minutes=1), timedelta(minutes=15)]),
)
# Mostly short steps, so codes stay in their window and enrolments stay open; the edges
# (a lock's end, a reset's effect, an expiry) have their own rule.
SECONDS = [0, 1, 29, 30, 30, 31, 45, 60, 60, 90, 300, 600, 900, 3600, 43_200, 86_400]
DELTAS = st.sampled_from(SECONDS).map(lambda s: timedelta(seconds=s))
PICK = st.integers(0, 50)  # which earlier session or challenge: 0 is the newest
KNOWN = st.sampled_from([True, True, True, False])  # support usually names the real request
# A proof is (method, what the user types, offset or index), resolved against the model.
OtpSpec = tuple[str, str, int]
# Weighted towards codes that should work, or the flow rarely gets past enrolment.
OTP_PROOFS = st.tuples(
    st.just(tf.TOTP),
    st.sampled_from(["current", "current", "current", "replay", "pending", "retired", "stranger"]),
    st.sampled_from([0, 1, 0, 1, -1, 2, -2]),
)
CONFIRM_PROOFS = st.tuples(
    st.just(tf.TOTP),
    st.sampled_from(["pending", "pending", "pending", "retired", "current", "replay", "stranger"]),
    st.sampled_from([0, 1, -1, 0, 2, -2]),
)
CODE_PROOFS = st.tuples(
    st.just(tf.RECOVERY_CODE),
    st.sampled_from(["fresh", "fresh", "spent", "retired", "unknown", "garbage"]),
    st.integers(0, 11),
)
PROOFS = OTP_PROOFS | CODE_PROOFS

SEEN: Counter[str] = Counter()  # event types stored across the run, to prove coverage


def password_hash(password: str) -> str:
    return "pw-" + hashlib.sha256(password.encode()).hexdigest()


def refresh_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Proof:
    method: str
    text: str


class FlowMachine(RuleBasedStateMachine):
    model: Model
    policy: tf.Policy
    passwords: acct.PasswordPolicy
    snapshot_every: int

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.account = acct.AccountState()
        self.twofactor = tf.TwoFactorState()
        self.logs: dict[str, list[tuple[datetime, DomainEvent]]] = {ACCOUNT: [], TWOFACTOR: []}
        self.snapshots: dict[str, tuple[int, bytes]] = {}
        self.step_events: list[DomainEvent] = []
        self.second_at_start = self.twofactor  # the second factor as the current step found it
        self.serial = 0
        self.challenge_ids: list[str] = []
        self.session_ids: list[str] = []
        self.code_hash: dict[str, str] = {}
        self.cleartext: set[bytes] = set()  # secrets, codes, passwords: never in any event
        self.typed_otps: set[bytes] = set()  # never in a public event
        self.approved_at: dict[str, datetime] = {}
        self.cancelled: set[str] = set()

    # Plumbing ------------------------------------------------------------------------

    def _begin(self) -> None:
        REPORT.other["property steps"] += 1
        self.model.settle(self.now)
        self.step_events = []
        self.second_at_start = self.twofactor

    def _id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial}"

    def _nothing_recorded(self) -> None:
        assert self.step_events == [], "a refused command recorded events"

    def _refused(self, expected: type[DomainError] | None, decide: Callable[[], object]) -> None:
        assert expected is not None, "the model allows what the domain was asked to refuse"
        with pytest.raises(DomainError) as caught:
            decide()
        assert type(caught.value) is expected
        self._nothing_recorded()

    def _append(self, stream: str, events: Sequence[DomainEvent]) -> None:
        """Store ``events`` as the repository does (JSON through the registry), fold them
        in one by one, and snapshot when the batch crosses a multiple of ``snapshot_every``."""
        log = self.logs[stream]
        loaded_version = len(log)
        for event in events:
            data = orjson.loads(REGISTRY.encode(event))
            stored = REGISTRY.decode(event.type, event.schema_version, data)
            assert stored == event, f"{event.type} changes on its way through the store"
            self._check_secrets(stream, stored, len(log) + 1)
            if stream == TWOFACTOR:
                self._check_twofactor_event(stored)
                self.twofactor = tf.evolve(self.twofactor, stored)
            else:
                self._check_account_event(stored)
                self.account = acct.evolve(self.account, stored)
            log.append((self.now, stored))
            self.step_events.append(stored)
            SEEN[stored.type] += 1
        if len(log) // self.snapshot_every > loaded_version // self.snapshot_every:
            snapshot = (
                TwoFactorFold().to_snapshot(self.twofactor)
                if stream == TWOFACTOR
                else AccountFold().to_snapshot(self.account)
            )
            self.snapshots[stream] = (len(log), orjson.dumps(snapshot))

    def _new_codes(self) -> tuple[list[str], list[str]]:
        codes = [recovery_code(self.serial * 10 + i) for i in range(6)]
        self.serial += 1
        for code in codes:
            self.code_hash[code] = HASHER.hash(code)
            self.cleartext.update({code.encode(), code.replace("-", "").encode()})
        return codes, [self.code_hash[c] for c in codes]

    def _typed(self, spec: OtpSpec) -> Proof:
        """What the user types for ``spec``: a code from their phone or their printout."""
        method, kind, n = spec
        m, stranger = self.model, totp_secret(-1)
        if method == tf.TOTP:
            phones = {
                "current": m.secret,
                "replay": m.secret,  # with no step accepted yet, the current code
                "pending": m.pending[0] if m.pending else None,
                "retired": m.retired_secrets[-1] if m.retired_secrets else None,
            }
            if kind == "replay" and m.secret is not None and m.secret in m.highest_step:
                text = phone_code(m.secret, m.highest_step[m.secret])
            else:
                text = phone_code(phones.get(kind) or stranger, step_at(self.now) + n)
            self.typed_otps.add(text.encode())
            return Proof(method, text)
        pools = {
            "fresh": [c for c in m.codes if c not in m.spent],
            "spent": sorted(m.spent),
            "retired": sorted(m.retired),
            "unknown": [recovery_code(-1)],
        }
        if kind == "garbage":
            return Proof(method, "not a recovery code")
        pool = pools[kind] or pools["unknown"]
        text = pool[n % len(pool)]
        return Proof(method, text.upper().replace("-", " ") if n % 2 else text)

    def _verdict(self, proof: Proof, purpose: str) -> tf.Verdict:
        """``shared.app.secondfactor.verdict_on``: match the code outside, then decide."""
        state, now = self.twofactor, self.now
        if proof.method == tf.TOTP:
            step = None
            if state.secret is not None:
                secret = KEYRING.decrypt(state.secret, AAD).decode()
                step = totp.match_step(secret, proof.text, now, window=WINDOW)
            return tf.verify_otp(state, step, purpose, now, self.policy)
        index = HASHER.match(state.code_hashes, proof.text) if normalize(proof.text) else None
        return tf.redeem_recovery_code(state, index, purpose, now, self.policy)

    def _second_factor(self, proof: Proof, purpose: str) -> tf.Verdict | None:
        """The domain's verdict on ``proof``, checked against the model's; None when off."""
        was_locked = self.model.locked(self.now)
        expected = self.model.prove(proof.method, proof.text, self.now)
        try:
            verdict = self._verdict(proof, purpose)
        except NotEnabled:
            assert expected is None, "a second-factor check refused while 2FA is on"
            self._nothing_recorded()
            return None
        assert expected is not None, "a second factor was checked while 2FA is off"
        got = Expect(verdict.accepted, verdict.reason, verdict.attempts_left, verdict.locked_until)
        assert got == expected, (proof, purpose)
        if was_locked:
            assert verdict.events == (), "a check while locked recorded events"
        return verdict

    def _prove(
        self, pick: int, right: bool, spec: OtpSpec | None, purpose: str
    ) -> tuple[str, tuple[str, ...]] | None:
        """``services.auth.usecases.account._prove``: the session, the password, then the second
        factor when it is on. The session and amr, or None when refused (after recording
        what the refusal records: a password or second-factor failure, nothing else)."""
        m, now = self.model, self.now
        sid = self.session_ids[-1 - pick % len(self.session_ids)] if self.session_ids else "s0"
        live = m.live_session(sid, now)
        try:
            acct.active_session(self.account, sid, now)
        except NotAllowed:
            assert live is None, "a live session was refused"
            self._nothing_recorded()
            return None
        assert live is not None, "an ended session was let in"
        retry = acct.retry_password_at(self.account, True, now, self.passwords)
        assert retry == m.retry_at(True, now)
        if retry is not None:
            self._nothing_recorded()
            return None
        if not right:
            m.wrong_password(True, now)
            self._append(ACCOUNT, acct.fail_password(self.account, True, now, self.passwords))
            return None
        if not tf.requires_second_factor(self.twofactor, now):
            assert not m.on
            return sid, ("pwd",)
        assert m.on
        if spec is None:  # 401 second_factor_required
            self._nothing_recorded()
            return None
        proof = self._typed(spec)
        verdict = self._second_factor(proof, purpose)
        assert verdict is not None
        self._append(TWOFACTOR, verdict.events)
        if not verdict.accepted:
            return None
        return sid, ("pwd", "otp" if proof.method == tf.TOTP else proof.method, "mfa")

    def _start_session(self, amr: tuple[str, ...], acr: str, challenge_id: str | None) -> None:
        sid = self._id("s")
        token = f"rt.{sid}.0.{self.serial}"
        self.session_ids.append(sid)
        self.model.sessions[sid] = ModelSession(self.now + SESSION_TTL, [token])
        self.model.right_password()  # a completed login clears the password throttles
        if challenge_id is not None:
            del self.model.challenges[challenge_id]
        started = acct.complete_login(
            session_id=sid,
            refresh_hash=refresh_hash(token),
            amr=amr,
            acr=acr,
            now=self.now,
            session_ttl=SESSION_TTL,
            challenge_id=challenge_id,
        )
        self._append(ACCOUNT, started)

    # Account commands ----------------------------------------------------------------

    @initialize(
        policy=POLICIES,
        passwords=PASSWORD_POLICIES,
        snapshot_every=st.integers(1, 8),
        opening=st.sampled_from(["new", "enrolled", "reset requested", "reset approved"]),
    )
    def register(
        self, policy: tf.Policy, passwords: acct.PasswordPolicy, snapshot_every: int, opening: str
    ) -> None:
        """A new account; in most runs the owner turns 2FA on straight away, and in some
        support has already opened (and approved) a reset by the time the run starts."""
        self.policy, self.passwords, self.snapshot_every = policy, passwords, snapshot_every
        self.model = Model(policy, passwords, ACCOUNT_ID, PASSWORDS[0], EMAILS[0])
        self.cleartext.update(p.encode() for p in PASSWORDS)
        self._begin()
        registered = acct.register(
            self.account, username="ann", email=EMAILS[0], password_hash=password_hash(PASSWORDS[0])
        )
        self._append(ACCOUNT, registered)
        if opening != "new":
            self.start_enrolment()
            self.confirm_enrolment((tf.TOTP, "pending", 0))
            assert self.model.on
        if opening.startswith("reset"):
            self.request_reset(STAFF[0])
        if opening == "reset approved":
            self.approve_reset(STAFF[1], known=True)

    @rule()
    def register_again(self) -> None:
        self._begin()
        self._refused(
            NotAllowed,
            lambda: acct.register(
                self.account, username="ann", email=EMAILS[1], password_hash="pw-again"
            ),
        )

    @rule(right=st.booleans(), trusted=st.booleans())
    def log_in(self, right: bool, trusted: bool) -> None:
        """``services.auth.usecases.login.login`` from the throttle check on."""
        self._begin()
        m, now = self.model, self.now
        retry = acct.retry_password_at(self.account, trusted, now, self.passwords)
        assert retry == m.retry_at(trusted, now)
        if retry is not None:
            return self._nothing_recorded()
        if not right:
            m.wrong_password(trusted, now)
            self._append(ACCOUNT, acct.fail_password(self.account, trusted, now, self.passwords))
            return None
        assert tf.requires_second_factor(self.twofactor, now) == m.on
        if m.on:
            m.right_password()
            cid = self._id("c")
            self.challenge_ids.append(cid)
            m.challenges[cid] = (now, now + CHALLENGE_TTL)
            self._append(ACCOUNT, acct.open_challenge(cid, now, CHALLENGE_TTL))
            return None
        self._append(TWOFACTOR, tf.due_events(self.twofactor, now))
        self._start_session(("pwd",), "aal1", None)
        return None

    @rule(pick=PICK, spec=PROOFS)
    def log_in_second_step(self, pick: int, spec: OtpSpec) -> None:
        """``services.auth.usecases.login.login_mfa``: an open challenge, then the second factor."""
        self._begin()
        m, now = self.model, self.now
        cid = (
            self.challenge_ids[-1 - pick % len(self.challenge_ids)] if self.challenge_ids else "c0"
        )
        times = m.live_challenge(cid, now)
        try:
            challenge = acct.open_challenge_for(self.account, cid, now)
        except NotAllowed:
            assert times is None, "an open challenge was refused"
            return self._nothing_recorded()
        assert times == (challenge.issued_at, challenge.expires_at)
        state = self.twofactor
        if not tf.requires_second_factor(state, now):
            assert not m.on
            return self._nothing_recorded()
        since = state.last_locked_at
        if not tf.is_locked(state, now) and since and since >= challenge.issued_at:
            return self._nothing_recorded()  # a lockout after this login began killed it
        proof = self._typed(spec)
        verdict = self._second_factor(proof, "login")
        assert verdict is not None
        self._append(TWOFACTOR, verdict.events)
        if verdict.accepted:
            amr = ("pwd", "otp", "mfa") if proof.method == tf.TOTP else ("pwd", proof.method, "mfa")
            self._start_session(amr, "aal2", cid)
        return None

    @rule(pick=PICK, right=st.booleans(), spec=st.none() | PROOFS, new=st.sampled_from(PASSWORDS))
    def change_password(self, pick: int, right: bool, spec: OtpSpec | None, new: str) -> None:
        self._begin()
        proven = self._prove(pick, right, spec, "password_change")
        if proven is not None:
            sid = proven[0]
            self._append(ACCOUNT, acct.change_password(self.account, password_hash(new), sid))
            self.model.password = new
            self.model.sessions = {sid: self.model.sessions[sid]}

    @rule(pick=PICK, right=st.booleans(), spec=st.none() | PROOFS, new=st.sampled_from(EMAILS))
    def change_email(self, pick: int, right: bool, spec: OtpSpec | None, new: str) -> None:
        self._begin()
        proven = self._prove(pick, right, spec, "email_change")
        if proven is not None:
            changed = acct.change_email(self.account, new)
            assert (changed == []) == (new == self.model.email)
            self._append(ACCOUNT, changed)
            self.model.email = new

    @rule(pick=PICK, right=st.booleans(), spec=st.none() | PROOFS)
    def reauthenticate(self, pick: int, right: bool, spec: OtpSpec | None) -> None:
        self._begin()
        proven = self._prove(pick, right, spec, "reauthenticate")
        if proven is not None:
            sid, amr = proven
            self._append(ACCOUNT, acct.reauthenticate(self.account, sid, amr, self.now))

    @rule(pick=PICK, which=st.sampled_from(["current", "spent", "forged", "future"]), back=PICK)
    def refresh(self, pick: int, which: str, back: int) -> None:
        """``services.auth.usecases.sessions.refresh``: rotate, or revoke on a spent token."""
        self._begin()
        m, now = self.model, self.now
        sid = self.session_ids[-1 - pick % len(self.session_ids)] if self.session_ids else "s0"
        stored = self.account.sessions.get(sid)
        if stored is None or stored.expires_at <= now:
            assert m.live_session(sid, now) is None
            return self._nothing_recorded()
        session = m.live_session(sid, now)
        assert session is not None
        current = len(session.tokens) - 1
        if which == "current":
            generation, token = current, session.tokens[current]
        elif which == "spent":
            generation = max(0, current - 1 - back % max(current, 1))
            token = session.tokens[generation]
        elif which == "forged":
            generation, token = max(0, current - back % (current + 1)), f"forged.{sid}"
        else:
            generation, token = current + 1, f"forged.{sid}"
        new_token = f"rt.{sid}.{current + 1}.{self._id('t')}"
        ok, events = acct.refresh_session(
            self.account,
            session_id=sid,
            generation=generation,
            presented_hash=refresh_hash(token),
            new_hash=refresh_hash(new_token),
            now=now,
        )
        self._append(ACCOUNT, events)
        genuine = generation <= current and token == session.tokens[generation]
        if genuine and generation == current:
            assert ok
            session.tokens.append(new_token)
        elif genuine:
            assert not ok and [e.type for e in events] == ["session.revoked"]
            del m.sessions[sid]
        else:
            assert not ok
            self._nothing_recorded()

    @rule(pick=PICK)
    def log_out(self, pick: int) -> None:
        self._begin()
        sid = self.session_ids[-1 - pick % len(self.session_ids)] if self.session_ids else "s0"
        self._append(ACCOUNT, acct.end_session(self.account, sid))
        if self.model.sessions.pop(sid, None) is None:
            self._nothing_recorded()

    # Two-factor commands -------------------------------------------------------------

    @rule()
    def start_enrolment(self) -> None:
        self._begin()
        secret = totp_secret(self.serial)
        self.serial += 1
        self.cleartext.add(secret.encode())
        sealed = KEYRING.encrypt(secret.encode(), AAD)
        expected = self.model.start_enrolment(secret, self.now)

        def decide() -> list[DomainEvent]:
            return tf.start_enrolment(self.twofactor, sealed, self.now, self.policy)

        if expected is not None:
            return self._refused(expected, decide)
        self._append(TWOFACTOR, decide())
        return None

    @rule(spec=CONFIRM_PROOFS)
    def confirm_enrolment(self, spec: OtpSpec) -> None:
        """``services.enrolment.usecases.enrolment.confirm``."""
        self._begin()
        codes, hashes = self._new_codes()
        proof = self._typed(spec)
        session = self.session_ids[-1] if self.session_ids else None
        expected = self.model.confirm(proof.text, codes, self.now, session)
        try:
            sealed = tf.secret_to_confirm(self.twofactor, self.now)
            secret = KEYRING.decrypt(sealed, AAD).decode()
            step = totp.match_step(secret, proof.text, self.now, window=WINDOW)
        except DomainError:
            step = step_at(self.now)  # as if a caller skipped that check: the domain refuses
        if not isinstance(expected, Expect):

            def decide() -> tf.Verdict:
                return tf.confirm_enrolment(
                    self.twofactor, step, hashes, self.now, self.policy, session
                )

            return self._refused(expected, decide)
        verdict = tf.confirm_enrolment(self.twofactor, step, hashes, self.now, self.policy, session)
        got = Expect(verdict.accepted, verdict.reason, verdict.attempts_left, verdict.locked_until)
        assert got == expected
        self._append(TWOFACTOR, verdict.events)
        return None

    @rule(spec=PROOFS)
    def regenerate_codes(self, spec: OtpSpec) -> None:
        """``services.enrolment.usecases.enrolment.regenerate_codes``."""
        self._begin()
        codes, hashes = self._new_codes()
        verdict = self._second_factor(self._typed(spec), "regenerate_codes")
        if verdict is None:  # 2FA is off (or a reset took effect): it refuses on its own too
            return self._refused(
                NotEnabled, lambda: tf.regenerate_recovery_codes(self.twofactor, hashes, self.now)
            )
        if not verdict.accepted:
            return self._append(TWOFACTOR, verdict.events)
        regenerated = tf.regenerate_recovery_codes(self.twofactor, hashes, self.now)
        self._append(TWOFACTOR, [*verdict.events, *regenerated])
        self.model.regenerate(codes)

    @rule(spec=PROOFS)
    def disable(self, spec: OtpSpec) -> None:
        """``services.enrolment.usecases.enrolment.disable``: the second factor one last time."""
        self._begin()
        proof = self._typed(spec)
        verdict = self._second_factor(proof, "disable")
        if verdict is None:  # 2FA is off (or a reset took effect): it refuses on its own too
            return self._refused(
                NotEnabled, lambda: tf.disable(self.twofactor, proof.method, now=self.now)
            )
        if not verdict.accepted:
            return self._append(TWOFACTOR, verdict.events)
        after = tf.fold(self.twofactor, verdict.events)
        self._append(TWOFACTOR, [*verdict.events, *tf.disable(after, proof.method, now=self.now)])
        self.model.disable()

    @rule(by=st.sampled_from(STAFF))
    def request_reset(self, by: str) -> None:
        self._begin()
        request_id = self._id("r")
        expected = self.model.request_reset(request_id, by)

        def decide() -> list[DomainEvent]:
            return tf.request_reset(
                self.twofactor,
                account_id=ACCOUNT_ID,
                request_id=request_id,
                requested_by=by,
                ticket="T-1",
                reason="lost phone and codes",
                now=self.now,
            )

        if expected is not None:
            return self._refused(expected, decide)
        self._append(TWOFACTOR, decide())
        return None

    @rule(by=st.sampled_from(STAFF), known=KNOWN)
    def approve_reset(self, by: str, known: bool) -> None:
        self._begin()
        reset = self.twofactor.reset
        request_id = reset.request_id if known and reset else "r0"
        expected = self.model.approve_reset(request_id, by, self.now)

        def decide() -> list[DomainEvent]:
            return tf.approve_reset(
                self.twofactor,
                account_id=ACCOUNT_ID,
                request_id=request_id,
                approved_by=by,
                now=self.now,
                policy=self.policy,
            )

        if expected is not None:
            return self._refused(expected, decide)
        self.approved_at[request_id] = self.now
        self._append(TWOFACTOR, decide())
        return None

    @rule(by=st.sampled_from(STAFF), known=KNOWN)
    def cancel_reset(self, by: str, known: bool) -> None:
        self._begin()
        reset = self.twofactor.reset
        request_id = reset.request_id if known and reset else "r0"
        expected = self.model.cancel_reset(request_id)

        def decide() -> list[DomainEvent]:
            return tf.cancel_reset(
                self.twofactor,
                request_id=request_id,
                cancelled_by=by,
                reason="the user called",
                now=self.now,
            )

        if expected is not None:
            return self._refused(expected, decide)
        self._append(TWOFACTOR, decide())
        return None

    # Time ----------------------------------------------------------------------------

    @rule(delta=DELTAS)
    def advance_clock(self, delta: timedelta) -> None:
        self.now += delta
        self._begin()

    @rule(early=st.booleans())
    def wait_for_the_reset(self, early: bool) -> None:
        """Jump to the moment an approved reset takes effect, or a second before it."""
        reset = self.model.reset
        if reset is not None and reset.effective_at is not None:
            self.now = max(self.now, reset.effective_at - timedelta(seconds=early))
        self._begin()

    @rule(pick=PICK, early=st.booleans())
    def advance_to_an_edge(self, pick: int, early: bool) -> None:
        """Jump to (or one second before) a lock's end, a reset's effect, an expiry."""
        m = self.model
        edges = [
            m.locked_until,
            m.reset.effective_at if m.reset else None,
            m.pending[1] if m.pending else None,
            *(expires for _, expires in m.challenges.values()),
            *(s.expires_at for s in m.sessions.values()),
        ]
        ahead = sorted(t for t in edges if t is not None and t > self.now)
        if ahead:
            edge = ahead[pick % len(ahead)]
            self.now = (
                edge - timedelta(seconds=1)
                if early and edge - self.now > timedelta(seconds=1)
                else edge
            )
        self._begin()

    # Invariants, per event -----------------------------------------------------------

    def _check_twofactor_event(self, event: DomainEvent) -> None:
        before, now, policy = self.twofactor, self.now, self.policy
        locked, due = tf.is_locked(before, now), tf.reset_is_due(before, now)
        reset = before.reset
        match event:
            case ev.EnrolmentStarted():
                assert not before.enabled, "an enrolment started while 2FA is on"
                assert event.expires_at == now + policy.enrolment_ttl
            case ev.TwoFactorEnabled():
                assert not before.enabled and not self._switched_on(), "2FA enabled twice in a row"
                assert before.pending_secret is not None, "2FA enabled without an enrolment"
                assert before.pending_expires_at is not None and before.pending_expires_at > now
                assert not locked and event.enabled_at == now
                assert abs(event.time_step - step_at(now)) <= WINDOW
            case ev.ResetCompleted():
                assert reset is not None and reset.request_id == event.request_id
                assert reset.approved_by is not None and reset.effective_at is not None
                assert event.request_id not in self.cancelled, "a cancelled reset completed"
                cooled = self.approved_at[event.request_id] + policy.reset_cooling_off
                assert reset.effective_at == cooled <= now, "a reset completed before its time"
                assert before.enabled and self._switched_on(), "a reset completed while 2FA is off"
            case ev.TwoFactorDisabled():
                assert before.enabled and self._switched_on() and not due, "2FA disabled while off"
            case ev.OtpVerified():
                assert before.enabled and not due and not locked, "an OTP accepted while locked"
                assert event.time_step > before.last_time_step, "a time-step accepted twice"
                assert abs(event.time_step - step_at(now)) <= WINDOW
            case ev.RecoveryCodeUsed():
                assert before.enabled and not due and not locked, "a code accepted while locked"
                assert 0 <= event.code_index < len(before.code_hashes)
                assert before.code_hashes[event.code_index] is not None, "a code used twice"
                assert event.remaining == before.codes_left - 1
            case ev.OtpFailed():
                assert not locked, "a failure counted while locked"
                assert event.consecutive_failures == before.failures + 1 <= policy.max_failures
            case ev.SecondFactorLocked():
                assert before.failures == event.consecutive_failures == policy.max_failures
                assert event.locked_at == now and not locked
                length = doubled(policy.lock_base, self._locks_in_a_row(), policy.lock_cap)
                assert event.until - now == length, "the lock is not the doubled length"
            case ev.RecoveryCodesRegenerated():
                assert before.enabled and not due
            case ev.ResetRequested():
                assert event.requested_by != ACCOUNT_ID, "a reset requested for oneself"
                assert before.enabled and not due and reset is None
            case ev.ResetApproved():
                assert reset is not None and reset.request_id == event.request_id
                assert reset.approved_by is None
                assert event.approved_by not in (ACCOUNT_ID, reset.requested_by), "four eyes"
                assert event.effective_at == now + policy.reset_cooling_off
            case ev.ResetCancelled():
                assert reset is not None and reset.request_id == event.request_id and not due
                self.cancelled.add(event.request_id)
            case _:
                raise AssertionError(f"{event.type} on the two-factor stream")

    def _switched_on(self) -> bool:
        """Read off the stream alone: was the last on/off switch an enable?"""
        switches = (ev.TwoFactorEnabled, ev.TwoFactorDisabled, ev.ResetCompleted)
        for _, event in reversed(self.logs[TWOFACTOR]):
            if isinstance(event, switches):
                return isinstance(event, ev.TwoFactorEnabled)
        return False

    def _locks_in_a_row(self) -> int:
        """Locks since the last success, enable, disable or reset, read off the stream."""
        count = 0
        for _, event in reversed(self.logs[TWOFACTOR]):
            if isinstance(event, ev.SecondFactorLocked):
                count += 1
            elif isinstance(
                event, (*SUCCESS, ev.TwoFactorEnabled, ev.TwoFactorDisabled, ev.ResetCompleted)
            ):
                break
        return count

    def _check_account_event(self, event: DomainEvent) -> None:
        before, now = self.account, self.now
        needs = tf.requires_second_factor(self.second_at_start, now)
        proved = {e.purpose for e in self.step_events if isinstance(e, SUCCESS)}
        match event:
            case ev.AccountRegistered():
                assert not before.registered
            case ev.LoginFailed():
                count = before.throttle(event.trusted_device).failures
                assert event.consecutive_failures == count + 1 and event.at == now
            case ev.MfaChallengeOpened():
                assert needs, "an mfa challenge opened while 2FA is off"
            case ev.LoginSucceeded() if event.challenge_id is None:
                assert not needs, "logged in without the second factor"
            case ev.LoginSucceeded():
                assert "login" in proved, "an mfa login without a second factor"
                challenge = before.challenges.get(event.challenge_id or "")
                assert challenge is not None and challenge.expires_at > now
            case ev.PasswordChanged():
                assert not needs or "password_change" in proved, "password changed without OTP"
            case ev.EmailChanged():
                assert not needs or "email_change" in proved, "email changed without OTP"
                assert event.previous_email == before.email != event.email
            case ev.Reauthenticated():
                assert not needs or "reauthenticate" in proved
            case ev.SessionStarted() | ev.SessionRefreshed() | ev.SessionEnded():
                pass
            case ev.SessionRevoked():
                assert event.session_id in before.sessions
            case _:
                raise AssertionError(f"{event.type} on the account stream")

    def _check_secrets(self, stream: str, event: DomainEvent, version: int) -> None:
        stored = REGISTRY.encode(event)
        assert not [s for s in self.cleartext if s in stored], f"{event.type} holds a secret"
        meta = EventMetadata(actor="property-test", occurred_at=self.now)
        recorded = RecordedEvent(
            version, 1, stream, version, uuid.UUID(int=version), event, meta, self.now
        )
        public = PUBLIC_EVENTS.to_integration(recorded)
        if public is None:
            return
        body = public.body()
        hidden = [str(event.time_step).encode()] if hasattr(event, "time_step") else []
        for name in SECRET_FIELDS:
            value = getattr(event, name, None)
            hidden += [v.encode() for v in (value if isinstance(value, tuple) else (value,)) if v]
        leaked = [s for s in (*hidden, *self.typed_otps, *self.cleartext) if s in body]
        assert not leaked, f"{event.type} publishes a secret"

    # Invariants, after every step ----------------------------------------------------

    @invariant()
    def second_factor_matches_the_model(self) -> None:
        m, now = self.model, self.now
        state = tf.fold(self.twofactor, tf.due_events(self.twofactor, now))
        assert tf.requires_second_factor(self.twofactor, now) == m.on == state.enabled
        for session in [*self.session_ids, "a session never seen"]:
            allowed = tf.password_only_allowed(state, session)
            assert allowed == m.password_only_allowed(session), "aal1 tokens differ"
        secret = KEYRING.decrypt(state.secret, AAD).decode() if state.secret else None
        assert secret == m.secret
        expected = tuple(None if c in m.spent else self.code_hash[c] for c in m.codes)
        assert state.code_hashes == expected, "recovery codes differ from the model's"
        try:
            pending = KEYRING.decrypt(tf.secret_to_confirm(state, now), AAD).decode()
        except DomainError:
            pending = None
        assert pending == (m.pending[0] if m.pending and m.pending[1] > now else None)
        assert tf.is_locked(state, now) == m.locked(now)
        if m.locked(now):
            assert state.locked_until == m.locked_until
        assert (state.failures, state.lock_count) == (m.fails, m.locks)
        assert state.last_locked_at == m.last_lock_at
        got, want = state.reset, m.reset
        assert (got is None) == (want is None), "a reset pending in one but not the other"
        if got is not None and want is not None:
            assert (got.request_id, got.requested_by, got.approved_by, got.effective_at) == (
                want.request_id,
                want.requested_by,
                want.approved_by,
                want.effective_at,
            )

    @invariant()
    def account_matches_the_model(self) -> None:
        m, now, state = self.model, self.now, self.account
        assert state.registered and state.email == m.email
        assert state.password_hash == password_hash(m.password)
        for trusted in (False, True):
            retry = acct.retry_password_at(state, trusted, now, self.passwords)
            assert retry == m.retry_at(trusted, now), "the password throttle differs"
        sessions = {
            sid: (s.expires_at, s.generation, s.refresh_hash) for sid, s in state.sessions.items()
        }
        assert sessions == {
            sid: (s.expires_at, len(s.tokens) - 1, refresh_hash(s.tokens[-1]))
            for sid, s in m.sessions.items()
        }
        live = {c.challenge_id: (c.issued_at, c.expires_at) for c in state.challenges.values()}
        assert {k: t for k, t in live.items() if t[1] > now} == {
            k: t for k, t in m.challenges.items() if t[1] > now
        }

    @invariant()
    def folds_agree(self) -> None:
        """A fold from scratch, one from the last snapshot and the running state agree."""
        tf_events = [e for _, e in self.logs[TWOFACTOR]]
        acct_events = [e for _, e in self.logs[ACCOUNT]]
        assert tf.fold(tf.TwoFactorState(), tf_events) == self.twofactor
        assert acct.fold(acct.AccountState(), acct_events) == self.account
        tf_fold, acct_fold = TwoFactorFold(), AccountFold()
        if TWOFACTOR in self.snapshots:
            version, data = self.snapshots[TWOFACTOR]
            restored = tf_fold.from_snapshot(orjson.loads(data))
            assert tf.fold(restored, tf_events[version:]) == self.twofactor
        if ACCOUNT in self.snapshots:
            version, data = self.snapshots[ACCOUNT]
            restored_account = acct_fold.from_snapshot(orjson.loads(data))
            assert acct.fold(restored_account, acct_events[version:]) == self.account
        now_tf = orjson.loads(orjson.dumps(tf_fold.to_snapshot(self.twofactor)))
        assert tf_fold.from_snapshot(now_tf) == self.twofactor
        now_acct = orjson.loads(orjson.dumps(acct_fold.to_snapshot(self.account)))
        assert acct_fold.from_snapshot(now_acct) == self.account


def test_random_command_sequences_never_break_an_invariant() -> None:
    SEEN.clear()
    run_state_machine_as_test(FlowMachine, settings=SETTINGS)
    # The run reached every corner the invariants speak about (fixed seed: not flaky).
    wanted = {
        "twofa.enabled",
        "twofa.otp_verified",
        "twofa.otp_failed",
        "twofa.recovery_code_used",
        "twofa.recovery_codes_regenerated",
        "twofa.locked",
        "twofa.disabled",
        "twofa.reset_approved",
        "twofa.reset_cancelled",
        "twofa.reset_completed",
        "account.password_changed",
        "account.email_changed",
        "login.mfa_required",
        "session.revoked",
    }
    assert wanted <= set(SEEN), f"never reached: {sorted(wanted - set(SEEN))}"
