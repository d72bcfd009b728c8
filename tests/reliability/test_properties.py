"""Property-based tests of the use cases: random command sequences never break an invariant.

A hypothesis state machine plays a user, their phone and three support people against
the real use cases (``services.auth.usecases`` login, login_mfa, the password, email and
re-authentication changes, refresh, logout; ``services.enrolment.usecases`` start,
confirm, regenerate, disable, the support reset), which load and save through the real
``Repository`` (with snapshots) on a real PostgreSQL event store, on a clock the machine
moves itself. ``flow_model.Model`` (its own HOTP, its own lock arithmetic, the rule "a
lockout after this login began kills it") says what each answer should have been.
After every step: what the use case answered matches the model; every event it stored
is one its stream allows given the state before it; the state the repository loads
(snapshot, then later events) equals a fold of every stored event and matches the
model; no event holds a secret in the clear, and none reaches the public contract.

``tests/reliability/mutants.py`` plants bugs in the product code and runs this test on
each: it must catch every one (``make mutants``, and a table in ``make reliability``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import services
import shared
from services.auth.main import build_deps
from services.auth.usecases import account as account_uc
from services.auth.usecases import login as login_uc
from services.auth.usecases import sessions as sessions_uc
from services.auth.usecases.deps import AuthDeps
from services.auth.usecases.login import MfaChallenge
from services.auth.usecases.sessions import TokenSet
from services.enrolment.usecases import enrolment as enrolment_uc
from services.enrolment.usecases import reset as reset_uc
from shared.app.context import Context
from shared.app.errors import (
    AppError,
    InvalidCredentials,
    MfaTokenInvalid,
    RefreshTokenInvalid,
    RefreshTokenReused,
    SecondFactorRefused,
    SecondFactorRequired,
    SessionEnded,
    Throttled,
    UsernameTaken,
    WrongPassword,
)
from shared.app.secondfactor import Proof
from shared.domain import account as acct
from shared.domain import events as ev
from shared.domain import twofactor as tf
from shared.domain.base import DomainEvent
from shared.domain.errors import DomainError, NotEnabled
from shared.eventstore.envelope import RecordedEvent
from shared.eventstore.registry import REGISTRY
from shared.eventstore.repository import Repository
from shared.eventstore.snapshots import AccountFold, TwoFactorFold
from shared.messaging.contract import PUBLIC_EVENTS
from shared.platform.db import create_pool
from shared.security import recovery, totp
from shared.security.recovery import RecoveryCodeHasher
from shared.security.tokens import Claims
from tests.reliability import mutants
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
from tests.support.clock import Clock
from tests.support.database import admin_sql
from tests.support.servers import with_database
from tests.support.settings import settings_for

pytestmark = pytest.mark.reliability

T = TypeVar("T")

STAFF = ("support-a", "support-b", "support-c", "owner")  # the owner tries it too
PASSWORDS = ("correct horse battery", "tr0ub4dor and three", "a long enough passphrase")
WRONG_PASSWORD = "not the password at all"
EMAILS = ("ann@example.org", "ann@example.net")
START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CHALLENGE_TTL, SESSION_TTL = timedelta(minutes=5), timedelta(hours=12)
HASHER = RecoveryCodeHasher(b"property-test-pepper-of-32-bytes", time_cost=1, memory_cost_kib=8)
SUCCESS = (ev.OtpVerified, ev.RecoveryCodeUsed)
SECRET_FIELDS = ("encrypted_secret", "recovery_code_hashes", "password_hash", "refresh_token_hash")

# The mutation harness (mutants.py) runs this test in a copy of the tree with a bug
# planted: it names the copy (this module must be imported from there), and asks for no
# shrinking (TWOFA_PROPERTY_NO_SHRINK), since it only needs to know that an example fails.
MUTANT_ROOT = os.environ.get("TWOFA_MUTANT_ROOT")
# About 6,000 steps against the store: enough to catch every bug mutants.py plants.
EXAMPLES = int(os.environ.get("TWOFA_PROPERTY_EXAMPLES", str(mutants.EXAMPLES)))
SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    phases=[Phase.explicit, Phase.generate]
    if os.environ.get("TWOFA_PROPERTY_NO_SHRINK")
    else list(Phase),
)

POLICIES = st.builds(
    tf.Policy,
    max_failures=st.sampled_from([1, 2, 3, 5]),  # small ones reach a lock, and the next
    lock_base=st.sampled_from([timedelta(seconds=30), timedelta(minutes=1), timedelta(minutes=15)]),
    lock_cap=st.sampled_from([timedelta(minutes=10), timedelta(hours=2), timedelta(hours=24)]),
    enrolment_ttl=st.sampled_from([timedelta(minutes=1), timedelta(minutes=10)]),
    reset_cooling_off=st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(hours=24)]),
)
PASSWORD_POLICIES = st.builds(
    acct.PasswordPolicy,
    threshold=st.sampled_from([1, 2, 3, 10]),
    base_delay=st.sampled_from([timedelta(seconds=1), timedelta(seconds=30)]),
    max_delay=st.sampled_from([timedelta(minutes=1), timedelta(minutes=15)]),
)
# Mostly short steps, so codes stay in their window and enrolments stay open; the edges
# (a lock's end, a reset's effect, an expiry) have their own rule.
SECONDS = [0, 1, 29, 30, 30, 31, 45, 60, 60, 90, 300, 600, 900, 3600, 43_200, 86_400]
DELTAS = st.sampled_from(SECONDS).map(lambda s: timedelta(seconds=s))
PICK = st.integers(0, 50)  # which earlier session or challenge: 0 is the newest
KNOWN = st.sampled_from([True, True, True, False])  # support usually names the real request
RIGHT = st.sampled_from([True, True, True, False])  # the user mostly knows their password
# A proof is (method, what the user types, offset or index), resolved against the model.
OtpSpec = tuple[str, str, int]
# Weighted towards codes that should work, or the flow rarely gets past enrolment.
OTP_PROOFS = st.tuples(
    st.just(tf.TOTP),
    st.sampled_from(["current"] * 5 + ["replay", "pending", "retired", "stranger"]),
    st.sampled_from([0, 1, 0, 1, -1, 2, -2]),
)
CONFIRM_PROOFS = st.tuples(
    st.just(tf.TOTP),
    st.sampled_from(["pending", "pending", "pending", "retired", "current", "replay", "stranger"]),
    st.sampled_from([0, 1, -1, 0, 2, -2]),
)
CODE_PROOFS = st.tuples(
    st.just(tf.RECOVERY_CODE),
    st.sampled_from(["fresh"] * 4 + ["spent", "retired", "unknown", "garbage"]),
    st.integers(0, 11),
)
PROOFS = OTP_PROOFS | CODE_PROOFS

SEEN: Counter[str] = Counter()  # event types stored across the run, to prove coverage


@dataclass
class World:
    """One database for the whole run, the event loop the use cases run on, the clock."""

    loop: asyncio.AbstractEventLoop
    deps: AuthDeps
    clock: Clock
    serial: int = 0  # secrets, codes and usernames handed out so far

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


@pytest.fixture
def world(
    postgres_url: str, template_database: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    """The real auth and enrolment dependencies on a fresh database, on a hand clock.

    Three things are swapped: the secret and recovery codes a new enrolment gets come
    from a fixed sequence (so a run repeats exactly), the recovery-code hash is cheap,
    and a wrong password is not held back to the timing floor (the use case sleeps).
    """
    loop = asyncio.new_event_loop()
    name = f"twofa_props_{uuid.uuid4().hex[:12]}"
    loop.run_until_complete(
        admin_sql(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    )
    # Durability is not what this test is about: commits need not wait for the disk.
    loop.run_until_complete(
        admin_sql(postgres_url, f'ALTER DATABASE "{name}" SET synchronous_commit TO off')
    )
    url = with_database(postgres_url, name)
    pool: asyncpg.Pool = loop.run_until_complete(create_pool(url, min_size=1, max_size=4))
    clock = Clock(START)
    deps = dataclasses.replace(build_deps(settings_for(url), pool, clock), recovery=HASHER)
    made = World(loop, deps, clock)

    def new_secret() -> str:
        made.serial += 1
        return totp_secret(made.serial)

    def new_codes(count: int = 6) -> list[str]:
        made.serial += 1
        return [recovery_code(made.serial * 10 + i) for i in range(count)]

    monkeypatch.setattr(totp, "new_secret", new_secret)
    monkeypatch.setattr(recovery, "new_codes", new_codes)
    monkeypatch.setattr(login_uc, "FAILED_LOGIN_FLOOR", 0.0)
    try:
        yield made
    finally:
        loop.run_until_complete(pool.close())
        loop.run_until_complete(admin_sql(postgres_url, f'DROP DATABASE "{name}" WITH (FORCE)'))
        loop.close()


def expect_of(verdict: tf.Verdict) -> Expect:
    return Expect(verdict.accepted, verdict.reason, verdict.attempts_left, verdict.locked_until)


class FlowMachine(RuleBasedStateMachine):
    world: ClassVar[World]
    model: Model
    deps: AuthDeps
    policy: tf.Policy
    passwords: acct.PasswordPolicy
    account_id: str
    username: str

    def __init__(self) -> None:
        super().__init__()
        self.clock = self.world.clock
        self.clock.now = START
        self.account = acct.AccountState()  # every stored event folded in, one by one
        self.twofactor = tf.TwoFactorState()
        self.versions = {"account": 0, "twofactor": 0}
        self.logs: list[DomainEvent] = []  # the two-factor stream as stored
        self.step_events: list[DomainEvent] = []
        self.second_at_start = self.twofactor  # the second factor as the current step found it
        self.session_ids: list[str] = []
        self.tokens: dict[str, list[str]] = {}  # refresh tokens by session, ended ones too
        self.challenges: list[tuple[str, str]] = []  # (mfa token, challenge id)
        self.device_token: str | None = None
        self.cleartext: set[bytes] = set()  # secrets, codes, passwords: never in any event
        self.typed_otps: set[bytes] = set()  # never in a public event
        self.approved_at: dict[str, datetime] = {}
        self.cancelled: set[str] = set()
        self.loaded: tuple[tuple[int, int], tf.TwoFactorState, acct.AccountState] | None = None
        self.verified: tuple[str, str] | None = None  # the password hash checked last

    # Plumbing ------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self.clock.now

    @now.setter
    def now(self, value: datetime) -> None:
        self.clock.now = value

    def _streams(self) -> tuple[str, str]:
        return f"twofactor-{self.account_id}", f"account-{self.account_id}"

    def _begin(self) -> None:
        REPORT.other["property steps"] += 1
        self.model.settle(self.now)
        self.step_events = []
        self.second_at_start = self.twofactor

    def _do(self, coro: Coroutine[Any, Any, T]) -> T | AppError | DomainError:
        """Run a use case to its answer (a refusal is an answer), then check what it stored."""
        try:
            outcome: T | AppError | DomainError = self.world.run(coro)
        except (AppError, DomainError) as refusal:
            outcome = refusal
        self._collect()
        return outcome

    def _collect(self) -> None:
        """Read what the step stored, two-factor stream first, and check each event."""
        twofactor, account = self._streams()
        for stream, kind in ((twofactor, "twofactor"), (account, "account")):
            store = self.deps.store
            for recorded in self.world.run(store.read_stream(stream, self.versions[kind])):
                assert recorded.stream_version == self.versions[kind] + 1
                self.versions[kind] = recorded.stream_version
                self._check_secrets(recorded)
                event = recorded.event
                if kind == "twofactor":
                    self._check_twofactor_event(event)
                    self.twofactor = tf.evolve(self.twofactor, event)
                    self.logs.append(event)
                else:
                    self._check_account_event(event)
                    self.account = acct.evolve(self.account, event)
                self.step_events.append(event)
                SEEN[event.type] += 1

    def _nothing_recorded(self) -> None:
        assert self.step_events == [], "a refused command recorded events"

    def _refused_as(self, outcome: object, expected: type[Exception]) -> None:
        assert type(outcome) is expected, f"{outcome!r} where the model says {expected.__name__}"
        self._nothing_recorded()

    def _ctx(self) -> Context:
        return Context(clock=self.clock)

    def _claims(self, session_id: str) -> Claims:
        """What a verified access token of ``session_id`` says (the HTTP layer checks it)."""
        at = int(self.now.timestamp())
        return Claims(
            iss="twofa",
            sub=self.account_id,
            aud="twofa",
            sid=session_id,
            iat=at,
            exp=at + 900,
            auth_time=at,
            amr=("pwd",),
            acr="aal1",
            roles=(),
            jti="",
            typ="at+jwt",
        )

    def _staff(self, by: str) -> Claims:
        return dataclasses.replace(self._claims(""), sub=self.account_id if by == "owner" else by)

    def _session(self, pick: int) -> str:
        return self.session_ids[-1 - pick % len(self.session_ids)] if self.session_ids else "s0"

    def _newest_session(self) -> str:
        return self.session_ids[-1] if self.session_ids else "no session"

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
            return Proof(otp=text)
        pools = {
            "fresh": [c for c in m.codes if c not in m.spent],
            "spent": sorted(m.spent),
            "retired": sorted(m.retired),
            "unknown": [recovery_code(-1)],
        }
        if kind == "garbage":
            return Proof(recovery_code="not a recovery code")
        pool = pools[kind] or pools["unknown"]
        text = pool[n % len(pool)]
        return Proof(recovery_code=text.upper().replace("-", " ") if n % 2 else text)

    @staticmethod
    def _text(proof: Proof) -> str:
        return proof.otp if proof.otp is not None else proof.recovery_code or ""

    def _second_factor(self, proof: Proof, outcome: object, accepted: type[object]) -> bool:
        """Check a use case's answer to a second factor against the model's; True when the
        model accepted it (then ``outcome`` is of type ``accepted``)."""
        was_locked = self.model.locked(self.now)
        expected = self.model.prove(proof.method, self._text(proof), self.now)
        if expected is None:
            self._refused_as(outcome, NotEnabled)
            return False
        if not expected.accepted:
            assert isinstance(outcome, SecondFactorRefused), (outcome, expected)
            assert expect_of(outcome.verdict) == expected, proof
            if was_locked:
                self._nothing_recorded()
            return False
        assert isinstance(outcome, accepted), (outcome, expected)
        return True

    def _started(self, tokens: object, amr: tuple[str, ...], challenge_id: str | None) -> None:
        """A login that the model says succeeds: check the tokens, record the session."""
        assert isinstance(tokens, TokenSet), f"{tokens!r} where the model lets the user in"
        acr = "aal1" if challenge_id is None else "aal2"
        assert (tokens.amr, tokens.acr) == (amr, acr)
        claims = self.deps.verifier.verify_access(tokens.access_token, now=self.now)
        assert (claims.sub, claims.amr, claims.acr) == (self.account_id, amr, acr)
        sid = claims.sid
        self.session_ids.append(sid)
        self.tokens[sid] = [tokens.refresh_token]
        self.cleartext.add(tokens.refresh_token.encode())
        self.device_token = tokens.device_token
        self.model.sessions[sid] = ModelSession(self.now + SESSION_TTL, [tokens.refresh_token])
        self.model.right_password()  # a completed login clears the password throttles
        if challenge_id is not None:
            del self.model.challenges[challenge_id]

    def _throttled(self, outcome: object, retry_at: datetime) -> None:
        assert isinstance(outcome, Throttled), f"{outcome!r} while the password is throttled"
        assert outcome.retry_after == max(1, int((retry_at - self.now).total_seconds()))
        self._nothing_recorded()

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
        """``register_account`` and two logins; in most runs the owner then turns 2FA on
        straight away, and in some support has already opened (and approved) a reset by
        the time the run starts."""
        self.policy, self.passwords = policy, passwords
        base = self.world.deps
        self.deps = dataclasses.replace(
            base,
            policy=policy,
            password_policy=passwords,
            twofactors=Repository(
                base.store, TwoFactorFold(), base.twofactors.keys, snapshot_every=snapshot_every
            ),
            accounts=Repository(
                base.store, AccountFold(), base.twofactors.keys, snapshot_every=snapshot_every
            ),
        )
        self.world.serial += 1
        self.username = f"ann{self.world.serial}"
        self.account_id = self.world.run(
            account_uc.register_account(
                self.deps,
                self._ctx(),
                username=self.username,
                email=EMAILS[0],
                password=PASSWORDS[0],
            )
        )
        self.model = Model(policy, passwords, self.account_id, PASSWORDS[0], EMAILS[0])
        self.cleartext.update(p.encode() for p in PASSWORDS)
        self._begin()
        self._collect()
        assert [type(e) for e in self.step_events] == [ev.AccountRegistered]
        self.log_in(right=True, trusted=False)  # on a laptop, say
        self.log_in(right=True, trusted=False)  # and on a phone
        if opening != "new":
            self.start_enrolment()
            self.confirm_enrolment((tf.TOTP, "pending", 0))
            assert self.model.on
        if opening.startswith("reset"):
            self.request_reset(STAFF[0])
        if opening == "reset approved":
            self.approve_reset("requester", known=True)  # four eyes: refused
            self.approve_reset(STAFF[1], known=True)

    @rule()
    def register_again(self) -> None:
        self._begin()
        outcome = self._do(
            account_uc.register_account(
                self.deps,
                self._ctx(),
                username=self.username,
                email=EMAILS[1],
                password=PASSWORDS[1],
            )
        )
        self._refused_as(outcome, UsernameTaken)

    @rule(right=st.booleans(), trusted=st.booleans())
    def log_in(self, right: bool, trusted: bool) -> None:
        """``login``: the password (throttled per device bucket), then tokens or a challenge."""
        self._begin()
        m, now = self.model, self.now
        device = self.device_token if trusted else None
        outcome = self._do(
            login_uc.login(
                self.deps,
                self._ctx(),
                username=self.username,
                password=m.password if right else WRONG_PASSWORD,
                device_token=device,
            )
        )
        trusted = device is not None
        retry = m.retry_at(trusted, now)
        if retry is not None:
            return self._throttled(outcome, retry)
        if not right:
            m.wrong_password(trusted, now)
            assert isinstance(outcome, InvalidCredentials), outcome
            assert [type(e) for e in self.step_events] == [ev.LoginFailed]
            return None
        if m.on:
            assert isinstance(outcome, MfaChallenge), f"{outcome!r} where an OTP is due"
            claims = self.deps.verifier.verify_mfa(outcome.mfa_token, now=now)
            m.right_password()
            self.challenges.append((outcome.mfa_token, claims.jti))
            m.challenges[claims.jti] = (now, now + CHALLENGE_TTL)
            return None
        self._started(outcome, ("pwd",), None)
        return None

    @rule(trusted=st.booleans(), spec=PROOFS)
    def log_in_both_steps(self, trusted: bool, spec: OtpSpec) -> None:
        """The whole login: the password, then (when 2FA is on) a second factor at once."""
        self.log_in(right=True, trusted=trusted)
        if self.model.on and self.challenges:
            self.log_in_second_step(pick=0, spec=spec)

    @rule(spec=PROOFS, rounds=st.integers(1, 3), wait=st.booleans(), late=st.booleans())
    def mistype_until_locked(self, spec: OtpSpec, rounds: int, wait: bool, late: bool) -> None:
        """Someone with the password mistypes the newest login's code (opening one if none
        is open) until the second factor locks; then perhaps waits for the lock's end and
        tries that login again, which the lockout killed (its end must not revive it);
        and again, for locks in a row."""
        m = self.model
        for round_ in range(rounds):
            if not m.on:
                return
            live = self.challenges and m.live_challenge(self.challenges[-1][1], self.now)
            if round_ > 0 or not live:  # after a lock, a new login: the old one is dead
                self.log_in(right=True, trusted=False)
            for _ in range(self.policy.max_failures):
                cid = self.challenges[-1][1] if self.challenges else ""
                if m.locked(self.now) or m.live_challenge(cid, self.now) is None:
                    break
                self.log_in_second_step(pick=0, spec=(tf.TOTP, "stranger", 0))
            if not wait or m.locked_until is None or m.locked_until <= self.now:
                return
            self.now = m.locked_until + timedelta(seconds=late)
            self.log_in_second_step(pick=0, spec=spec)

    @rule(pick=PICK, spec=PROOFS)
    def log_in_second_step(self, pick: int, spec: OtpSpec) -> None:
        """``login_mfa``: an open challenge, then the second factor."""
        self._begin()
        m, now = self.model, self.now
        token, cid = (
            self.challenges[-1 - pick % len(self.challenges)]
            if self.challenges
            else ("not.a.token", "c0")
        )
        proof = self._typed(spec)
        outcome = self._do(login_uc.login_mfa(self.deps, self._ctx(), mfa_token=token, proof=proof))
        times = m.live_challenge(cid, now)
        # A lockout that began after this login's password step killed it, even once over.
        killed = m.last_lock_at is not None and times and m.last_lock_at >= times[0]
        if times is None or not m.on or (killed and not m.locked(now)):
            return self._refused_as(outcome, MfaTokenInvalid)
        if self._second_factor(proof, outcome, TokenSet):
            amr = ("pwd", "otp" if proof.otp is not None else "recovery_code", "mfa")
            self._started(outcome, amr, cid)
        return None

    def _proven(self, pick: int, right: bool, spec: OtpSpec | None, outcome: object) -> bool:
        """The model's answer to ``_prove``: the session, the password, then the second
        factor when it is on; True when all passed (then the change goes ahead)."""
        m, now = self.model, self.now
        if m.live_session(self._session(pick), now) is None:
            self._refused_as(outcome, SessionEnded)
            return False
        retry = m.retry_at(True, now)
        if retry is not None:
            self._throttled(outcome, retry)
            return False
        if not right:
            m.wrong_password(True, now)
            assert isinstance(outcome, WrongPassword), outcome
            assert [type(e) for e in self.step_events] == [ev.LoginFailed]
            return False
        if not m.on:
            return True
        if spec is None:
            self._refused_as(outcome, SecondFactorRequired)
            return False
        assert self._pending_proof is not None
        return self._second_factor(self._pending_proof, outcome, object)

    _pending_proof: Proof | None = None

    def _proof_for(self, spec: OtpSpec | None) -> Proof | None:
        self._pending_proof = None if spec is None else self._typed(spec)
        return self._pending_proof

    @rule(pick=PICK, right=RIGHT, spec=st.none() | PROOFS, new=st.sampled_from(PASSWORDS))
    def change_password(self, pick: int, right: bool, spec: OtpSpec | None, new: str) -> None:
        self._begin()
        sid = self._session(pick)
        outcome = self._do(
            account_uc.change_password(
                self.deps,
                self._ctx(),
                self._claims(sid),
                current_password=self.model.password if right else WRONG_PASSWORD,
                new_password=new,
                proof=self._proof_for(spec),
            )
        )
        if self._proven(pick, right, spec, outcome):
            assert outcome is None, outcome
            self.model.password = new
            self.model.sessions = {sid: self.model.sessions[sid]}

    @rule(pick=PICK, right=RIGHT, spec=st.none() | PROOFS, new=st.sampled_from(EMAILS))
    def change_email(self, pick: int, right: bool, spec: OtpSpec | None, new: str) -> None:
        self._begin()
        outcome = self._do(
            account_uc.change_email(
                self.deps,
                self._ctx(),
                self._claims(self._session(pick)),
                current_password=self.model.password if right else WRONG_PASSWORD,
                email=new,
                proof=self._proof_for(spec),
            )
        )
        if self._proven(pick, right, spec, outcome):
            assert outcome is None, outcome
            changed = [e for e in self.step_events if isinstance(e, ev.EmailChanged)]
            assert (changed == []) == (new == self.model.email)
            self.model.email = new

    @rule(pick=PICK, right=RIGHT, spec=st.none() | PROOFS)
    def reauthenticate(self, pick: int, right: bool, spec: OtpSpec | None) -> None:
        self._begin()
        sid = self._session(pick)
        outcome = self._do(
            account_uc.reauthenticate(
                self.deps,
                self._ctx(),
                self._claims(sid),
                password=self.model.password if right else WRONG_PASSWORD,
                proof=self._proof_for(spec),
            )
        )
        on = self.model.on
        if self._proven(pick, right, spec, outcome):
            assert isinstance(outcome, TokenSet), outcome
            proof = self._pending_proof
            amr: tuple[str, ...] = ("pwd",)
            if on and proof is not None:
                amr = ("pwd", "otp" if proof.otp is not None else "recovery_code", "mfa")
            claims = self.deps.verifier.verify_access(outcome.access_token, now=self.now)
            assert (claims.sid, claims.amr, claims.acr) == (sid, amr, "aal2" if on else "aal1")

    @rule(pick=PICK, which=st.sampled_from(["current", "spent", "forged", "future"]), back=PICK)
    def refresh(self, pick: int, which: str, back: int) -> None:
        """``refresh``: rotate, or revoke the session on a spent token."""
        self._begin()
        m, now = self.model, self.now
        sid = self._session(pick)
        known = self.tokens.get(sid, [f"rt1.{self.account_id}.{sid}.0.forged"])
        current = len(known) - 1
        if which == "current":
            generation, token = current, known[current]
        elif which == "spent":
            generation = max(0, current - 1 - back % max(current, 1))
            token = known[generation]
        elif which == "forged":
            generation = max(0, current - back % (current + 1))
            token = f"rt1.{self.account_id}.{sid}.{generation}.forged"
        else:
            generation = current + 1
            token = f"rt1.{self.account_id}.{sid}.{generation}.forged"
        outcome = self._do(sessions_uc.refresh(self.deps, self._ctx(), refresh_token=token))
        session = m.live_session(sid, now)
        if session is None:
            return self._refused_as(outcome, RefreshTokenInvalid)
        current = len(session.tokens) - 1
        genuine = generation <= current and token == session.tokens[generation]
        if genuine and generation == current:
            assert isinstance(outcome, TokenSet), outcome
            session.tokens.append(outcome.refresh_token)
            self.tokens[sid].append(outcome.refresh_token)
            self.cleartext.add(outcome.refresh_token.encode())
        elif genuine:
            assert isinstance(outcome, RefreshTokenReused), outcome
            assert [e.type for e in self.step_events] == ["session.revoked"]
            del m.sessions[sid]
        else:
            self._refused_as(outcome, RefreshTokenInvalid)
        return None

    @rule(pick=PICK)
    def log_out(self, pick: int) -> None:
        self._begin()
        sid = self._session(pick)
        outcome = self._do(sessions_uc.logout(self.deps, self._ctx(), self._claims(sid)))
        assert outcome is None, outcome
        if self.model.sessions.pop(sid, None) is None:
            self._nothing_recorded()

    # Two-factor commands -------------------------------------------------------------

    @rule()
    def start_enrolment(self) -> None:
        """``enrolment.start``: a new pending secret (the phone scans it)."""
        self._begin()
        claims = self._claims(self._newest_session())
        outcome = self._do(enrolment_uc.start(self.deps, self._ctx(), claims))
        if isinstance(outcome, enrolment_uc.Enrolment):
            self.cleartext.add(outcome.secret.encode())
            assert self.model.start_enrolment(outcome.secret, self.now) is None
            assert outcome.expires_at == self.now + self.policy.enrolment_ttl
            assert f"secret={outcome.secret}" in outcome.otpauth_uri
            return None
        expected = self.model.start_enrolment(totp_secret(-2), self.now)
        assert expected is not None, f"{outcome!r}: the model allows an enrolment"
        return self._refused_as(outcome, expected)

    @rule(spec=CONFIRM_PROOFS)
    def confirm_enrolment(self, spec: OtpSpec) -> None:
        """``enrolment.confirm``: the first code turns 2FA on and shows the codes, once."""
        self._begin()
        proof = self._typed(spec)
        session = self._newest_session()
        outcome = self._do(
            enrolment_uc.confirm(self.deps, self._ctx(), self._claims(session), self._text(proof))
        )
        expected = self.model.confirm(self._text(proof), [], self.now, session)
        if not isinstance(expected, Expect):
            return self._refused_as(outcome, expected)
        if not expected.accepted:
            assert isinstance(outcome, SecondFactorRefused), outcome
            assert expect_of(outcome.verdict) == expected
            return None
        assert isinstance(outcome, list), outcome
        self.model.codes = self._shown(outcome)
        return None

    def _shown(self, codes: list[str]) -> list[str]:
        """Recovery codes shown once: six distinct ones, never to be found in an event."""
        assert len(codes) == len(set(codes)) == 6
        self.cleartext.update(c.encode() for c in codes)
        self.cleartext.update(c.replace("-", "").encode() for c in codes)
        return codes

    @rule(spec=PROOFS)
    def regenerate_codes(self, spec: OtpSpec) -> None:
        """``enrolment.regenerate_codes``: a second factor, then a new set of codes."""
        self._begin()
        proof = self._typed(spec)
        claims = self._claims(self._newest_session())
        outcome = self._do(enrolment_uc.regenerate_codes(self.deps, self._ctx(), claims, proof))
        if self._second_factor(proof, outcome, list):
            assert isinstance(outcome, list)
            self.model.regenerate(self._shown(outcome))

    @rule(spec=PROOFS)
    def disable(self, spec: OtpSpec) -> None:
        """``enrolment.disable``: the second factor one last time."""
        self._begin()
        proof = self._typed(spec)
        claims = self._claims(self._newest_session())
        outcome = self._do(enrolment_uc.disable(self.deps, self._ctx(), claims, proof))
        if self._second_factor(proof, outcome, type(None)):
            self.model.disable()

    @rule(by=st.sampled_from(STAFF))
    def request_reset(self, by: str) -> None:
        self._begin()
        claims = self._staff(by)
        outcome = self._do(
            reset_uc.request_reset(
                self.deps, self._ctx(), claims, self.account_id, "T-1", "lost phone and codes"
            )
        )
        request_id = outcome if isinstance(outcome, str) else "r0"
        expected = self.model.request_reset(request_id, claims.sub)
        if expected is not None:
            return self._refused_as(outcome, expected)
        assert isinstance(outcome, str), outcome
        return None

    @rule(by=st.sampled_from([*STAFF, "requester", "requester"]), known=KNOWN)
    def approve_reset(self, by: str, known: bool) -> None:
        """The second support person approves; or the first, or the owner, tries to."""
        self._begin()
        reset = self.model.reset
        request_id = reset.request_id if known and reset else "r0"
        if by == "requester":
            by = reset.requested_by if reset else STAFF[0]
        claims = self._staff(by)
        expected = self.model.approve_reset(request_id, claims.sub, self.now)
        if expected is None:  # known before the events are checked: with no cooling-off
            self.approved_at[request_id] = self.now  # the reset completes in this step
        outcome = self._do(
            reset_uc.approve_reset(self.deps, self._ctx(), claims, self.account_id, request_id)
        )
        if expected is not None:
            return self._refused_as(outcome, expected)
        assert outcome == self.now + self.policy.reset_cooling_off, outcome
        return None

    @rule(by=st.sampled_from(STAFF), known=KNOWN)
    def cancel_reset(self, by: str, known: bool) -> None:
        self._begin()
        reset = self.model.reset
        request_id = reset.request_id if known and reset else "r0"
        outcome = self._do(
            reset_uc.cancel_reset(
                self.deps,
                self._ctx(),
                self._staff(by),
                self.account_id,
                request_id,
                "the user called",
            )
        )
        expected = self.model.cancel_reset(request_id)
        if expected is not None:
            return self._refused_as(outcome, expected)
        assert outcome is None, outcome
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
                assert event.requested_by != self.account_id, "a reset requested for oneself"
                assert before.enabled and not due and reset is None
            case ev.ResetApproved():
                assert reset is not None and reset.request_id == event.request_id
                assert reset.approved_by is None
                assert event.approved_by not in (self.account_id, reset.requested_by), "four eyes"
                assert event.effective_at == now + policy.reset_cooling_off
            case ev.ResetCancelled():
                assert reset is not None and reset.request_id == event.request_id and not due
                self.cancelled.add(event.request_id)
            case _:
                raise AssertionError(f"{event.type} on the two-factor stream")

    def _switched_on(self) -> bool:
        """Read off the stream alone: was the last on/off switch an enable?"""
        switches = (ev.TwoFactorEnabled, ev.TwoFactorDisabled, ev.ResetCompleted)
        for event in reversed(self.logs):
            if isinstance(event, switches):
                return isinstance(event, ev.TwoFactorEnabled)
        return False

    def _locks_in_a_row(self) -> int:
        """Locks since the last success, enable, disable or reset, read off the stream."""
        count = 0
        for event in reversed(self.logs):
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

    def _check_secrets(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        stored = REGISTRY.encode(event)
        assert not [s for s in self.cleartext if s in stored], f"{event.type} holds a secret"
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
    def the_store_matches_the_model(self) -> None:
        """What the repository loads (newest snapshot, then the events after it) is the
        fold of every stored event, and matches the model."""
        versions = (self.versions["twofactor"], self.versions["account"])
        if self.loaded is None or self.loaded[0] != versions:  # else the store is as it was
            twofactor, account = self._streams()
            loaded_tf = self.world.run(self.deps.twofactors.load(twofactor))
            loaded_acct = self.world.run(self.deps.accounts.load(account))
            assert (loaded_tf.version, loaded_acct.version) == versions
            assert loaded_tf.state == self.twofactor, "the repository loads another 2FA state"
            assert loaded_acct.state == self.account, "the repository loads another account"
            self.loaded = (versions, loaded_tf.state, loaded_acct.state)
        _, second, account_state = self.loaded
        self._second_factor_matches_the_model(second)
        self._account_matches_the_model(account_state)
        tf_fold, acct_fold = TwoFactorFold(), AccountFold()
        now_tf = orjson.loads(orjson.dumps(tf_fold.to_snapshot(self.twofactor)))
        assert tf_fold.from_snapshot(now_tf) == self.twofactor
        now_acct = orjson.loads(orjson.dumps(acct_fold.to_snapshot(self.account)))
        assert acct_fold.from_snapshot(now_acct) == self.account

    def _second_factor_matches_the_model(self, loaded: tf.TwoFactorState) -> None:
        m, now = self.model, self.now
        state = tf.fold(loaded, tf.due_events(loaded, now))
        assert tf.requires_second_factor(loaded, now) == m.on == state.enabled
        for session in [*self.session_ids, "a session never seen"]:
            allowed = tf.password_only_allowed(state, session)
            assert allowed == m.password_only_allowed(session), "aal1 tokens differ"
        aad = f"twofactor-{self.account_id}".encode()
        secret = self.deps.keyring.decrypt(state.secret, aad).decode() if state.secret else None
        assert secret == m.secret
        assert len(state.code_hashes) == len(m.codes), "recovery codes differ from the model's"
        for code, stored in zip(m.codes, state.code_hashes, strict=True):
            if code in m.spent:
                assert stored is None, "a spent recovery code still works"
            else:
                assert stored is not None and HASHER.verify(stored, code), "a code lost"
        shown = tf.status(loaded, now)
        assert shown.enabled == m.on
        assert shown.recovery_codes_left == len([c for c in m.codes if c not in m.spent])
        try:
            pending = self.deps.keyring.decrypt(tf.secret_to_confirm(state, now), aad).decode()
        except DomainError:
            pending = None
        assert pending == (m.pending[0] if m.pending and m.pending[1] > now else None)
        assert tf.is_locked(state, now) == m.locked(now)
        if m.locked(now):
            assert state.locked_until == m.locked_until
        assert (state.failures, state.lock_count) == (m.fails, m.locks)
        if m.secret is not None:
            assert state.last_time_step == m.highest_step[m.secret], "replays are judged wrong"
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

    def _account_matches_the_model(self, state: acct.AccountState) -> None:
        m, now = self.model, self.now
        assert state.registered and state.email == m.email
        if self.verified != (state.password_hash, m.password):  # argon2: once per change
            assert self.deps.passwords.verify(state.password_hash, m.password)
            self.verified = (state.password_hash, m.password)
        for trusted in (False, True):
            retry = acct.retry_password_at(state, trusted, now, self.passwords)
            assert retry == m.retry_at(trusted, now), "the password throttle differs"
        sessions = {sid: (s.expires_at, s.generation) for sid, s in state.sessions.items()}
        assert sessions == {sid: (s.expires_at, len(s.tokens) - 1) for sid, s in m.sessions.items()}
        live = {c.challenge_id: (c.issued_at, c.expires_at) for c in state.challenges.values()}
        assert {k: t for k, t in live.items() if t[1] > now} == {
            k: t for k, t in m.challenges.items() if t[1] > now
        }


@pytest.mark.timeout(900)
def test_random_command_sequences_never_break_an_invariant(world: World) -> None:
    if MUTANT_ROOT:  # the harness's copy of the tree is what runs, not the checkout
        for package in (shared, services, tf, account_uc):
            if not Path(str(package.__file__)).is_relative_to(MUTANT_ROOT):
                pytest.exit(f"{package.__file__} is not in {MUTANT_ROOT}", returncode=3)
    SEEN.clear()
    FlowMachine.world = world
    started = time.monotonic()
    run_state_machine_as_test(FlowMachine, settings=SETTINGS)
    REPORT.other["property seconds"] += round(time.monotonic() - started)
    if MUTANT_ROOT:  # the harness asks only whether some example fails, on fewer examples
        return
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
