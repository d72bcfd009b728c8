"""Registering an account, its email and its roles."""

from __future__ import annotations

from shared.domain import events as ev
from shared.domain.account.state import ROLES, AccountState
from shared.domain.base import DomainEvent
from shared.domain.errors import NotAllowed


def register(
    state: AccountState, *, username: str, email: str, password_hash: str
) -> list[DomainEvent]:
    if state.registered:
        raise NotAllowed("this account exists already")
    return [ev.AccountRegistered(username=username, email=email, password_hash=password_hash)]


def change_email(state: AccountState, email: str) -> list[DomainEvent]:
    if email == state.email:
        return []
    return [ev.EmailChanged(email=email, previous_email=state.email)]


def set_role(state: AccountState, role: str, granted: bool) -> list[DomainEvent]:
    if role not in ROLES:
        raise NotAllowed(f"unknown role {role!r}")
    if granted == (role in state.roles):
        return []
    return [ev.RoleGranted(role=role) if granted else ev.RoleRevoked(role=role)]
