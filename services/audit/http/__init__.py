"""The audit API (``/v1/audit``) for the security team."""
