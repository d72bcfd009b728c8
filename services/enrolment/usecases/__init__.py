"""Enrolment's use cases: turning 2FA on and off, recovery codes, the support reset."""
