"""Auth's use cases: login (password, then the second factor), sessions, the account."""
