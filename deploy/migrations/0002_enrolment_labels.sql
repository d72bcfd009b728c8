-- The enrolment service's read model: the email shown as the authenticator app label.
-- A label is not a security decision, so this projection may lag; rebuild it any time
-- from the event store or the topic.
CREATE TABLE enrolment_labels (
    account_id  text        PRIMARY KEY,
    email       text        NOT NULL,
    position    bigint      NOT NULL,  -- store position of the event it reflects
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

GRANT SELECT, INSERT, UPDATE, DELETE ON enrolment_labels TO twofa_app;
