"""The audit log's SQL."""
