-- Audit entries are stored as the exact bytes their hash is over (issue 14).
-- "content" is the RFC 8785 canonical JSON of the entry, written once when it is
-- recorded and read back as it is: hash = SHA-256(prev_hash || content). jsonb could not
-- be that store: PostgreSQL normalises numbers (1e16, -0.0) and drops duplicate keys, so
-- a hash over its text stops matching. The other columns stay, for filtering; verify
-- checks that they say what the content says.
--
-- "data" (jsonb) is kept only for the entries recorded before this migration: their hash
-- is over their columns, data included, and verify recomputes it that way for them
-- alone. Every entry from now on has content and no jsonb copy anyone could trust
-- instead. The check is NOT VALID on purpose: it binds every row written from now on and
-- leaves the older ones as they were (never VALIDATE it).
ALTER TABLE audit.entries ADD COLUMN content bytea;
ALTER TABLE audit.entries ALTER COLUMN data DROP NOT NULL;
ALTER TABLE audit.entries ADD CONSTRAINT entries_stored_as_content
    CHECK (content IS NOT NULL AND data IS NULL) NOT VALID;
