"""The audit service: a hash-chained, append-only record of every event."""
