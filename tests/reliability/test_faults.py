"""Faults under a steady load: relays, broker, an audit instance and PostgreSQL, killed.

One stack (two replicas of each service, two relays) carries a bounded load of
registrations, logins, enrolments and recovery-code logins on both replicas, while the
test kills the active relay with SIGKILL three times, kills the broker and starts it empty
(memory storage), kills an audit instance in the middle of an ingest transaction, and
restarts PostgreSQL the way a crash does. During all that no request may hang or get a
5xx other than 503 with ``Retry-After``, and 503 only while PostgreSQL is away (and then
there must be some). Afterwards, against truth the relay never made (``tests/support/
truth.py``: plain SQL over ``events`` by the contract's type names, counters in the
database): every 2xx answer stored exactly the events its operation writes, once each;
every stored event of a published type is on Kafka (redeliveries reported), took effect
once in every consumer group, and is in the audit log once, with no insert of it refused
as a duplicate; the chains verify, every group has read the topic to its end, and no
secret the load used shows up anywhere. The report has one row per fault phase.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.eventstore.registry import REGISTRY
from tests.reliability.report import REPORT
from tests.reliability.stack import Stack
from tests.reliability.sweep import Recorder, assert_no_secrets
from tests.support import truth
from tests.support.apps import is_problem
from tests.support.totp import otp
from tests.support.truth import Answer, Ledger, Written

pytestmark = pytest.mark.reliability

T = TypeVar("T")

USERS = 6  # concurrent virtual users; two cores also carry ten processes and two servers
REQUEST_TIMEOUT = 10.0  # an answer later than this counts as a hang
# uvicorn closes a connection idle for 5 s; a client that keeps it as long may send a
# request on it just as it closes (a ReadError with no answer). Like any client behind a
# keep-alive timeout, this one lets go of idle connections well before.
CLIENT_LIMITS = httpx.Limits(keepalive_expiry=1.0)
TOPIC = "twofa.events.v1"
GROUPS = ("twofa.audit", "twofa.auth-sessions", "twofa.enrolment-labels")
RELAY_KILLS = 3
PERIOD = 30  # seconds per TOTP time-step
# What the load was doing when a request went out: its events count in that phase.
PHASES = (
    "setup",
    "steady load",
    "relay kills",
    "broker restart",
    "audit kill",
    "postgres restart",
    "after the faults",
)
OUTSIDE = "outside the load"  # the operators' CLI, say


@dataclass
class Load:
    """Virtual users on both replicas of each service, recording every answer."""

    stack: Stack
    recorder: Recorder
    http: httpx.AsyncClient
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    answered: list[Answer] = field(default_factory=list)
    phases: dict[str, str] = field(default_factory=dict)  # request id -> phase it was sent in
    unavailable: list[float] = field(default_factory=list)  # when 503 + Retry-After came
    wrong: list[str] = field(default_factory=list)  # hangs, 500s, answers no flow expects
    statuses: Counter[int] = field(default_factory=Counter)
    down: set[str] = field(default_factory=set)  # replicas stopped on purpose
    phase: str = "setup"  # the fault under way, for the messages and the report
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def pick(self, service: str) -> str:
        urls = self.stack.urls(service)
        return urls[next(self._turn) % len(urls)]

    async def call(
        self,
        method: str,
        service: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        token: str | None = None,
        carries_secrets: bool = False,
    ) -> httpx.Response | None:
        base = self.pick(service)
        headers = {"X-Request-ID": str(uuid.uuid4())}
        self.phases[headers["X-Request-ID"]] = self.phase
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = await self.http.request(method, base + path, json=body, headers=headers)
        except httpx.TimeoutException:
            self.wrong.append(f"{self.phase}: {method} {path}: no answer in {REQUEST_TIMEOUT} s")
            return None
        except httpx.TransportError as exc:
            if base not in self.down:
                self.wrong.append(f"{self.phase}: {method} {path} on {base}: {exc!r}")
            return None
        self.recorder.response(response, carries_secrets=carries_secrets)
        self.statuses[response.status_code] += 1
        if response.status_code == 503:
            if response.headers.get("retry-after") and is_problem(response):
                self.unavailable.append(time.monotonic())
            else:
                self.wrong.append(f"{self.phase}: {method} {path}: 503 without Retry-After")
        elif response.status_code >= 500:
            self.wrong.append(f"{self.phase}: {method} {path}: {response.text[:300]}")
        return response

    def ok(self, response: httpx.Response | None, status: int, what: str) -> bool:
        """Whether the flow may go on; an answer other than ``status`` or 503 is wrong."""
        if response is None:
            return False
        if response.status_code not in (status, 503):
            self.wrong.append(f"{self.phase}: {what}: {response.text[:300]}")
        return response.status_code == status

    def promise(self, response: httpx.Response, what: str, *types: str) -> None:
        request_id = response.request.headers["X-Request-ID"]
        self.answered.append(Answer(request_id, what, frozenset(types)))

    # -- what one user does, again and again ---------------------------------------------

    async def user(self) -> None:
        while not self.stop.is_set():
            await self.one_account()

    async def one_account(self) -> None:
        username = f"load-{uuid.uuid4().hex[:12]}"
        password = self.recorder.secret("password", f"pw-{secrets.token_urlsafe(12)}")
        registration = {
            "username": username,
            "email": f"{username}@example.org",
            "password": password,
        }
        answer = await self.call("POST", "auth", "/v1/accounts", body=registration)
        if not self.ok(answer, 201, "register"):
            return
        assert answer is not None
        self.promise(answer, "register", "account.registered")
        credentials = {"username": username, "password": password}
        answer = await self.call("POST", "auth", "/v1/login", body=credentials)
        if not self.ok(answer, 200, "login"):
            return
        assert answer is not None
        self.promise(answer, "login", "login.succeeded", "session.started")
        token = answer.json()["access_token"]
        # A second session, which turning 2FA on must revoke (once: an effect to count).
        answer = await self.call("POST", "auth", "/v1/login", body=credentials)
        if not self.ok(answer, 200, "second login"):
            return
        assert answer is not None
        self.promise(answer, "second login", "login.succeeded", "session.started")
        answer = await self.call(
            "POST", "enrolment", "/v1/2fa/enrolment", token=token, carries_secrets=True
        )
        if not self.ok(answer, 201, "start enrolment"):
            return
        assert answer is not None
        self.promise(answer, "start enrolment", "twofa.enrolment_started")
        secret = self.recorder.secret("TOTP secret", answer.json()["secret"])
        step = int(time.time()) // PERIOD
        code = self.recorder.secret("OTP", otp(secret, _at(step)), code=True)
        answer = await self.call(
            "POST",
            "enrolment",
            "/v1/2fa/enrolment/confirm",
            body={"otp": code},
            token=token,
            carries_secrets=True,
        )
        if not self.ok(answer, 200, "confirm enrolment"):
            return
        assert answer is not None
        # The auth consumer revokes the second session under this request's correlation id.
        self.promise(answer, "confirm enrolment", "twofa.enabled", "session.revoked")
        codes = [self.recorder.secret("recovery code", c) for c in answer.json()["recovery_codes"]]
        for code in codes[:3]:
            if self.stop.is_set() or not await self.login_mfa(credentials, recovery_code=code):
                return
        # The confirmation spent this time-step: the next one's code is still in the window.
        later = max(step + 1, int(time.time()) // PERIOD)
        await self.login_mfa(
            credentials, otp=self.recorder.secret("OTP", otp(secret, _at(later)), code=True)
        )

    async def login_mfa(self, credentials: dict[str, str], **second: str) -> bool:
        answer = await self.call("POST", "auth", "/v1/login", body=credentials)
        if not self.ok(answer, 200, "login (2FA on)"):
            return False
        assert answer is not None
        challenge = answer.json()
        if challenge.get("mfa_required") is not True:
            self.wrong.append("login with 2FA on gave tokens without a second factor")
            return False
        self.promise(answer, "login (password step)", "login.mfa_required")
        answer = await self.call(
            "POST", "auth", "/v1/login/mfa", body={"mfa_token": challenge["mfa_token"], **second}
        )
        method = "recovery code" if "recovery_code" in second else "OTP"
        if not self.ok(answer, 200, f"login with {method}"):
            return False
        assert answer is not None
        used = "twofa.recovery_code_used" if "recovery_code" in second else "twofa.otp_verified"
        self.promise(answer, f"login with {method}", used, "login.succeeded", "session.started")
        return True

    async def auditor(self, token: str) -> None:
        """A reviewer reading the audit log on both replicas all along."""
        while not self.stop.is_set():
            answer = await self.call("GET", "audit", "/v1/audit/events?limit=5", token=token)
            self.ok(answer, 200, "read the audit log")
            await asyncio.sleep(0.3)


def _at(step: int) -> datetime:
    return datetime.fromtimestamp(step * PERIOD, UTC)


async def until(check: Callable[[], Awaitable[T | None]], within: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


async def settle(check: Callable[[], Awaitable[bool]], within: float) -> None:
    """Poll ``check`` until it holds or ``within`` seconds passed; the caller measures."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)


