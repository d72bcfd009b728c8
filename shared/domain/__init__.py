"""The two-factor domain, pure: events, the Account and TwoFactor aggregates, errors.

Nothing here imports anything outside the domain and the standard library (an
``import-linter`` contract keeps it so).
"""
