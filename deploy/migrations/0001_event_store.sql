-- The event store: one append-only table, the truth every read model is rebuilt from.

DO $$
BEGIN
    CREATE ROLE twofa_app NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END
$$;

CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction: readers of "everything after a checkpoint" go in
    -- (transaction_id, position) order below the oldest running transaction, so a
    -- transaction that took a lower position but committed later is never skipped.
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text        NOT NULL CHECK (length(stream_id) BETWEEN 1 AND 200),
    stream_version  integer     NOT NULL CHECK (stream_version >= 1),
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL CHECK (length(event_type) BETWEEN 1 AND 200),
    schema_version  integer     NOT NULL DEFAULT 1 CHECK (schema_version >= 1),
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_commit_order ON events (transaction_id, position);

-- Append-only, enforced here and not by convention.
CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event store is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- Wake the relay; a statement trigger sends one notification per append, not per row.
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('twofa_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify_append AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

-- Snapshots are a cache: any of them can be deleted and the aggregate is rebuilt.
CREATE TABLE snapshots (
    stream_id       text        NOT NULL,
    stream_version  integer     NOT NULL,
    snapshot_type   text        NOT NULL,
    schema_version  integer     NOT NULL DEFAULT 1,
    state           jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (stream_id, snapshot_type)
);

-- The relay's position in the commit-ordered feed, written only after the broker acked.
CREATE TABLE relay_checkpoints (
    name            text        PRIMARY KEY,
    transaction_id  xid8        NOT NULL,
    position        bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Consumers record each event id they handled in the same transaction as its effect.
CREATE TABLE processed_events (
    consumer        text        NOT NULL,
    event_id        uuid        NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, event_id)
);

GRANT SELECT, INSERT ON events TO twofa_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON snapshots, relay_checkpoints, processed_events TO twofa_app;