# -- the stack, a reviewer with 2FA, and the faults ------------------------------------------


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    # Not under pytest's numbered temp dirs: another session may prune them meanwhile.
    root = Path(tempfile.mkdtemp(prefix="twofa-faults-"))
    running = Stack(root)
    try:
        yield await asyncio.to_thread(running.start)
    finally:
        await asyncio.to_thread(running.stop)
        if not os.environ.get("TWOFA_KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)


async def security_token(stack: Stack, load: Load) -> str:
    """A ``security`` account made with the operators' CLI, given 2FA, logged in with an OTP."""
    username = f"reviewer-{uuid.uuid4().hex[:8]}"
    password = load.recorder.secret("password", f"pw-{secrets.token_urlsafe(12)}")
    created = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "accounts", "create", "--username", username,
         "--email", f"{username}@example.org", "--password-stdin", "--role", "security"],
        input=f"{password}\n".encode(),
        env=stack.process_env("auth-cli"),
        capture_output=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr.decode()
    credentials = {"username": username, "password": password}
    login = await load.call("POST", "auth", "/v1/login", body=credentials)
    assert login is not None and login.status_code == 200, login and login.text
    token = login.json()["access_token"]
    started = await load.call(
        "POST", "enrolment", "/v1/2fa/enrolment", token=token, carries_secrets=True
    )
    assert started is not None and started.status_code == 201, started and started.text
    secret = load.recorder.secret("TOTP secret", started.json()["secret"])
    step = int(time.time()) // PERIOD
    code = load.recorder.secret("OTP", otp(secret, _at(step)), code=True)
    confirmed = await load.call(
        "POST",
        "enrolment",
        "/v1/2fa/enrolment/confirm",
        body={"otp": code},
        token=token,
        carries_secrets=True,
    )
    assert confirmed is not None and confirmed.status_code == 200, confirmed and confirmed.text
    for recovery in confirmed.json()["recovery_codes"]:
        load.recorder.secret("recovery code", recovery)
    challenge = await load.call("POST", "auth", "/v1/login", body=credentials)
    assert challenge is not None and challenge.status_code == 200
    next_code = load.recorder.secret("OTP", otp(secret, _at(step + 1)), code=True)
    mfa = {"mfa_token": challenge.json()["mfa_token"], "otp": next_code}
    tokens = await load.call("POST", "auth", "/v1/login/mfa", body=mfa)
    assert tokens is not None and tokens.status_code == 200, tokens and tokens.text
    assert tokens.json()["acr"] == "aal2"
    return str(tokens.json()["access_token"])


