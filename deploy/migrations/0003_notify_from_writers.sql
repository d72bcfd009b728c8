-- A NOTIFY inside every appending transaction serialises all commits on the server's
-- notification lock (including their WAL flush). Writers now send one coalesced
-- notification after their appends instead (shared/notify.py); the relay still polls.
DROP TRIGGER events_notify_append ON events;
DROP FUNCTION events_notify();
