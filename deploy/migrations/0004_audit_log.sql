-- The audit service's own, append-only, hash-chained log (schema "audit").
-- One chain per account (the Kafka key): an account's events are ordered within one
-- partition and within the event store alike, so whichever instance consumes them,
-- and a rebuild from the store, produce the same chain.
CREATE SCHEMA audit;

CREATE TABLE audit.entries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    chain           text        NOT NULL,           -- the account id
    chain_seq       bigint      NOT NULL CHECK (chain_seq >= 1),
    event_type      text        NOT NULL,
    source          text        NOT NULL,
    actor           text,
    correlation_id  uuid,
    causation_id    uuid,
    occurred_at     timestamptz NOT NULL,
    store_position  bigint      NOT NULL,
    dataschema      text        NOT NULL,
    data            jsonb       NOT NULL,
    kafka_partition integer,                        -- NULL when rebuilt from the store
    kafka_offset    bigint,
    prev_hash       bytea       NOT NULL,
    hash            bytea       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (chain, chain_seq)
);

CREATE INDEX audit_entries_time ON audit.entries (occurred_at, id);
CREATE INDEX audit_entries_type ON audit.entries (event_type, id);
CREATE INDEX audit_entries_actor ON audit.entries (actor, id);

CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER entries_no_update BEFORE UPDATE ON audit.entries
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER entries_no_delete BEFORE DELETE ON audit.entries
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON audit.entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

GRANT USAGE ON SCHEMA audit TO twofa_app;
GRANT SELECT, INSERT ON audit.entries TO twofa_app;
