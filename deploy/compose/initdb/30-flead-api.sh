#!/bin/sh
# The HTTP API's login (python -m api): it may only read FLEAD's tables, once the schema's owner
# (the compose service `migrate`: python -m sinks.migrate … --reader flead_api) has made the
# schema and granted it that. A login of its own rather than Grafana's: either can be changed
# or revoked without the other, and the API's sessions are read-only besides.
#
# Run once by the PostgreSQL/TimescaleDB image on a fresh data directory
# (/docker-entrypoint-initdb.d), as POSTGRES_USER on POSTGRES_DB; also usable by hand with the
# usual PG* variables. API_DB_USER defaults to flead_api; API_DB_PASSWORD is required.
set -eu
: "${API_DB_PASSWORD:?API_DB_PASSWORD is not set}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v reader="${API_DB_USER:-flead_api}" -v password="$API_DB_PASSWORD" <<'SQL'
CREATE ROLE :"reader" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE;
ALTER ROLE :"reader" SET statement_timeout = '30s';
SQL
