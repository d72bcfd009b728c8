"""The database logins of a development or test stack: one per process, in its group role.

The group roles and their grants come from ``deploy/migrations/0009_service_roles.sql``;
the logins are made here for ``twofa dev``, the test stacks and the bench (in a real
deployment, by ``deploy/postgres/10-twofa-roles.sh`` or the operator).
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from shared.platform.db import ensure_service_role

__all__ = ["SERVICE_GROUPS", "SERVICE_LOGINS", "ensure_service_logins", "login_dsn"]

# The group role each process's login is a member of.
SERVICE_GROUPS = {
    "auth": "twofa_auth",
    "enrolment": "twofa_enrolment",
    "audit": "twofa_audit",
    "relay": "twofa_relay",
}
SERVICE_LOGINS = {process: f"{group}_service" for process, group in SERVICE_GROUPS.items()}


async def ensure_service_logins(admin_dsn: str) -> None:
    """Each process's login, in its group role (idempotent)."""
    for process, login in SERVICE_LOGINS.items():
        await ensure_service_role(admin_dsn, login, SERVICE_GROUPS[process])


def login_dsn(dsn: str, process: str) -> str:
    """``dsn`` with the user replaced by ``process``'s login (the same server and database)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(SERVICE_LOGINS[process])}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
