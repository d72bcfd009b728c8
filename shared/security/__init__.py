"""Security primitives: AES-GCM key rings, TOTP, recovery codes, passwords, tokens."""
