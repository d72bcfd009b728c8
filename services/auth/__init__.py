"""The auth service: accounts, passwords, login with the second factor, tokens."""