async def sql(stack: Stack, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.admin_dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows
    finally:
        await conn.close()


async def kill_active_relays(stack: Stack) -> None:
    """SIGKILL whichever relay holds the lock; it comes back as the standby, and the
    other one, standing by, takes over."""
    for _ in range(RELAY_KILLS):
        active = await until(lambda: stack.active_relays(), 20, "a relay holds the lock")
        victim = active[0]
        await asyncio.to_thread(stack.kill, victim)
        REPORT.fault("relay SIGKILL while active")

        async def taken_over(victim: str = victim) -> bool:
            return (await stack.active_relays()) not in ([], [victim])

        await until(taken_over, 20, f"the standby took over from {victim}")
        stack.start_process(victim)

        async def standing_by(victim: str = victim) -> bool:
            # Its store pool connects once the process is up, right before it relays.
            rows = await sql(
                stack, "SELECT 1 FROM pg_stat_activity WHERE application_name = $1", victim
            )
            return bool(rows)

        await until(standing_by, 30, f"{victim} back, standing by")
        await asyncio.sleep(0.5)  # publish a while under the new one


async def restart_broker(stack: Stack) -> None:
    await asyncio.to_thread(stack.restart_broker, 2.0)
    REPORT.fault("broker SIGKILL, restarted empty 2 s later")


async def kill_audit_mid_batch(stack: Stack, load: Load) -> None:
    """SIGKILL ``audit-1`` while it has an ingest transaction open, then start it again."""
    victim = "audit-1"

    async def ingesting() -> bool:
        rows = await sql(
            stack,
            "SELECT 1 FROM pg_stat_activity WHERE application_name = $1"
            " AND backend_xid IS NOT NULL",  # a transaction that wrote: an ingest, not a read
            victim,
        )
        return bool(rows)

    await until(ingesting, 30, f"{victim} ingesting")
    load.down.add(stack.url(victim))
    await asyncio.to_thread(stack.kill, victim)
    REPORT.fault("audit instance SIGKILL mid-batch")
    stack.start_process(victim)
    await asyncio.to_thread(stack.wait_ready, victim)
    load.down.discard(stack.url(victim))


async def restart_postgres(stack: Stack) -> tuple[float, float]:
    began = time.monotonic()
    await asyncio.to_thread(stack.restart_postgres, "immediate")
    REPORT.fault("PostgreSQL restart, immediate (as after a crash)")
    return began, time.monotonic()


# -- what must hold afterwards -------------------------------------------------------------


@dataclass
class Topic:
    """What the topic holds, read record by record."""

    ends: dict[TopicPartition, int]  # one past each partition's last record
    copies: Counter[str]  # records per event id

    @classmethod
    async def read(cls, bootstrap: str) -> Topic:
        # Read to the last record: Tansu reports a partition's end as one past the start
        # of its last record batch, which would hide a lag inside that batch.
        reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
        )
        await reader.start()
        try:
            await reader._client.force_metadata_update()
            partitions = [
                TopicPartition(TOPIC, p) for p in reader.partitions_for_topic(TOPIC) or ()
            ]
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)
            topic = cls(dict.fromkeys(partitions, 0), Counter())
            quiet = 0
            while quiet < 3:  # the load has stopped: three empty fetches in a row is the end
                batches = await reader.getmany(timeout_ms=200)
                quiet = 0 if batches else quiet + 1
                for tp, records in batches.items():
                    topic.ends[tp] = records[-1].offset + 1
                    topic.copies.update(dict(r.headers)["ce_id"].decode() for r in records)
        finally:
            await reader.stop()
        return topic

    async def lag(self, bootstrap: str, group: str) -> int:
        """Records between ``group``'s committed offsets and the ends."""
        # A member that joins nothing: it only reads the group's committed offsets.
        member = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await member.start()
        try:
            return sum([end - (await member.committed(tp) or 0) for tp, end in self.ends.items()])
        finally:
            await member.stop()


