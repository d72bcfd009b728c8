#!/bin/sh
# Runs once when the PostgreSQL container initialises its data directory: the group
# role the migrations grant to, and the services' login role, which owns nothing.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v pw="$TWOFA_SERVICE_DB_PASSWORD" <<'SQL'
CREATE ROLE twofa_app NOLOGIN;
CREATE ROLE twofa_service LOGIN PASSWORD :'pw' IN ROLE twofa_app;
SQL
