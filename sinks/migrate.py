"""The database's schema, made by its owner, and the privileges of the roles that use it.

    FLEAD_DATABASE_URL=postgresql://OWNER:…@HOST/DB python -m sinks.migrate --writer flead_writer \
        --reader grafana --reader flead_api

Run with the schema owner's URL, it creates or updates the schema as a start-up with that URL
would (``sinks/database_schema.py``: tables, TimescaleDB hypertables, their compression and
retention policies from ``FLEAD_DB_COMPRESS_AFTER`` and ``FLEAD_DB_RETAIN_FOR``, the hourly
trends), then gives

- ``--writer ROLE`` (the dataflow's login) ``INSERT`` and ``SELECT`` on the tables and
  ``SELECT`` on the trends,
- ``--reader ROLE`` (Grafana's login, the HTTP API's; repeatable) ``SELECT`` on the tables
  and the trends,

all ``CONNECT`` on the database and ``USAGE`` on the schema, and nothing more: the roles' other
privileges on these relations are revoked, ``CREATE`` on the schema is taken from ``PUBLIC``
(PostgreSQL 15's default already), and the command checks what each role may do in the end.
The roles must exist: making logins needs ``CREATEROLE``, which the owner does not need.

It prints one line per thing it did, and exits 1 with one line (the URL's password masked) when
something fails. Running it again changes nothing and says so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence

import psycopg
from psycopg import sql

from dataflows.config import ConfigError, load_settings
from instrumentation.masking import masked_url
from sinks.database_schema import (
    TABLES,
    connect,
    ensure_schema,
    first_line,
    mode_description,
    schema_changes,
    schema_lock,
)
from sinks.database_trends import TRENDS

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
WRITER = ("INSERT", "SELECT")
READER = ("SELECT",)


def migrate(
    url: str,
    compress_after: str | None,
    retain_for: str | None,
    writer: str | None = None,
    reader: str | Sequence[str] | None = None,
    report: Callable[[str], None] = print,
    timeout: float = 10.0,
) -> None:
    """Create or update the schema and grant the roles, reporting one line per thing done.

    ``reader`` is one read-only role or several.

    Raises ``RuntimeError`` with one line, the URL's password masked, when anything fails.
    """
    try:
        conn = connect(url, timeout)
    except psycopg.ProgrammingError:
        raise RuntimeError(f"{masked_url(url)} is not a PostgreSQL URL") from None
    except psycopg.Error as exc:
        raise RuntimeError(f"cannot reach the database {masked_url(url)}: {first_line(exc)}") from None
    with conn:
        try:
            with schema_lock(conn):  # a start-up waits for the migrate instead of finding half a schema
                changes = schema_changes(conn, compress_after, retain_for)
                if changes:
                    ensure_schema(conn, compress_after, retain_for)
                    left = schema_changes(conn, compress_after, retain_for)
                    if left:
                        raise RuntimeError(f"the schema still needs to {left[0]} after the migrate")
                for change in changes:
                    report(change.done)
                if not changes:
                    report("the schema is complete and current")
                readers = (reader,) if isinstance(reader, str) else tuple(reader or ())
                grants = [(writer, WRITER)] if writer is not None else []
                for role, privileges in grants + [(role, READER) for role in readers]:
                    for line in _grant(conn, role, privileges):
                        report(line)
            mode = "timescaledb" if _has_timescaledb(conn) else "postgresql"
            report(f"database {masked_url(url)}: {mode_description(conn, mode, compress_after, retain_for)}")
        except psycopg.Error as exc:
            raise RuntimeError(f"cannot migrate the database {masked_url(url)}: {first_line(exc)}") from None


def _has_timescaledb(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')").fetchone()[0]


def _grant(conn: psycopg.Connection, role: str, privileges: tuple[str, ...]) -> list[str]:
    """Give ``role`` exactly ``privileges`` on the tables and ``SELECT`` on the trends, then check it."""
    found = conn.execute(
        "SELECT rolsuper, pg_has_role(rolname, current_user, 'USAGE') FROM pg_roles WHERE rolname = %s", (role,)
    ).fetchone()
    if found is None:
        raise RuntimeError(f"role {role} does not exist: create it first (CREATE ROLE … LOGIN PASSWORD …)")
    if found[0] or found[1]:
        raise RuntimeError(
            f"role {role} is a superuser, or has the privileges of {conn.info.user}, the schema's owner: "
            "give it a login of its own"
        )
    database, schema = conn.execute("SELECT current_database(), current_schema()").fetchone()
    lines = []
    who, tables, trends = sql.Identifier(role), _names(TABLES), _names(trend.name for trend in TRENDS)
    with conn.transaction():
        if conn.execute("SELECT has_schema_privilege('public', %s, 'CREATE')", (schema,)).fetchone()[0]:
            conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(schema)))
            lines.append(f"revoked CREATE on schema {schema} from PUBLIC")
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), who))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), who))
        conn.execute(sql.SQL("REVOKE ALL ON TABLE {}, {} FROM {}").format(tables, trends, who))
        granted = sql.SQL(", ").join(map(sql.SQL, privileges))
        conn.execute(sql.SQL("GRANT {} ON TABLE {} TO {}").format(granted, tables, who))
        conn.execute(sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(trends, who))
    _check_role(conn, role, database, schema, privileges)
    lines.append(
        f"granted {role} CONNECT on database {database}, USAGE on schema {schema}, {' and '.join(privileges)} on "
        f"{', '.join(TABLES)}, SELECT on {', '.join(trend.name for trend in TRENDS)}"
    )
    return lines


def _names(names: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(map(sql.Identifier, names))


def _check_role(conn: psycopg.Connection, role: str, database: str, schema: str, privileges: tuple[str, ...]) -> None:
    """What ``role`` may do in the end, through ``PUBLIC`` and the roles it belongs to as well."""
    expected = {name: set(privileges) for name in TABLES} | {trend.name: {"SELECT"} for trend in TRENDS}
    for relation, allowed in expected.items():
        for privilege in TABLE_PRIVILEGES:
            held = conn.execute("SELECT has_table_privilege(%s, %s, %s)", (role, relation, privilege)).fetchone()[0]
            if held != (privilege in allowed):
                raise RuntimeError(
                    f"role {role} {'still may' if held else 'may not'} {privilege} on {relation} after the grants "
                    "(through PUBLIC or a role it belongs to): change that, then migrate again"
                )
    if conn.execute("SELECT has_schema_privilege(%s, %s, 'CREATE')", (role, schema)).fetchone()[0]:
        raise RuntimeError(f"role {role} may still create in schema {schema}: revoke that, then migrate again")
    if conn.execute("SELECT has_database_privilege(%s, %s, 'CREATE')", (role, database)).fetchone()[0]:
        raise RuntimeError(f"role {role} may create schemas in database {database}: revoke that, then migrate again")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sinks.migrate",
        description="Create or update FLEAD's schema with the owner's FLEAD_DATABASE_URL, and grant the roles "
        "of the dataflow, of Grafana and of the HTTP API.",
    )
    parser.add_argument("--writer", metavar="ROLE", help="the dataflow's role: INSERT and SELECT on the tables")
    parser.add_argument(
        "--reader",
        metavar="ROLE",
        action="append",
        help="a read-only role (Grafana, the HTTP API): SELECT on the tables; repeat for several",
    )
    args = parser.parse_args(argv)
    try:
        database = load_settings().database
    except ConfigError as exc:
        sys.exit(f"flead migrate: bad setting: {exc}")
    if database is None:
        sys.exit("flead migrate: FLEAD_DATABASE_URL is empty: set it to the schema owner's URL")
    try:
        migrate(
            database.url,
            database.compress_after,
            database.retain_for,
            args.writer,
            args.reader,
            lambda line: print(f"flead migrate: {line}", flush=True),
        )
    except RuntimeError as exc:
        sys.exit(f"flead migrate: {exc}")


if __name__ == "__main__":
    main()
