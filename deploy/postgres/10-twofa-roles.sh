#!/bin/sh
# Runs once, when the postgres image initialises an empty data directory (compose mounts
# this folder on /docker-entrypoint-initdb.d). It creates the group roles the migrations
# grant to (twofa_auth, twofa_enrolment, twofa_audit, twofa_relay; migration 0009) and
# one login per process in its group, each owning nothing: the schema belongs to
# POSTGRES_USER (twofa_owner), who runs `twofa migrate`. Placeholder passwords from
# deploy/secrets.env.example are refused, and nothing is echoed. A later password
# change is `ALTER ROLE ... PASSWORD` plus the env file.
set -eu

: "${POSTGRES_AUTH_PASSWORD:?POSTGRES_AUTH_PASSWORD is not set}"
: "${POSTGRES_ENROLMENT_PASSWORD:?POSTGRES_ENROLMENT_PASSWORD is not set}"
: "${POSTGRES_AUDIT_PASSWORD:?POSTGRES_AUDIT_PASSWORD is not set}"
: "${POSTGRES_RELAY_PASSWORD:?POSTGRES_RELAY_PASSWORD is not set}"
for password in "${POSTGRES_PASSWORD:-}" "$POSTGRES_AUTH_PASSWORD" \
    "$POSTGRES_ENROLMENT_PASSWORD" "$POSTGRES_AUDIT_PASSWORD" "$POSTGRES_RELAY_PASSWORD"; do
    case "$password" in
        "" | *REPLACE_ME*)
            echo "twofa: refusing an empty or placeholder database password" >&2
            exit 1
            ;;
    esac
done

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v auth="$POSTGRES_AUTH_PASSWORD" -v enrolment="$POSTGRES_ENROLMENT_PASSWORD" \
     -v audit="$POSTGRES_AUDIT_PASSWORD" -v relay="$POSTGRES_RELAY_PASSWORD" <<'SQL'
CREATE ROLE twofa_auth NOLOGIN;
CREATE ROLE twofa_enrolment NOLOGIN;
CREATE ROLE twofa_audit NOLOGIN;
CREATE ROLE twofa_relay NOLOGIN;
CREATE ROLE twofa_auth_service LOGIN PASSWORD :'auth' IN ROLE twofa_auth;
CREATE ROLE twofa_enrolment_service LOGIN PASSWORD :'enrolment' IN ROLE twofa_enrolment;
CREATE ROLE twofa_audit_service LOGIN PASSWORD :'audit' IN ROLE twofa_audit;
CREATE ROLE twofa_relay_service LOGIN PASSWORD :'relay' IN ROLE twofa_relay;
SQL
