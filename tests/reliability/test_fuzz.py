"""Schemathesis against each service's own OpenAPI: no 5xx, and every answer as documented.

Every operation of auth, enrolment and audit is fuzzed (examples, coverage and fuzzing
phases; a fixed seed, derandomized, a bounded number of examples) through the real app
in-process (schemathesis' ASGI transport runs the app's own lifespan) over real PostgreSQL
and Kafka. All of schemathesis' checks run on every answer (status code, content type,
headers and body as documented, no 5xx, ...), and one of ours: a request refused as bad
input or for its token leaves no event behind.

So that cases reach past the bearer check, three in four of those of an operation that
requires a bearer are sent as somebody, whether or not schemathesis generated an
Authorization header for them (it knows them as authenticated on purpose: see
``Somebody``): an account made for that case (plain, with 2FA on, or halfway through
enrolment), a support user or a security user. Each operation's answers are tallied by
status class into the report, and at least a quarter of the cases of each bearer
operation must get past the token check. Where a generated field has a real counterpart
(the password, an mfa or refresh token, the current OTP, a recovery code, an account or
reset request id), some cases carry the real value instead, so the code behind the
check runs too. Who picks which is a hash of the generated value: the same seed makes
the same run. The people are made by a second replica's ``AuthDeps`` in an event loop of
its own (the "backstage"). No relay runs during the fuzzing and the auth app runs
without its Kafka consumer (the only one that appends events), so nothing but the
requests writes events and the count is exact.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI
from schemathesis import BaseSchema as Schema
from schemathesis import Case
from schemathesis.core import NotSet
from schemathesis.errors import FailureGroup
from schemathesis.openapi.checks import RejectedPositiveData
from starlette.types import Receive, Scope, Send

from services.audit.adapters.log_store import encode_cursor
from services.audit.main import create_app as audit_app
from services.auth.main import build_deps
from services.auth.main import create_app as auth_app
from services.auth.usecases import account as accounts
from services.auth.usecases import login as logins
from services.auth.usecases.deps import AuthDeps
from services.auth.usecases.sessions import TokenSet
from services.enrolment.main import create_app as enrolment_app
from services.enrolment.usecases import enrolment, reset
from shared.app.context import Context
from shared.app.secondfactor import Proof
from shared.eventstore.store import EventStore
from shared.messaging.contract import PUBLIC_EVENTS
from shared.messaging.kafka import ensure_topics
from shared.messaging.relay import Relay, RelayOptions
from shared.messaging.signing import EventSigner
from shared.platform.config import Settings
from shared.platform.db import create_pool
from shared.security.tokens import Claims
from tests.reliability.report import REPORT
from tests.support import servers
from tests.support.apps import client_for
from tests.support.database import admin_sql
from tests.support.polling import eventually
from tests.support.seeding import enable_through_domain
from tests.support.settings import settings_for, with_kafka, without_broker
from tests.support.totp import otp

pytestmark = pytest.mark.reliability

T = TypeVar("T")
PASSWORD = "correct horse battery staple"
TICKET, REASON = "SUP-4711", "Lost phone and printed codes; identity checked by video call"
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20240611,
        "generation": {"max-examples": 30, "deterministic": True, "database": "none"},
        # Nothing learnt from answers (which carry fresh tokens and ids): same seed, same run.
        "phases": {
            "examples": {"extra-data-sources": {"responses": False}},
            "coverage": {"extra-data-sources": {"responses": False}},
            "fuzzing": {
                "extra-data-sources": {"responses": False},
                "error-feedback": {"enabled": False},
            },
        },
        # A live tail never ends: keep what arrives in a moment, then cut it.
        "operations": [
            {
                "include-path": "/v1/audit/events/stream",
                "request-timeout": 0.4,
                "max-stream-events": 1,
            }
        ],
    }
)
# Refusals that decide nothing, so may write nothing (a wrong password or code is counted).
INPUT_REFUSALS = {400, 403, 404, 405, 413, 415, 422}
# Rules of the API a JSON Schema cannot state: the password policy (not a breached one,
# not the username, 8-128 characters after NFKC), a cursor this API did not give out, a
# time window that ends before it starts. Schema-valid input may be refused with these.
RULES_BEYOND_THE_SCHEMA = {"weak_password", "invalid_cursor", "invalid_time_range"}
TOKEN_REFUSALS = {"missing_token", "invalid_token", "insufficient_user_authentication"}


# The people a case is sent as ------------------------------------------------------


@dataclass
class Person:
    account_id: str
    username: str
    access_token: str
    refresh_token: str = ""
    mfa_token: str = ""
    secret: str = ""  # TOTP, when 2FA is on or pending
    codes: list[str] = field(default_factory=list)
    request_id: str = ""  # a support reset open against this account

    def real_values(self) -> dict[str, str]:
        """What a generated field of the same name may be replaced with."""
        values = {
            "username": self.username,
            "password": PASSWORD,
            "current_password": PASSWORD,
            "mfa_token": self.mfa_token,
            "refresh_token": self.refresh_token,
            "otp": otp(self.secret, datetime.now(UTC)) if self.secret else "",
            "recovery_code": self.codes[0] if self.codes else "",
            "account_id": self.account_id,
            "request_id": self.request_id,
        }
        return {name: value for name, value in values.items() if value}


class Backstage:
    """A second replica's ``AuthDeps`` in a loop of its own: makes people, reads the store.

    People the auth service sees log in for real, since it checks sessions in the store;
    the enrolment service only checks a token's signature, so its people get tokens signed
    with the same keys (three password checks fewer each: cases stay cheap).
    """

    def __init__(self, portal: BlockingPortal, core: AuthDeps) -> None:
        self.portal = portal
        self.core = core
        self.tokens: set[str] = set()  # every access token given to somebody

    def run(self, work: Callable[[], Awaitable[T]]) -> T:
        return self.portal.call(work)

    async def person(self, *roles: str, two_factor: bool = False, session: bool = True) -> Person:
        """A new account; with 2FA on if asked; logged in (acr aal2 with 2FA), or not but
        holding a token of the same keys."""
        username = f"fuzz-{uuid.uuid4().hex[:12]}"
        ctx = Context()
        account_id = await accounts.register_account(
            self.core, ctx, username=username, email=f"{username}@example.org", password=PASSWORD
        )
        for role in roles:
            await accounts.set_role(self.core, ctx, username=username, role=role, granted=True)
        person = Person(account_id, username, access_token="")
        if two_factor:
            enrolled = await enable_through_domain(self.core, account_id, self.core.clock())
            person = replace(person, secret=enrolled.secret, codes=enrolled.codes)
        if not session:
            person = replace(person, access_token=self._token(account_id, roles, two_factor))
            self.tokens.add(person.access_token)
            return person
        tokens = await self._login(username)
        if isinstance(tokens, logins.MfaChallenge):
            tokens = await logins.login_mfa(
                self.core,
                ctx,
                mfa_token=tokens.mfa_token,
                proof=Proof(recovery_code=person.codes.pop()),
            )
        self.tokens.add(tokens.access_token)
        return replace(person, access_token=tokens.access_token, refresh_token=tokens.refresh_token)

    async def challenged(self) -> Person:
        """2FA on, and a login waiting for the second factor (its mfa token)."""
        person = await self.person(two_factor=True, session=False)
        challenge = await self._login(person.username)
        assert isinstance(challenge, logins.MfaChallenge)
        return replace(person, mfa_token=challenge.mfa_token)

    async def pending(self) -> Person:
        """Enrolment started, not yet confirmed."""
        person = await self.person(session=False)
        started = await enrolment.start(self.core, Context(), self._claims(person))
        return replace(person, secret=started.secret)

    async def reset_target(self, requester: Person) -> Person:
        """2FA on, with a support reset opened by ``requester``."""
        target = await self.person(two_factor=True, session=False)
        claims = self._claims(requester)
        request_id = await reset.request_reset(
            self.core, Context(), claims, target.account_id, TICKET, REASON
        )
        return replace(target, request_id=request_id)

    async def last_position(self) -> int:
        return int(await self.core.pool.fetchval("SELECT coalesce(max(position), 0) FROM events"))

    async def _login(self, username: str) -> TokenSet | logins.MfaChallenge:
        return await logins.login(
            self.core,
            Context(),
            username=username,
            password=PASSWORD,
            device_token=None,
        )

    def _token(self, account_id: str, roles: tuple[str, ...], two_factor: bool) -> str:
        now = self.core.clock()
        return self.core.issuer.issue_access(
            subject=account_id,
            audience=self.core.settings.jwt_audience,
            session_id=uuid.uuid4().hex,
            auth_time=now,
            amr=("pwd", "otp", "mfa") if two_factor else ("pwd",),
            acr="aal2" if two_factor else "aal1",
            roles=roles,
            now=now,
        )

    def _claims(self, person: Person) -> Claims:
        return self.core.verifier.verify_access(person.access_token, now=self.core.clock())


@dataclass
class Cast:
    """The standing people: two support users, a security user, a reset target."""

    support_a: Person
    support_b: Person
    security: Person
    target: Person


@dataclass
class Scene:
    settings: Settings
    backstage: Backstage
    cast: Cast


async def feed_audit(settings: Settings, core: AuthDeps, watched: str) -> None:
    """Relay what happened so far to Kafka and let an audit app ingest it, then stop both."""
    assert settings.kafka_bootstrap_servers is not None
    relay = Relay(
        dsn=settings.require_database_url(),
        store=EventStore(core.pool, core.store.registry),
        mapping=PUBLIC_EVENTS,
        signer=EventSigner(settings.event_signing_ring()),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        options=RelayOptions(
            topic=settings.kafka_topic, name=settings.kafka_topic, poll_interval=0.1
        ),
    )
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    try:
        async with client_for(audit_app(settings)):

            async def ingested() -> bool:
                sql = "SELECT count(*) FROM audit.entries WHERE chain = $1"
                return bool(await core.pool.fetchval(sql, watched))

            await eventually(ingested, within=30)
    finally:
        stop.set()
        await asyncio.wait_for(relaying, 15)


@pytest.fixture(scope="module")
def scene(postgres_url: str, template_database: str, kafka_bootstrap: str) -> Iterator[Scene]:
    name = f"twofa_fuzz_{uuid.uuid4().hex[:12]}"
    topic = f"twofa.events.v1.fuzz-{uuid.uuid4().hex[:10]}"
    settings = settings_for(
        servers.with_database(postgres_url, name),
        **with_kafka(kafka_bootstrap, topic),
    )
    with start_blocking_portal() as portal:
        create = f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'
        portal.call(admin_sql, postgres_url, create)
        try:
            portal.call(ensure_topics, kafka_bootstrap, [topic, topic + ".dlq"])
            pool = portal.call(lambda: create_pool(settings.require_database_url(), max_size=4))
            try:
                core = build_deps(settings, pool)
                backstage = Backstage(portal, core)
                support_a = backstage.run(lambda: backstage.person("support", two_factor=True))
                cast = Cast(
                    support_a=support_a,
                    support_b=backstage.run(lambda: backstage.person("support", two_factor=True)),
                    security=backstage.run(lambda: backstage.person("security", two_factor=True)),
                    target=backstage.run(lambda: backstage.reset_target(support_a)),
                )
                portal.call(feed_audit, settings, core, cast.target.account_id)
                yield Scene(settings, backstage, cast)
            finally:
                portal.call(pool.close)
        finally:
            portal.call(admin_sql, postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The apps under test -----------------------------------------------------------------


class Counted:
    """An app under test: counts the requests it serves (its schema's download aside), and
    knows who its cases are sent as and where the event store stood before each."""

    def __init__(
        self, app: FastAPI, scene: Scene, cast_case: Callable[[Scene, Case[Any]], None]
    ) -> None:
        self.app = app
        self.scene = scene
        self.cast_case = cast_case
        self.requests = 0
        self.cases = 0
        self.position = 0
        self.answers: defaultdict[str, Answers] = defaultdict(Answers)  # by operation
        self.bearer_operations = bearer_operations(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/openapi.json":
            self.requests += 1
        await self.app(scope, receive, send)


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: Case[Any], kwargs: dict[str, Any]) -> None:
    # In this hook, not in the test: schemathesis revalidates what a hook changed, so a
    # case a real value made valid is judged as valid (and one it broke, as invalid).
    app = case.operation.app
    if not isinstance(app, Counted):
        return
    if case.method.upper() == case.operation.method.upper():  # not a probe of another method
        app.cast_case(app.scene, case)
    app.position = app.scene.backstage.run(app.scene.backstage.last_position)


TALLY = pytest.StashKey[Counted]()
# Of the cases of an operation that takes a bearer, at least this share must get past the
# token check (a 2xx, or a 4xx other than 401 and 403), or the fuzzing tried little more
# than the check itself. Counted over the cases whose token was ours to give: not those
# sent with a method the path lacks (the router answers them), nor those in which
# schemathesis itself left out or broke the Authorization header to test the check (it
# expects them refused, and they are most of the cases of an operation with nothing else
# to vary, such as GET /v1/audit/verify).
PAST_AUTH_FLOOR = 0.25
STATUS_CLASSES = ("2xx", "4xx", "401/403", "5xx", "other")


def status_class(status: int) -> str:
    if status in (401, 403):
        return "401/403"
    kind = f"{status // 100}xx"
    return kind if kind in STATUS_CLASSES else "other"


@dataclass
class Answers:
    """What one operation's cases were answered, by status class."""

    by_class: Counter[str] = field(default_factory=Counter)  # sent with its own method
    other_method: int = 0  # sent with a method the path does not have
    real_token: int = 0  # sent with somebody's access token
    token_negated: int = 0  # schemathesis left out or broke the token on purpose
    negated_past: int = 0  # ... and yet got past the token check

    def add(self, case: Case[Any], status: int, *, real_token: bool) -> None:
        self.real_token += real_token
        if case.method.upper() != case.operation.method.upper():
            self.other_method += 1
            return
        kind = status_class(status)
        self.by_class[kind] += 1
        if case.operation.schema.is_security_param_negated(case):
            self.token_negated += 1
            self.negated_past += kind in ("2xx", "4xx")

    @property
    def cases(self) -> int:
        return sum(self.by_class.values()) + self.other_method

    def past_authentication(self) -> float:
        """The share of the cases whose token was ours to give that got past the check."""
        ours = sum(self.by_class.values()) - self.token_negated
        past = self.by_class["2xx"] + self.by_class["4xx"] - self.negated_past
        return past / ours if ours else 0.0


def requires_bearer(security: object) -> bool:
    """Whether an operation's OpenAPI ``security`` requires the bearer token: every
    requirement it lists names it (``/v1/accounts`` also lists none: the token is optional)."""
    return (
        isinstance(security, list)
        and bool(security)
        and all(isinstance(r, dict) and "HTTPBearer" in r for r in security)
    )


def bearer_operations(app: FastAPI) -> set[str]:
    """The operations (``METHOD /path``) of ``app`` that require a bearer token."""
    return {
        f"{method.upper()} {path}"
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if requires_bearer(operation.get("security"))
    }


def tabulate(service: str, counted: Counted) -> list[str]:
    """Put each operation's answers in the report; the bearer operations under the floor."""
    table = REPORT.table(
        "fuzz: answers per operation",
        *("operation", "cases", "real token", "token negated", *STATUS_CLASSES),
        *("other method", "past auth"),
    )
    short = []
    for label in sorted(set(counted.answers) | counted.bearer_operations):
        answers = counted.answers[label]
        share = answers.past_authentication()
        bearer = label in counted.bearer_operations
        table.add(
            f"{service}: {label}",
            *(answers.cases, answers.real_token, answers.token_negated),
            *(answers.by_class[kind] for kind in STATUS_CLASSES),
            answers.other_method,
            f"{share:.0%}" if bearer else "-",
        )
        if bearer and share < PAST_AUTH_FLOOR:
            short.append(f"{label}: {share:.0%} of {answers.cases} cases")
    return short


def load(
    service: str,
    app: FastAPI,
    scene: Scene,
    cast_case: Callable[[Scene, Case[Any]], None],
    request: pytest.FixtureRequest,
) -> Iterator[Schema]:
    # pytest 9.2 dropped Node._nodeid, which schemathesis' from_fixture (4.32) still reads
    # and renames per operation; giving it one back is all it needs.
    request.node._nodeid = request.node.nodeid
    counted = Counted(app, scene, cast_case)
    request.node.stash[TALLY] = counted
    schema = schemathesis.openapi.from_asgi("/openapi.json", counted, config=CONFIG)
    schema.auth(refresh_interval=None)(Somebody)  # asked for every case, never cached
    wait_until_ready(service, schema)
    yield schema
    REPORT.requests += counted.requests
    REPORT.other[f"fuzz cases ({service})"] += counted.cases
    short = tabulate(service, counted)
    assert not short, f"under {PAST_AUTH_FLOOR:.0%} of the cases got past the token: {short}"


def wait_until_ready(service: str, schema: Schema, within: float = 60.0) -> None:
    """Fuzz a service once it is ready, as a load balancer would send it traffic: its
    consumers caught up (``/readyz`` is 503 until then, a documented answer)."""
    deadline = time.monotonic() + within
    while (answer := schema["/readyz"]["GET"].Case().call()).status_code != 200:
        assert time.monotonic() < deadline, f"{service} is not ready: {answer.text}"
        time.sleep(0.2)


# Who each case is sent as ------------------------------------------------------------


def chosen(name: str, value: object) -> bool:
    """Three generated values in four are replaced; which ones follows from the value."""
    return zlib.crc32(f"{name}={value!r}".encode()) % 4 != 0


def send_as(case: Case[Any], bearer: Person | None, values: dict[str, str]) -> None:
    """Send ``case`` with ``bearer``'s token where ``Somebody`` marked it for one, and some
    fields replaced with real ``values``.

    Containers are replaced, never changed in place: schemathesis may build several cases
    on the same generated ones."""
    if bearer is not None and case.headers.get("Authorization") == SOMEBODY:
        case.headers = _with(case.headers, {"Authorization": f"Bearer {bearer.access_token}"})
    for location in ("body", "path_parameters", "query", "headers"):
        container = getattr(case, location)
        if not isinstance(container, MutableMapping):
            continue
        real = {
            name: value
            for name, value in values.items()
            if isinstance(container.get(name), str) and chosen(name, container[name])
        }
        if real:
            setattr(case, location, _with(container, real))


SOMEBODY = "Bearer somebody"  # the mark ``Somebody`` puts; ``send_as`` puts a real token


class Somebody:
    """Marks three cases in four of an operation that requires a bearer for somebody's
    token (which ones follows from what was generated), whether or not an Authorization
    header was generated for them.

    Given to schemathesis as its auth provider, so it knows these cases carry credentials
    on purpose: it leaves alone the cases meant to go without a token or with a broken one
    (and expects 401 for them), and probes with its own that the token is enforced. The
    person is only made when the case is sent (``before_call``), so the mark stands in."""

    def get(self, case: Case[Any], ctx: schemathesis.AuthContext) -> str | None:
        required = case.operation.definition.raw.get("security")
        if requires_bearer(required) and chosen("authorization", _generated(case)):
            return SOMEBODY
        return None

    def set(self, case: Case[Any], data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers = _with(case.headers, {"Authorization": data})


def _generated(case: Case[Any]) -> str:
    """What was generated for ``case``, as text that is the same from run to run."""
    parts = (case.body, case.path_parameters, case.query, case.headers)
    return " ".join("-" if isinstance(part, NotSet) else repr(part) for part in parts)


def _with(container: MutableMapping[str, Any], changes: dict[str, str]) -> Any:
    kind: Any = type(container)  # a dict, or the headers' CaseInsensitiveDict
    return kind({**container, **changes})


AS_SOMEBODY = {  # the auth operations whose cases are sent as a logged-in account
    "/v1/login",
    "/v1/token/refresh",
    "/v1/reauthenticate",
    "/v1/account/password",
    "/v1/account/email",
    "/v1/logout",
    "/v1/me",
}


def cast_auth(scene: Scene, case: Case[Any]) -> None:
    backstage, path = scene.backstage, case.operation.path
    if path == "/v1/login/mfa":
        person = backstage.run(backstage.challenged)
    elif path in AS_SOMEBODY:
        person = backstage.run(backstage.person)
    else:
        return
    send_as(case, person, person.real_values())


def cast_enrolment(scene: Scene, case: Case[Any]) -> None:
    backstage, cast, path = scene.backstage, scene.cast, case.operation.path
    if path.endswith("/reset-requests"):  # support A opens one for a fresh 2FA account
        target = backstage.run(lambda: backstage.person(two_factor=True, session=False))
        send_as(case, cast.support_a, {"account_id": target.account_id})
    elif path.endswith(("/approve", "/cancel")):  # on A's request: B, or the owner cancels
        target = backstage.run(lambda: backstage.reset_target(cast.support_a))
        owner = path.endswith("/cancel") and chosen("owner", case.body)
        values = {"account_id": target.account_id, "request_id": target.request_id}
        send_as(case, target if owner else cast.support_b, values)
    elif path.startswith("/v1/admin/"):
        send_as(case, cast.support_a, {"account_id": cast.target.account_id})
    elif path.startswith("/v1/2fa"):
        if path == "/v1/2fa/enrolment":  # starts one
            person = backstage.run(lambda: backstage.person(session=False))
        elif path.startswith("/v1/2fa/enrolment/"):  # its QR code, its confirmation
            person = backstage.run(backstage.pending)
        else:  # status, new codes, disable
            person = backstage.run(lambda: backstage.person(two_factor=True, session=False))
        send_as(case, person, person.real_values())


def cast_audit(scene: Scene, case: Case[Any]) -> None:
    if not case.operation.path.startswith("/v1/audit"):
        return
    tail = case.operation.path.endswith("/stream") and "Last-Event-ID" not in case.headers
    if tail and chosen("tail", case.query):  # from the log's start: entries before the cut
        case.headers = _with(case.headers, {"Last-Event-ID": "0"})
    values = {
        "account": scene.cast.target.account_id,
        "actor": f"account:{scene.cast.support_a.account_id}",
        "type": "twofa.reset_requested",
        "cursor": encode_cursor(1),
    }
    send_as(case, scene.cast.security, values)


@pytest.fixture
def auth_schema(scene: Scene, request: pytest.FixtureRequest) -> Iterator[Schema]:
    # Without its Kafka consumer, which would end sessions (append events) as it catches up
    # with the setup's events: only the requests may write, so the event count is exact.
    quiet = without_broker(scene.settings)
    yield from load("auth", auth_app(quiet), scene, cast_auth, request)


@pytest.fixture
def enrolment_schema(scene: Scene, request: pytest.FixtureRequest) -> Iterator[Schema]:
    yield from load("enrolment", enrolment_app(scene.settings), scene, cast_enrolment, request)


@pytest.fixture
def audit_schema(scene: Scene, request: pytest.FixtureRequest) -> Iterator[Schema]:
    yield from load("audit", audit_app(scene.settings), scene, cast_audit, request)


# The tests ---------------------------------------------------------------------------


def check(case: Case[Any], scene: Scene, request: pytest.FixtureRequest) -> None:
    """Send the case; check the answer against the schema and that refusals wrote nothing."""
    tally = request.node.stash[TALLY]
    tally.cases += 1
    response = case.call()
    bearer = (case.headers.get("Authorization") or "").removeprefix("Bearer ")
    real_token = bearer in scene.backstage.tokens
    tally.answers[case.operation.label].add(case, response.status_code, real_token=real_token)
    written = scene.backstage.run(scene.backstage.last_position) - tally.position
    try:
        case.validate_response(response)
    except FailureGroup as failures:
        if not all(_beyond_the_schema(failure, response) for failure in failures.exceptions):
            raise
    status = response.status_code
    refused = status in INPUT_REFUSALS or (
        status == 401 and _problem_code(response) in TOKEN_REFUSALS
    )
    assert not (refused and written), f"a refused request ({status}) wrote {written} events"


def _beyond_the_schema(failure: Exception, response: schemathesis.Response) -> bool:
    """Schema-valid input refused by a rule no JSON Schema can state (and only that)."""
    return (
        isinstance(failure, RejectedPositiveData)
        and response.status_code == 422
        and _problem_code(response) in RULES_BEYOND_THE_SCHEMA
    )


def _problem_code(response: schemathesis.Response) -> object:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


# aiokafka (the consumers of enrolment and audit) shuffles with the global ``random`` in
# its own thread while Hypothesis draws; what is generated does not depend on it.
kafka_uses_random = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
)
auth_api = schemathesis.pytest.from_fixture("auth_schema")
enrolment_api = schemathesis.pytest.from_fixture("enrolment_schema")
audit_api = schemathesis.pytest.from_fixture("audit_schema")


@auth_api.parametrize()
def test_auth_answers_every_input_as_documented(
    case: Case[Any], scene: Scene, request: pytest.FixtureRequest
) -> None:
    check(case, scene, request)


@enrolment_api.parametrize()
@kafka_uses_random
def test_enrolment_answers_every_input_as_documented(
    case: Case[Any], scene: Scene, request: pytest.FixtureRequest
) -> None:
    check(case, scene, request)


@audit_api.parametrize()
@kafka_uses_random
def test_audit_answers_every_input_as_documented(
    case: Case[Any], scene: Scene, request: pytest.FixtureRequest
) -> None:
    check(case, scene, request)
