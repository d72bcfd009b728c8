"""The two-factor domain: events, and the Account and TwoFactor aggregates."""
