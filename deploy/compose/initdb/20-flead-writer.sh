#!/bin/sh
# The dataflow's login: it may only insert into FLEAD's tables and read them, once the schema's
# owner (POSTGRES_USER, the compose service `migrate`: python -m sinks.migrate --writer …) has
# made the schema and granted it that. It is made here, by the database image's superuser,
# because creating a login needs CREATEROLE, which neither the owner nor the dataflow has.
#
# Run once by the PostgreSQL/TimescaleDB image on a fresh data directory
# (/docker-entrypoint-initdb.d), as POSTGRES_USER on POSTGRES_DB; also usable by hand with the
# usual PG* variables. WRITER_DB_USER defaults to flead_writer; WRITER_DB_PASSWORD is required.
set -eu
: "${WRITER_DB_PASSWORD:?WRITER_DB_PASSWORD is not set}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v writer="${WRITER_DB_USER:-flead_writer}" -v password="$WRITER_DB_PASSWORD" <<'SQL'
CREATE ROLE :"writer" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE;
SQL
