"""What auth's use cases need beyond the shared ``Deps``: accounts, passwords, tokens."""

from __future__ import annotations

from dataclasses import dataclass

from services.auth.adapters.device_tokens import DeviceTokens
from services.auth.adapters.unknown_names import UnknownNames
from shared.app.deps import Deps
from shared.domain.account import AccountState, PasswordPolicy
from shared.eventstore.repository import Repository
from shared.security.passwords import PasswordHasher
from shared.security.tokens import TokenIssuer

__all__ = ["AuthDeps"]


@dataclass(kw_only=True)
class AuthDeps(Deps):
    """The auth service's dependencies, built by ``services.auth.main.build_deps``."""

    accounts: Repository[AccountState]
    passwords: PasswordHasher
    password_policy: PasswordPolicy
    issuer: TokenIssuer
    devices: DeviceTokens
    unknown_names: UnknownNames
