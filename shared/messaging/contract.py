"""The public contract: which domain events reach Kafka, under which name, with what.

Each entry is a whitelist. A secret (password hash, encrypted TOTP secret, recovery code
hashes, refresh token hashes, TOTP time-steps) is in no list. A test fails when a domain
event type has no entry here.
"""

from __future__ import annotations

from shared.messaging.integration import INTERNAL, IntegrationMap, Publish

__all__ = ["PUBLIC_EVENTS"]

PUBLIC_EVENTS = IntegrationMap(
    {
        "account.registered": Publish("account.registered", ("username", "email")),
        "account.password_changed": Publish("account.password_changed"),
        "account.email_changed": Publish("account.email_changed", ("email", "previous_email")),
        "account.role_granted": Publish("account.role_granted", ("role",)),
        "account.role_revoked": Publish("account.role_revoked", ("role",)),
        "login.succeeded": Publish("login.succeeded", ("session_id", "amr", "acr")),
        "login.failed": Publish(
            "login.failed", ("reason", "consecutive_failures", "trusted_device")
        ),
        "login.mfa_required": Publish("login.mfa_required", ("expires_at",)),
        "session.reauthenticated": Publish("session.reauthenticated", ("session_id", "amr")),
        # Lives on its own stream (the key would be the username), and says nothing new.
        "username.claimed": INTERNAL,
        "session.started": Publish(
            "session.started", ("session_id", "amr", "acr", "auth_time", "expires_at")
        ),
        "session.refreshed": INTERNAL,
        "session.ended": Publish("session.ended", ("session_id",)),
        "session.revoked": Publish("session.revoked", ("session_id", "reason")),
        "twofa.enrolment_started": Publish("twofa.enrolment_started", ("expires_at",)),
        "twofa.enabled": Publish("twofa.enabled", ("session_id", "enabled_at")),
        "twofa.otp_verified": Publish("twofa.otp_verified", ("purpose",)),
        "twofa.otp_failed": Publish(
            "twofa.otp_failed", ("method", "purpose", "reason", "consecutive_failures")
        ),
        "twofa.recovery_code_used": Publish("twofa.recovery_code_used", ("purpose", "remaining")),
        "twofa.recovery_codes_regenerated": Publish("twofa.recovery_codes_regenerated"),
        "twofa.disabled": Publish("twofa.disabled", ("session_id", "method")),
        # The public name the design gives every lockout, with the factor in the data.
        "twofa.locked": Publish("account.locked", ("factor", "until", "consecutive_failures")),
        "twofa.reset_requested": Publish(
            "twofa.reset_requested", ("request_id", "requested_by", "ticket", "reason")
        ),
        "twofa.reset_approved": Publish(
            "twofa.reset_approved", ("request_id", "approved_by", "effective_at")
        ),
        "twofa.reset_cancelled": Publish(
            "twofa.reset_cancelled", ("request_id", "cancelled_by", "reason")
        ),
        "twofa.reset_completed": Publish("twofa.reset_completed", ("request_id",)),
    }
)
