#!/bin/sh
# Runs once, when the postgres image initialises an empty data directory (compose mounts
# this folder on /docker-entrypoint-initdb.d). It creates the group role the migrations
# grant to, twofa_app, and the services' login role, twofa_service, which owns nothing:
# the schema belongs to POSTGRES_USER (twofa_owner), who runs `twofa migrate`.
# Placeholder passwords from deploy/secrets.env.example are refused, and nothing is
# echoed. A later password change is `ALTER ROLE ... PASSWORD` plus the env file.
set -eu

: "${POSTGRES_SERVICE_PASSWORD:?POSTGRES_SERVICE_PASSWORD is not set}"
for password in "${POSTGRES_PASSWORD:-}" "$POSTGRES_SERVICE_PASSWORD"; do
    case "$password" in
        "" | *REPLACE_ME*)
            echo "twofa: refusing an empty or placeholder database password" >&2
            exit 1
            ;;
    esac
done

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v pw="$POSTGRES_SERVICE_PASSWORD" <<'SQL'
CREATE ROLE twofa_app NOLOGIN;
CREATE ROLE twofa_service LOGIN PASSWORD :'pw' IN ROLE twofa_app;
SQL
