"""Two-factor turned on by appending its events directly, as shared.devtools.seeding does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.app.deps import Deps
from shared.devtools.seeding import enable_directly


@dataclass
class Enrolled:
    secret: str
    codes: list[str]


async def enable_through_domain(core: Deps, account_id: str, now: datetime) -> Enrolled:
    """Turn 2FA on by appending its events directly (no enrolment service involved)."""
    secret, codes = await enable_directly(core, account_id, now, actor="test")
    return Enrolled(secret, codes)