@dataclass
class Seen:
    """What the topic, the consumer groups, the store and the audit log hold now."""

    topic: Topic
    lags: dict[str, int]
    written: list[Written]
    audited: Counter[str]

    @classmethod
    async def read(cls, stack: Stack) -> Seen:
        bootstrap = stack.broker.bootstrap_servers
        topic = await Topic.read(bootstrap)
        lags = {group: await topic.lag(bootstrap, group) for group in GROUPS}
        conn = await asyncpg.connect(stack.admin_dsn)
        try:  # after the lags: an effect a consumer wrote before committing is in here
            written = await truth.written_events(conn, REGISTRY.types())
            audited = await truth.audit_entries(conn)
        finally:
            await conn.close()
        return cls(topic, lags, written, audited)

    @property
    def settled(self) -> bool:
        return not any(self.lags.values()) and all(self.audited[e.event_id] for e in self.written)

    async def ledger(self, stack: Stack) -> Ledger:
        conn = await asyncpg.connect(stack.admin_dsn)
        try:
            return Ledger(
                consumers=GROUPS,
                kafka=self.topic.copies,
                deliveries=await truth.consumer_deliveries(conn),
                processed=await truth.processed_rows(conn),
                audited=self.audited,
                refused=await truth.refused_audit_inserts(conn),
            )
        finally:
            await conn.close()


def report_per_phase(load: Load, ledger: Ledger, written: list[Written]) -> truth.Tally:
    """One row per fault phase (events by the phase their request was sent in), and the
    total; each event counted once. Returns the total."""
    _, surplus, missing = truth.check_answers(load.answered, written)
    surplus |= truth.revoked_twice(written)
    groups = truth.group_by(written, load.phases, OUTSIDE)
    table = REPORT.table(
        "Events per fault phase: written (SQL on events, by the phase of their request),"
        " Kafka records, processed_events rows of the three groups, audit entries",
        "phase",
        *truth.TALLY_HEADER,
    )
    for phase in [*PHASES, OUTSIDE]:
        answers = [a for a in load.answered if load.phases[a.correlation_id] == phase]
        _, _, not_stored = truth.check_answers(answers, written)
        if phase in groups or not_stored:
            table.add(phase, *ledger.tally(groups.get(phase, []), surplus, not_stored).row())
    total = ledger.tally(written, surplus, missing)
    table.add("all phases", *total.row())
    return total


