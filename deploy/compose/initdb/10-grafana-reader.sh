#!/bin/sh
# A read-only login for Grafana: SELECT on every table that the schema owner creates in
# schema public, now or later (python -m sinks.migrate creates them), and nothing else.
# Grafana runs whatever SQL a dashboard editor types, so it must not connect as the owner.
#
# Run once by the PostgreSQL/TimescaleDB image on a fresh data directory
# (/docker-entrypoint-initdb.d), as POSTGRES_USER on POSTGRES_DB; also usable by hand with the
# usual PG* variables. GRAFANA_DB_USER defaults to grafana; GRAFANA_DB_PASSWORD is required.
set -eu
: "${GRAFANA_DB_PASSWORD:?GRAFANA_DB_PASSWORD is not set}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v reader="${GRAFANA_DB_USER:-grafana}" -v password="$GRAFANA_DB_PASSWORD" -v owner="$POSTGRES_USER" \
  -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"reader" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE;
ALTER ROLE :"reader" SET statement_timeout = '30s';
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"reader";
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
SQL
