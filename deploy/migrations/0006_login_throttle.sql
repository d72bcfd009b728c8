-- Wrong passwords for usernames that do not exist, counted like those of real accounts
-- so that the password throttle (429 after 10) does not tell which usernames exist.
-- Not domain state (no account, nothing to audit), so a plain table; the name is kept
-- only as an HMAC under a server key, since people type passwords into username fields.
CREATE TABLE login_throttle (
    name_key         bytea       PRIMARY KEY,
    failures         integer     NOT NULL,
    last_failure_at  timestamptz NOT NULL
);

CREATE INDEX login_throttle_last_failure ON login_throttle (last_failure_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON login_throttle TO twofa_app;
