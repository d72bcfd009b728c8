"""``twofa dev --demo``: a demo user, two support users and a security user.

Made once; their credentials (and the TOTP secrets of those with 2FA on) are kept in
``.twofa/demo-credentials.txt`` for this development stack only. Support and security
users get 2FA, since support actions need a login with the second factor (``aal2``).
"""

from __future__ import annotations

import secrets

from services.auth.main import build_deps
from services.auth.usecases.account import register_account, set_role
from shared.app.context import Context
from shared.devtools.seeding import enable_directly
from shared.platform.config import Settings
from shared.platform.db import create_pool

__all__ = ["seed"]

USERS = (
    ("demo", (), False),
    ("support.one", ("support",), True),
    ("support.two", ("support",), True),
    ("security", ("security",), True),
)


async def seed(settings: Settings) -> str:
    """Create the demo users; return their credentials as text (to keep and print)."""
    pool = await create_pool(settings.require_database_url(), min_size=1, max_size=2)
    deps = build_deps(settings, pool)
    ctx = Context(actor="operator:demo")
    lines = ["# twofa dev --demo: development accounts only", ""]
    try:
        for username, roles, with_2fa in USERS:
            password = f"demo-{secrets.token_urlsafe(9)}"
            account_id = await register_account(
                deps, ctx, username=username, email=f"{username}@demo.example", password=password
            )
            for role in roles:
                await set_role(deps, ctx, username=username, role=role, granted=True)
            line = f"{username:12} password {password}"
            if with_2fa:
                secret, _ = await enable_directly(deps, account_id, deps.clock())
                line += f"  TOTP secret {secret}  (oathtool --totp -b {secret})"
            lines.append(line + (f"  roles {', '.join(roles)}" if roles else ""))
    finally:
        await pool.close()
    return "\n".join(lines) + "\n"
