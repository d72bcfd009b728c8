-- Snapshots carry a MAC: HMAC-SHA256 under a key from configuration (TWOFA_SNAPSHOT_KEYS,
-- never in the database) over stream id, stream version, snapshot type, schema version
-- and the state's exact bytes. The state is therefore stored as those bytes (bytea), not
-- as jsonb, which would re-serialise it (key order, numbers, spaces) and break the MAC.
-- Snapshots are a cache: the old rows, which carry no MAC, are simply dropped.
TRUNCATE snapshots;

ALTER TABLE snapshots
    DROP COLUMN state,
    ADD COLUMN state  bytea NOT NULL,  -- the JSON the MAC covers, byte for byte
    ADD COLUMN key_id text  NOT NULL,  -- which key of TWOFA_SNAPSHOT_KEYS made the MAC
    ADD COLUMN mac    bytea NOT NULL;
