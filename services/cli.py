"""The ``twofa`` command: ``migrate``, ``relay``, ``serve``, ``accounts`` and ``dev``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from services import devstack
from services.audit.usecases import rebuild
from services.auth import cli as accounts_cli
from shared.eventstore.registry import REGISTRY
from shared.eventstore.store import EventStore
from shared.messaging.contract import PUBLIC_EVENTS
from shared.messaging.kafka import ensure_topics, security_of
from shared.messaging.relay import Relay, RelayOptions
from shared.messaging.signing import EventSigner
from shared.platform.config import ConfigurationError, Settings
from shared.platform.db import create_pool, migrate
from shared.platform.key_holders import Process
from shared.platform.logs import configure_logging
from shared.platform.metrics import serve_metrics

__all__ = ["main"]

log = logging.getLogger("twofa")


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, for a graceful stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_migrate(settings: Settings) -> None:
    applied = await migrate(settings.require_migration_url())
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


async def run_relay(settings: Settings) -> None:
    bootstrap = settings.require_kafka()
    security = security_of(settings)
    signer = EventSigner(settings.event_signing_ring())  # refused before anything starts
    await ensure_topics(
        bootstrap,
        [settings.kafka_topic, settings.dlq_topic],
        partitions=settings.kafka_topic_partitions,
        replication_factor=settings.kafka_replication_factor,
        security=security,
    )
    serve_metrics(settings, "relay")
    pool = await create_pool(settings.require_database_url(), min_size=1, max_size=2)
    try:
        relay = Relay(
            dsn=settings.require_database_url(),
            store=EventStore(pool, REGISTRY),
            mapping=PUBLIC_EVENTS,
            signer=signer,
            bootstrap_servers=bootstrap,
            options=RelayOptions(
                topic=settings.kafka_topic,
                name=settings.relay_name,
                batch_size=settings.relay_batch_size,
                poll_interval=settings.relay_poll_interval_seconds,
                standby_retry=settings.relay_standby_retry_seconds,
                client_id=f"{settings.kafka_client_id}-relay",
                partitions=settings.kafka_topic_partitions,
                replication_factor=settings.kafka_replication_factor,
            ),
            security=security,
        )
        await relay.run(stop_on_signals())
    finally:
        await pool.close()


async def run_audit_rebuild(settings: Settings) -> None:
    pool = await create_pool(settings.require_database_url(), min_size=1, max_size=2)
    try:
        read, added = await rebuild(EventStore(pool, REGISTRY))
    finally:
        await pool.close()
    print(f"read {read} stored events; added {added} audit entries")


SERVICES = devstack.DEFAULT_PORTS


def serve_http(settings: Settings, service: str, host: str, port: int | None) -> None:
    """Run one service under uvicorn until SIGINT or SIGTERM."""
    # Only here: the relay and the other commands need neither uvicorn nor FastAPI's apps.
    import uvicorn

    from services.audit.main import create_app as audit_app
    from services.auth.main import create_app as auth_app
    from services.enrolment.main import create_app as enrolment_app

    factories = {"auth": auth_app, "enrolment": enrolment_app, "audit": audit_app}
    settings.require_database_url()  # fail with a clear message before binding the port
    if settings.kafka_bootstrap_servers:
        security_of(settings)  # the same for the broker's credentials
    app = factories[service](settings)
    serve_metrics(settings, service)
    uvicorn.run(
        app,
        host=host,
        port=port or SERVICES[service],
        log_config=None,
        access_log=False,
        server_header=False,
    )


def process_of(args: argparse.Namespace) -> Process:
    """Whose keys and database login a command runs with (README, "Database roles"):
    ``accounts`` writes through auth's use cases, ``audit rebuild`` is audit's."""
    if args.command == "serve":
        service: Process = args.service
        return service
    commands: dict[str, Process] = {
        "relay": "relay",
        "accounts": "auth",
        "audit": "audit",
        "migrate": "migrate",
    }
    return commands[args.command]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="twofa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply the SQL migrations (idempotent)")
    sub.add_parser("relay", help="publish stored events to Kafka (one active at a time)")
    serve = sub.add_parser("serve", help="serve one HTTP service")
    serve.add_argument("service", choices=sorted(SERVICES), help="which service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument(
        "--port", type=int, default=None, help="default: auth 8001, enrolment 8002, audit 8003"
    )
    accounts_cli.add_parser(sub)
    audit = sub.add_parser("audit", help="audit log maintenance")
    audit_actions = audit.add_subparsers(dest="action", required=True)
    audit_actions.add_parser("rebuild", help="fill the audit log from the event store")
    dev = sub.add_parser("dev", help="run the whole stack on embedded PostgreSQL and broker")
    dev.add_argument("--data-dir", default=".twofa", help="where the embedded data lives")
    dev.add_argument("--auth-port", type=int, default=8001)
    dev.add_argument("--enrolment-port", type=int, default=8002)
    dev.add_argument("--audit-port", type=int, default=8003)
    dev.add_argument(
        "--replicas", default="", help="copies per service, e.g. auth=2,audit=2 (one URL each)"
    )
    dev.add_argument("--demo", action="store_true", help="create demo, support and security users")
    dev.add_argument(
        "--stop", action="store_true", help="stop the stack a run left on --data-dir, and exit"
    )
    args = parser.parse_args(argv)

    if args.command == "dev":  # it sets up the environment its children load settings from
        configure_logging(os.environ.get("TWOFA_LOG_LEVEL", "INFO"), service="dev")
        if args.stop:
            return devstack.stop(args.data_dir)
        ports = {"auth": args.auth_port, "enrolment": args.enrolment_port, "audit": args.audit_port}
        replicas = devstack.parse_replicas(args.replicas)
        return devstack.run(args.data_dir, ports, replicas, demo=args.demo)
    try:
        settings = Settings.load(process=process_of(args))
    except ConfigurationError as exc:
        print(f"twofa: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, service=args.command)
    try:
        if args.command == "migrate":
            asyncio.run(run_migrate(settings))
        elif args.command == "relay":
            asyncio.run(run_relay(settings))
        elif args.command == "serve":
            serve_http(settings, args.service, args.host, args.port)
        elif args.command == "accounts":
            return asyncio.run(accounts_cli.run(settings, args))
        elif args.command == "audit":
            asyncio.run(run_audit_rebuild(settings))
    except ConfigurationError as exc:
        print(f"twofa: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