async def verify_chains(load: Load, token: str, entries: int) -> None:
    for base in load.stack.urls("audit"):
        answer = await load.http.get(
            f"{base}/v1/audit/verify", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert report["ok"] is True, report
        assert report["entries"] == entries


# -- the test ---------------------------------------------------------------------------------


@pytest.mark.timeout(180)
async def test_faults_under_load_lose_no_event_and_answer_only_503_while_postgres_is_away(
    stack: Stack,
) -> None:
    recorder = Recorder()
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=CLIENT_LIMITS) as http:
        load = Load(stack, recorder, http)
        conn = await asyncpg.connect(stack.admin_dsn)
        try:
            await truth.install_counters(conn, stack.admin_dsn)
        finally:
            await conn.close()
        token = await security_token(stack, load)
        load.phase = "steady load"
        workers = [asyncio.create_task(load.user()) for _ in range(USERS)]
        workers.append(asyncio.create_task(load.auditor(token)))
        try:
            await asyncio.sleep(3)  # steady load first
            load.phase = "relay kills"
            await kill_active_relays(stack)
            load.phase = "broker restart"
            await restart_broker(stack)
            load.phase = "audit kill"
            await kill_audit_mid_batch(stack, load)  # it is catching up on the republished topic
            load.phase = "postgres restart"
            postgres_away = await restart_postgres(stack)
            load.phase = "after the faults"
            await asyncio.sleep(3)  # load on the recovered stack
        finally:
            load.stop.set()
            await asyncio.wait_for(asyncio.gather(*workers), REQUEST_TIMEOUT * 3)
        REPORT.requests += recorder.requests

        # During the outages: no hang, no 500, and 503 only while PostgreSQL was away.
        assert not load.wrong, "\n".join(load.wrong[:30])
        grace = 5.0  # pools notice a dead connection on its next use
        during = [t for t in load.unavailable if postgres_away[0] <= t <= postgres_away[1] + grace]
        assert during, "no 503 while PostgreSQL was restarting: the outage went unseen"
        assert len(during) == len(load.unavailable), "503 while PostgreSQL was up"
        REPORT.other["503 with Retry-After while PostgreSQL was away"] += len(during)
        assert sum(load.statuses[s] for s in load.statuses if 200 <= s < 300) > 100

        # Every process of both kinds still runs: two relays, two replicas of each service.
        assert all(p.alive for p in stack.processes.values()), [
            p.name for p in stack.processes.values() if not p.alive
        ]

        assert set(load.phases.values()) <= set(PHASES)

        # Everything settles: every group at the topic's end, every stored event audited.
        seen = await Seen.read(stack)

        async def settled() -> bool:
            nonlocal seen
            seen = await Seen.read(stack)
            return seen.settled

        await settle(settled, 60)
        ledger = await seen.ledger(stack)  # reported first: a failure below shows the figures
        total = report_per_phase(load, ledger, seen.written)
        REPORT.events_checked += total.written
        REPORT.lost += total.lost
        REPORT.duplicated += total.duplicated
        assert not any(seen.lags.values()), seen.lags

        # Each 2xx answer stored exactly the events its operation writes, once each.
        said, _, _ = truth.check_answers(load.answered, seen.written)
        assert not said, said[:20]
        twice = truth.revoked_twice(seen.written)
        assert not twice, f"sessions revoked more than once: {sorted(twice)[:20]}"
        # Each stored event: on Kafka, once in every group's effects and in the audit log.
        assert not truth.problems(ledger, seen.written), truth.problems(ledger, seen.written)
        assert (total.lost, total.duplicated) == (0, 0)
        await verify_chains(load, token, sum(seen.audited.values()))

    # Nothing secret anywhere: Kafka, the audit log, the logs, the answers.
    await assert_no_secrets(stack, recorder)
    REPORT.other["relay rewinds after the broker lost records"] += stack.log_text().count(
        "publishing every event again from the start"
    )
