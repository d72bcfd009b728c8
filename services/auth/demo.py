"""``twofa dev --demo``: a demo user, two support users and a security user.

Made once; their credentials (and the TOTP secrets of those with 2FA on) are kept in
``.twofa/demo-credentials.txt`` for this development stack only. Support and security
users get 2FA, since support actions need a login with the second factor (``aal2``).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from services.auth import handlers
from shared import recovery, totp
from shared.config import Settings
from shared.core import Core, twofactor_stream
from shared.db import create_pool
from shared.domain import events as ev
from shared.events import EventMetadata, NewEvent

__all__ = ["enable_directly", "seed"]

USERS = (
    ("demo", (), False),
    ("support.one", ("support",), True),
    ("support.two", ("support",), True),
    ("security", ("security",), True),
)


async def seed(settings: Settings) -> str:
    """Create the demo users; return their credentials as text (to keep and print)."""
    pool = await create_pool(settings.require_database_url(), min_size=1, max_size=2)
    core = Core.build(settings, pool)
    ctx = handlers.Context(actor="operator:demo")
    lines = ["# twofa dev --demo: development accounts only", ""]
    try:
        for username, roles, with_2fa in USERS:
            password = f"demo-{secrets.token_urlsafe(9)}"
            account_id = await handlers.register_account(
                core, ctx, username=username, email=f"{username}@demo.example", password=password
            )
            for role in roles:
                await handlers.set_role(core, ctx, username=username, role=role, granted=True)
            line = f"{username:12} password {password}"
            if with_2fa:
                secret, _ = await enable_directly(core, account_id, core.clock())
                line += f"  TOTP secret {secret}  (oathtool --totp -b {secret})"
            lines.append(line + (f"  roles {', '.join(roles)}" if roles else ""))
    finally:
        await pool.close()
    return "\n".join(lines) + "\n"


async def enable_directly(
    core: Core, account_id: str, now: datetime, actor: str = "operator:demo"
) -> tuple[str, list[str]]:
    """Turn 2FA on by appending its events to the stream (an operator's seed, audited
    like any event); returns the TOTP secret and the recovery codes."""
    secret = totp.new_secret()
    stream = twofactor_stream(account_id)
    codes = recovery.new_codes()
    events = [
        ev.EnrolmentStarted(
            encrypted_secret=core.keyring.encrypt(secret.encode(), stream.encode()),
            expires_at=now + timedelta(minutes=10),
        ),
        ev.TwoFactorEnabled(
            session_id=None,
            enabled_at=now,
            time_step=totp.time_step(now) - 2,
            recovery_code_hashes=tuple(core.recovery.hash(c) for c in codes),
        ),
    ]
    meta = EventMetadata(actor=actor, occurred_at=now)
    loaded = await core.twofactors.load(stream)
    await core.twofactors.save(stream, loaded, [NewEvent(e, meta) for e in events])
    return secret, codes
