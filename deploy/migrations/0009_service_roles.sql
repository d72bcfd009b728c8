-- One group role per process, each granted only what that process does (README,
-- "Database roles"). Every process logs in as its own login, a member of one of these;
-- the owner that migrates and the superuser bypass row-level security, these do not.
--
--   twofa_auth       accounts, usernames, logins: account-*, username-*, twofactor-*
--                    events (a login spends OTPs and recovery codes), their snapshots,
--                    login_throttle, its consumer's processed_events. Also
--                    `twofa accounts ...`.
--   twofa_enrolment  twofactor-* events and snapshots, enrolment_labels, its consumer's
--                    processed_events.
--   twofa_audit      reads events (`twofa audit rebuild`), writes audit.entries and its
--                    consumer's processed_events.
--   twofa_relay      reads events, writes relay_checkpoints.
--
-- twofa_app, the single group of before, stays as an empty role: granted nothing, so a
-- login still in it (the old twofa_service) can do nothing until it is moved to a group.

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['twofa_auth', 'twofa_enrolment', 'twofa_audit', 'twofa_relay']
    LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', name);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;  -- exists already
        END;
    END LOOP;
END
$$;

REVOKE ALL ON events, snapshots, relay_checkpoints, processed_events, enrolment_labels,
    login_throttle FROM twofa_app;
REVOKE ALL ON audit.entries FROM twofa_app;
REVOKE ALL ON SCHEMA audit FROM twofa_app;

-- Table-level grants (not per column): columns added later are covered.
GRANT SELECT, INSERT ON events TO twofa_auth, twofa_enrolment;
GRANT SELECT ON events TO twofa_audit, twofa_relay;
GRANT SELECT, INSERT, UPDATE ON snapshots TO twofa_auth, twofa_enrolment;
GRANT SELECT, INSERT ON processed_events TO twofa_auth, twofa_enrolment, twofa_audit;
GRANT SELECT, INSERT, UPDATE ON relay_checkpoints TO twofa_relay;
GRANT SELECT, INSERT, UPDATE ON enrolment_labels TO twofa_enrolment;
GRANT SELECT, INSERT, UPDATE, DELETE ON login_throttle TO twofa_auth;
GRANT USAGE ON SCHEMA audit TO twofa_audit;
GRANT SELECT, INSERT ON audit.entries TO twofa_audit;

-- Each writer appends only to the stream categories it owns; everyone granted SELECT
-- reads every event (the relay and audit publish and log all of them).
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS events_read ON events;
CREATE POLICY events_read ON events FOR SELECT
    TO twofa_auth, twofa_enrolment, twofa_audit, twofa_relay USING (true);
DROP POLICY IF EXISTS events_auth_appends ON events;
CREATE POLICY events_auth_appends ON events FOR INSERT TO twofa_auth
    WITH CHECK (stream_id LIKE 'account-%' OR stream_id LIKE 'username-%'
                OR stream_id LIKE 'twofactor-%');
DROP POLICY IF EXISTS events_enrolment_appends ON events;
CREATE POLICY events_enrolment_appends ON events FOR INSERT TO twofa_enrolment
    WITH CHECK (stream_id LIKE 'twofactor-%');

-- A role reads and writes only the snapshots of the streams it appends to, of the type
-- those streams are snapshotted as (shared/eventstore/snapshots.py); nobody deletes one.
ALTER TABLE snapshots ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS snapshots_auth ON snapshots;
CREATE POLICY snapshots_auth ON snapshots FOR ALL TO twofa_auth
    USING ((stream_id LIKE 'account-%' AND snapshot_type = 'account')
           OR (stream_id LIKE 'twofactor-%' AND snapshot_type = 'twofactor'))
    WITH CHECK ((stream_id LIKE 'account-%' AND snapshot_type = 'account')
                OR (stream_id LIKE 'twofactor-%' AND snapshot_type = 'twofactor'));
DROP POLICY IF EXISTS snapshots_enrolment ON snapshots;
CREATE POLICY snapshots_enrolment ON snapshots FOR ALL TO twofa_enrolment
    USING (stream_id LIKE 'twofactor-%' AND snapshot_type = 'twofactor')
    WITH CHECK (stream_id LIKE 'twofactor-%' AND snapshot_type = 'twofactor');

-- Consumer names are <prefix>.<group> (Settings.group): each role records only its own
-- group's handled events, so none can mark another's event as done.
ALTER TABLE processed_events ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS processed_auth ON processed_events;
CREATE POLICY processed_auth ON processed_events FOR ALL TO twofa_auth
    USING (consumer LIKE '%.auth-sessions') WITH CHECK (consumer LIKE '%.auth-sessions');
DROP POLICY IF EXISTS processed_enrolment ON processed_events;
CREATE POLICY processed_enrolment ON processed_events FOR ALL TO twofa_enrolment
    USING (consumer LIKE '%.enrolment-labels') WITH CHECK (consumer LIKE '%.enrolment-labels');
DROP POLICY IF EXISTS processed_audit ON processed_events;
CREATE POLICY processed_audit ON processed_events FOR ALL TO twofa_audit
    USING (consumer LIKE '%.audit') WITH CHECK (consumer LIKE '%.audit');
