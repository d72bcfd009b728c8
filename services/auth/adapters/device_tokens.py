"""Device tokens: proof that this browser or app logged in to this account before.

A login that presents a valid device token counts its password failures apart from
everyone else's, so a stranger hammering a username cannot throttle the owner's own
device. The token is stateless: ``dt1.<account>.<device>.<HMAC(key, account|device)>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["DeviceTokens"]


class DeviceTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, account_id: str, device_id: str) -> str:
        digest = hmac.new(self._key, f"{account_id}|{device_id}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()

    def issue(self, account_id: str) -> str:
        device_id = secrets.token_urlsafe(12)
        return f"dt1.{account_id}.{device_id}.{self._mac(account_id, device_id)}"

    def is_valid_for(self, token: str | None, account_id: str) -> bool:
        if not token or len(token) > 256 or not token.isascii():
            return False
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "dt1" or parts[1] != account_id:
            return False
        return hmac.compare_digest(parts[3], self._mac(account_id, parts[2]))
