"""The audit log's own rules: the hash chain and its verification walk (pure)."""
