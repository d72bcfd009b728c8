"""The event store: the truth every state is folded from (PostgreSQL, append-only)."""
