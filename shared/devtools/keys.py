"""Development keys for ``twofa dev``: made once, kept in ``.twofa/dev.env``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from shared.platform.key_holders import key_variables
from shared.security.crypto import new_development_key, new_key
from shared.security.keys import SigningKeys

__all__ = ["dev_keys", "dev_keys_for"]


def dev_keys(root: Path) -> dict[str, str]:
    """Development keys, made once and kept in ``.twofa/dev.env`` so data stays readable
    across restarts and every process of the stack shares them."""
    path = root / "dev.env"
    if not path.exists():
        path.write_text("# Development keys for `twofa dev` only. Never use them in production.\n")
        path.chmod(0o600)
    values = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip()
    wanted: dict[str, Callable[[], str]] = {
        "TWOFA_ENCRYPTION_KEYS": lambda: f"local-1:{new_key()}",
        "TWOFA_ENCRYPTION_ACTIVE_KEY_ID": lambda: "local-1",
        "TWOFA_JWT_SIGNING_KEYS": lambda: SigningKeys.generate("local-1").to_config(),
        "TWOFA_RECOVERY_CODE_KEY": new_development_key,
        "TWOFA_DEVICE_TOKEN_KEY": new_development_key,
        # A ring of 32-byte keys: the mark, then 128 random bits.
        "TWOFA_SNAPSHOT_KEYS": lambda: f"local-1:{new_development_key(16)}",
        "TWOFA_SNAPSHOT_ACTIVE_KEY_ID": lambda: "local-1",
        "TWOFA_EVENT_SIGNING_KEYS": lambda: SigningKeys.generate("local-1").to_config(),
    }
    missing = {name: make() for name, make in wanted.items() if name not in values}
    if "TWOFA_EVENT_VERIFY_KEYS" not in values:  # the public half: what consumers check with
        seeds = {**values, **missing}["TWOFA_EVENT_SIGNING_KEYS"]
        missing["TWOFA_EVENT_VERIFY_KEYS"] = SigningKeys.from_config(seeds, None).public_config()
    if missing:
        with path.open("a") as out:
            out.writelines(f"{name}={value}\n" for name, value in missing.items())
        values.update(missing)
    # The public halves, for the processes that only verify tokens.
    signing = SigningKeys.from_config(values["TWOFA_JWT_SIGNING_KEYS"], None)
    values.setdefault("TWOFA_JWT_VERIFY_KEYS", signing.public_config())
    return values


def dev_keys_for(root: Path, process: str) -> dict[str, str]:
    """The development keys ``process`` holds, and no other (``KEY_HOLDERS``)."""
    held = key_variables(process)
    return {name: value for name, value in dev_keys(root).items() if name in held}
