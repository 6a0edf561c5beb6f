"""Least privilege in the database, on plain PostgreSQL and on PostgreSQL with TimescaleDB.

The schema's owner is a login that owns its database and nothing more (no superuser); it makes
the schema with ``python -m sinks.migrate --writer W --reader R``. The dataflow then writes as
the writer, which may only INSERT and SELECT, and Grafana reads as the reader, which may only
SELECT. A writer that finds the schema missing or out of date stops at start-up with one line
saying to run the migrate. Hostile strings, in device ids and everywhere else, go in as
parameters and come back byte for byte: through the sink, through a real replay, through plain
SELECTs with parameters, through the dashboard's queries as Grafana expands them and through
the HTTP API's queries.

Roles are the server's, not the database's: each test makes its own and drops them after.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import psycopg
import pytest
from psycopg import sql

from api import queries as api_queries
from sinks.database_rows import dead_letter_id, write_rows
from sinks.database_schema import TABLES, connect, prepare_database, schema_changes
from sinks.database_trends import TRENDS
from sinks.migrate import migrate
from tests.conftest import DATABASE_SERVERS
from tests.deploy.test_grafana import ALL, FilledDatabase, sql_queries
from tests.flead_runs import REPO, environment, flead_command

pytestmark = pytest.mark.integration

SECRETS = {"owner": "owner-s3cret", "writer": "writer-s3cret", "reader": "reader-s3cret"}
TRENDS_NAMES = [trend.name for trend in TRENDS]

# Strings that would change a query if they were ever pasted into its text, or that a careless
# encoding would change: quotes, SQL, placeholders of psycopg, libpq and Python, backslashes,
# control characters, bidirectional marks, unicode of every width, whitespace at the ends.
HOSTILE = [
    "'; DROP TABLE anomalies; --",
    "Robert'); DROP TABLE local_models;--",
    "' OR '1'='1",
    '"quoted" \\"escaped\\" `backticked`',
    "back\\slash \\\\ \\x41 \\u0041 \\n \\",
    "%s %(device_id)s %% %b {} {0}",
    "$1 $$ $tag$ :name ? ?::text",
    "\u202eevil\u202c \u200f\u200e \u2066isolate\u2069",
    "control \x01\x07\x08\t\n\r\x1b[31m\x7f\x9b",
    "日本語 ελληνικά 🚀 e\u0301 \ufeff \U0001f3f4\U000e0067\U000e0062\U000e007f",
    "  spaces at the ends  ",
    "",
    "a/../b:c@d.e_f-g",
    "/* comment */ -- comment",
    "x" * 1000,
]
# Ids the message validation accepts (letters, digits and _.:/@- only) that still look like SQL
# or paths: these reach every table through a real replay.
VALID_ODD_IDS = ["1--", "a:b@c/d.e_f-g", "NULL", "select", "x/../../etc/passwd", "A" * 128]
# Ids it refuses: their messages go to the dead letters, payload and all.
REFUSED_IDS = [
    "'; DROP TABLE anomalies; --",
    "Robert'); DROP TABLE local_models;--",
    '%s $1 \\ \\\\ "',
    "\u202eevil\u202c",
    "日本語 🚀",
    "tab\there",
]


@dataclass(frozen=True)
class Logins:
    """A database owned by a login of its own (not a superuser), and a writer and a reader
    login that may do nothing there yet."""

    server_url: str
    database: str
    owner: str
    writer: str
    reader: str

    def url(self, role: str) -> str:
        """The login's URL, with a password (the test servers trust 127.0.0.1 and ignore it)."""
        parts = urlsplit(self.server_url)
        name = getattr(self, role)
        return f"postgresql://{name}:{SECRETS[role]}@{parts.hostname}:{parts.port}/{self.database}"

    @property
    def timescaledb(self) -> bool:
        with connect(self.url("owner")) as conn:
            return conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0] == 1


@contextmanager
def logins(server_url: str, database: str | None = None) -> Iterator[Logins]:
    """Three logins, and ``database`` (made if ``None``) handed to the owner; all dropped after."""
    suffix = uuid.uuid4().hex[:8]
    found = Logins(server_url, database or f"lp_{suffix}", f"owner_{suffix}", f"writer_{suffix}", f"reader_{suffix}")
    with psycopg.connect(server_url, autocommit=True) as admin:
        for role in ("owner", "writer", "reader"):
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                    sql.Identifier(getattr(found, role)), sql.Literal(SECRETS[role])
                )
            )
        if database is None:
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(*map(sql.Identifier, (found.database, found.owner)))
            )
        else:
            admin.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(*map(sql.Identifier, (database, found.owner)))
            )
    try:
        yield found
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(found.database)))
            for role in (found.owner, found.writer, found.reader):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def roles(database, database_server) -> Iterator[Logins]:
    with logins(database_server.url, database.rsplit("/", 1)[1]) as found:
        yield found


def migrated(found: Logins, compress_after: str | None = "7 days", retain_for: str | None = None) -> list[str]:
    """The owner's migrate with both grants, in this process; its lines."""
    lines: list[str] = []
    migrate(found.url("owner"), compress_after, retain_for, found.writer, found.reader, lines.append)
    return lines


def run_migrate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = environment(REPO / "data" / "nab", REPO / "flead-out", FLEAD_DATABASE_URL=url)
    return subprocess.run(
        [sys.executable, "-m", "sinks.migrate", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def refused(conn: psycopg.Connection, statement: str) -> bool:
    """Whether the database refuses ``statement`` for a missing privilege (and not for another reason)."""
    try:
        with conn.transaction():
            conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


# --- one replay per database mode, written by the writer ------------------------------------


@dataclass(frozen=True)
class Replayed:
    logins: Logins
    migrate: subprocess.CompletedProcess[str]
    run: subprocess.CompletedProcess[str]
    out: Path

    def jsonl(self, table: str) -> list[dict]:
        return [orjson.loads(line) for line in (self.out / f"{table}.jsonl").read_bytes().splitlines()]

    @property
    def grafana(self) -> FilledDatabase:
        return FilledDatabase(self.logins.url("owner"), self.logins.url("reader"), self.logins.timescaledb)


def odd_input(nab_sample: Path, folder: Path) -> Path:
    """The NAB sample, and a JSON Lines file of devices with odd valid ids and of messages with refused ones."""
    shutil.copytree(nab_sample, folder)
    lines = [
        orjson.dumps(
            {"device_id": device, "timestamp": f"2014-05-01T00:{minute:02d}:00Z", "data": 10 + math.sin(minute / 5)}
        )
        for device in VALID_ODD_IDS
        for minute in range(60)
    ]
    lines += [
        orjson.dumps({"device_id": device, "timestamp": "2014-05-01T00:00:00Z", "data": 1}) for device in REFUSED_IDS
    ]
    lines.append(b'{"device_id": "raw \x01 control \x1b[0m in a string", "data": 1}')  # invalid JSON
    (folder / "odd.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder


@pytest.fixture(scope="module", params=list(DATABASE_SERVERS))
def replayed(request, nab_sample, tmp_path_factory) -> Iterator[Replayed]:
    """The owner migrates a fresh database (the real command), then the dataflow replays the NAB
    sample and the odd ids into it as the writer."""
    server = request.getfixturevalue(DATABASE_SERVERS[request.param])
    with logins(server.url) as found:
        migrated_by = run_migrate(found.url("owner"), "--writer", found.writer, "--reader", found.reader)
        assert migrated_by.returncode == 0, migrated_by.stderr
        work = tmp_path_factory.mktemp("least-privilege")
        out = work / "out"
        run = subprocess.run(
            flead_command(),
            cwd=REPO,
            env=environment(odd_input(nab_sample, work / "input"), out, FLEAD_DATABASE_URL=found.url("writer")),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert found.timescaledb == (request.param == "timescaledb")
        yield Replayed(found, migrated_by, run, out)


def test_the_owner_makes_the_schema_and_grants_the_roles_printing_one_line_each(replayed):
    found, printed = replayed.logins, replayed.migrate.stdout.splitlines()
    assert all(line.startswith("flead migrate: ") for line in printed), printed
    lines = [line.removeprefix("flead migrate: ") for line in printed]
    assert {f"created table {name}" for name in TABLES} <= set(lines)
    if found.timescaledb:
        assert {"created the timescaledb extension", "made anomalies a hypertable in chunks of 7 days"} <= set(lines)
        assert "set the compression policy of anomalies: 7 days" in lines
        assert {f"created the continuous aggregate {name}" for name in TRENDS_NAMES} <= set(lines)
    else:
        assert {f"created the view {name}" for name in TRENDS_NAMES} <= set(lines)
    assert [line for line in lines if line.startswith("granted ")] == [
        f"granted {found.writer} CONNECT on database {found.database}, USAGE on schema public, INSERT and SELECT on "
        f"{', '.join(TABLES)}, SELECT on {', '.join(TRENDS_NAMES)}",
        f"granted {found.reader} CONNECT on database {found.database}, USAGE on schema public, SELECT on "
        f"{', '.join(TABLES)}, SELECT on {', '.join(TRENDS_NAMES)}",
    ]
    mode = "TimescaleDB hypertables" if found.timescaledb else "plain PostgreSQL tables"
    assert lines[-1].startswith(f"database postgresql://{found.owner}:***@") and mode in lines[-1]
    assert SECRETS["owner"] not in replayed.migrate.stdout + replayed.migrate.stderr
    with connect(found.url("owner")) as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relname = ANY(%s)",
            (list(TABLES) + TRENDS_NAMES,),
        ).fetchall()
    assert owners == [(found.owner,)]


def test_the_writers_replay_arrives_in_every_table_as_in_the_json_lines_files(replayed):
    found = replayed.logins
    assert f"{found.writer}:***@" in replayed.run.stderr and SECRETS["writer"] not in replayed.run.stderr
    with connect(found.url("writer")) as conn:
        for table in TABLES:
            stored = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
            assert stored == len(replayed.jsonl(table)) > 0, table
        devices = {row[0] for row in conn.execute("SELECT DISTINCT device_id FROM local_models")}
    assert devices == {row["device_id"] for row in replayed.jsonl("local_models")}
    assert set(VALID_ODD_IDS) <= devices


def test_refused_ids_reach_the_dead_letters_byte_for_byte(replayed):
    columns = ("source", "reason", "detail", "payload")
    written = {tuple(row[column] for column in columns) for row in replayed.jsonl("dead_letters")}
    with connect(replayed.logins.url("reader")) as conn:
        stored = set(conn.execute("SELECT source, reason, detail, payload FROM dead_letters").fetchall())
        for device in REFUSED_IDS:  # the payload is the message exactly as it came
            payload = orjson.dumps({"device_id": device, "timestamp": "2014-05-01T00:00:00Z", "data": 1}).decode()
            found = conn.execute("SELECT reason FROM dead_letters WHERE payload = %s", (payload,)).fetchall()
            assert found == [("invalid_device_id",)], device
        control = conn.execute("SELECT reason FROM dead_letters WHERE payload LIKE %s", ("%\x01 control \x1b%",))
        assert control.fetchall() == [("invalid_json",)]
    assert stored == written


def test_every_dashboard_query_runs_as_the_reader_and_the_device_variable_takes_odd_ids(replayed):
    grafana = replayed.grafana
    with connect(grafana.reader_url) as conn:
        for query in sql_queries():
            assert conn.execute(grafana.query(query, ALL)).fetchall(), query
        listed = next(q for q in sql_queries() if q.where == "variable device")
        assert set(VALID_ODD_IDS) <= {row[0] for row in conn.execute(grafana.query(listed))}
        training = next(q for q in sql_queries() if q.where == "Top devices by training count")
        for device in VALID_ODD_IDS:
            assert [row[0] for row in conn.execute(grafana.query(training, [device]))] == [device]


def test_the_writer_may_insert_and_select_and_nothing_else(replayed):
    found = replayed.logins
    with connect(found.url("writer")) as conn:
        for table in TABLES:
            assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0] > 0
        refusals = [
            "UPDATE anomalies SET score = 0",
            "DELETE FROM local_models",
            "TRUNCATE dead_letters",
            "DROP TABLE federated_models",
            "ALTER TABLE anomalies ADD COLUMN extra int",
            "CREATE INDEX extra_idx ON anomalies (score)",
            "CREATE TABLE scratch (x int)",
            "CREATE VIEW scratch AS SELECT 1",
            "CREATE SCHEMA scratch",
            "DROP VIEW training_hourly" if not found.timescaledb else "DROP MATERIALIZED VIEW training_hourly",
        ]
        if found.timescaledb:
            refusals += [
                "SELECT add_retention_policy('anomalies', INTERVAL '1 day')",
                "SELECT remove_compression_policy('anomalies')",
                "SELECT drop_chunks('anomalies', older_than => now())",
                "SELECT compress_chunk(c) FROM show_chunks('anomalies') c",
            ]
        allowed = [statement for statement in refusals if not refused(conn, statement)]
    assert not allowed, f"the writer may: {allowed}"
    with connect(found.url("owner")) as conn:
        assert conn.execute("SELECT count(*) FROM anomalies").fetchone()[0] == len(replayed.jsonl("anomalies"))


def test_the_reader_may_only_select(replayed):
    with connect(replayed.logins.url("reader")) as conn:
        for relation in [*TABLES, *TRENDS_NAMES]:
            conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier(relation))).fetchall()
        statements = [
            "INSERT INTO dead_letters (id, received_at) VALUES (1, now())",
            "UPDATE anomalies SET score = 0",
            "DELETE FROM local_models",
            "TRUNCATE model_evaluations",
            "CREATE TABLE scratch (x int)",
        ]
        allowed = [statement for statement in statements if not refused(conn, statement)]
    assert not allowed, f"the reader may: {allowed}"


# --- start-up as the writer -----------------------------------------------------------------


def test_a_writer_on_an_empty_database_stops_at_start_up_with_one_line_saying_to_run_the_migrate(
    roles, nab_sample, tmp_path
):
    env = environment(nab_sample, tmp_path, FLEAD_DATABASE_URL=roles.url("writer"))
    run = subprocess.run(flead_command(), cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"flead: cannot start: the database postgresql://{roles.writer}:***@"), run.stderr
    assert "(create table local_models and " in last and "permission denied for schema public" in last
    assert last.endswith("run `python -m sinks.migrate` with the owner's URL in FLEAD_DATABASE_URL, then start again")
    assert "Traceback" not in run.stderr and SECRETS["writer"] not in run.stderr + run.stdout
    with connect(roles.url("owner")) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname = ANY(%s)", (list(TABLES),)).fetchone()[0] == 0


def test_a_writer_without_the_grants_is_told_the_migrate_that_gives_them(roles):
    migrate(roles.url("owner"), "7 days", None, report=lambda line: None)  # no --writer
    with pytest.raises(RuntimeError) as raised:
        prepare_database(roles.url("writer"), "7 days", None)
    assert str(raised.value).startswith(f"role {roles.writer} may not insert into {', '.join(TABLES)} in ")
    assert f"run `python -m sinks.migrate --writer {roles.writer}` with the owner's URL" in str(raised.value)


def test_a_writer_on_a_schema_an_earlier_build_made_stops_until_the_owner_migrates_again(roles, database_mode):
    migrated(roles)
    if database_mode == "timescaledb":  # a retention setting the owner has not put in force
        with pytest.raises(RuntimeError, match=r"\(set the retention policy of local_models: 30 days and 6 more\)"):
            prepare_database(roles.url("writer"), "7 days", "30 days")
    with connect(roles.url("owner")) as conn:
        conn.execute("ALTER TABLE federated_models DROP COLUMN threshold")  # as before the calibrated score
    with pytest.raises(RuntimeError, match=r"\(add column federated_models\.threshold\) and this role may not"):
        prepare_database(roles.url("writer"), "7 days", None)
    assert "added column federated_models.threshold" in migrated(roles)
    assert prepare_database(roles.url("writer"), "7 days", None) == database_mode
    with connect(roles.url("writer")) as conn:
        assert schema_changes(conn, "7 days", None) == []


def test_a_role_that_may_create_still_creates_the_schema_at_start_up(database, database_mode):
    assert prepare_database(database, "7 days", None) == database_mode  # the fixture's superuser
    with connect(database) as conn:
        assert schema_changes(conn, "7 days", None) == []


# --- the migrate command --------------------------------------------------------------------


def test_the_migrate_takes_create_on_the_schema_from_public(roles):
    with psycopg.connect(roles.server_url.rsplit("/", 1)[0] + f"/{roles.database}", autocommit=True) as admin:
        admin.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")  # PostgreSQL 14's default
    assert "revoked CREATE on schema public from PUBLIC" in migrated(roles)
    with connect(roles.url("writer")) as conn:
        assert refused(conn, "CREATE TABLE scratch (x int)")


def test_the_migrate_fails_with_one_line_without_the_password(roles):
    run = run_migrate(roles.url("writer"))  # not the owner: it may not create
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1
    assert run.stderr.startswith(f"flead migrate: cannot migrate the database postgresql://{roles.writer}:***@")
    assert "permission denied for schema public" in run.stderr and SECRETS["writer"] not in run.stderr + run.stdout
    for args, message in [
        (("--writer", roles.owner), f"role {roles.owner} is a superuser, or has the privileges of {roles.owner}"),
        (("--reader", "nobody_at_all"), "role nobody_at_all does not exist: create it first"),
    ]:
        run = run_migrate(roles.url("owner"), *args)
        assert run.returncode == 1 and run.stderr.startswith(f"flead migrate: {message}"), run.stderr
        assert len(run.stderr.strip().splitlines()) == 1
    unreachable = roles.url("owner").replace(f":{urlsplit(roles.server_url).port}/", ":1/")
    run = run_migrate(unreachable)
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1
    assert run.stderr.startswith(f"flead migrate: cannot reach the database postgresql://{roles.owner}:***@")
    assert SECRETS["owner"] not in run.stderr + run.stdout


def test_the_migrate_grants_every_reader_it_is_given(roles):
    """``--reader`` repeats: Grafana's login and the HTTP API's each get SELECT, and only that."""
    second = f"{roles.reader}_api"
    with psycopg.connect(roles.server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(second)))
    try:
        run = run_migrate(roles.url("owner"), "--reader", roles.reader, "--reader", second)
        assert run.returncode == 0, run.stderr
        granted = [line.split()[3] for line in run.stdout.splitlines() if line.startswith("flead migrate: granted ")]
        assert granted == [roles.reader, second]
        with connect(roles.url("owner")) as conn:
            for role in (roles.reader, second):
                may = {
                    privilege
                    for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE")
                    if conn.execute("SELECT has_table_privilege(%s, 'anomalies', %s)", (role, privilege)).fetchone()[0]
                }
                assert may == {"SELECT"}, role
    finally:
        in_database = roles.server_url.rsplit("/", 1)[0] + f"/{roles.database}"
        with psycopg.connect(in_database, autocommit=True) as admin:  # its grants there first
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(second)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(second)))


# --- hostile strings through the sink -------------------------------------------------------


def hostile_rows() -> list[tuple[str, dict]]:
    rows = []
    for index, text in enumerate(HOSTILE):
        stamp = f"2014-06-01T{index:02d}:00:00.000Z"
        rows.append(
            (
                "anomalies",
                {
                    "device_id": text,
                    "timestamp": stamp,
                    "values": {text: 1.5},
                    "field": text,
                    "z_score": 4.0,
                    "severity": "critical",
                    "score": 0.9,
                    "global_version": 1,
                    "explanation": [{"evidence": text, "field": text, "log10_tail": -4.0}],
                },
            )
        )
        rows.append(
            ("local_models", {"device_id": text, "model_version": 1, "weights": {text: 0.5}, "created_at": stamp})
        )
        rows.append(
            (
                "dead_letters",
                {"received_at": stamp, "reason": text, "detail": text, "source": f"{index}:{text}", "payload": text},
            )
        )
    return rows


def test_hostile_strings_round_trip_byte_for_byte_through_the_sink_the_dashboard_and_the_api(roles):
    migrated(roles)
    rows = hostile_rows()
    with connect(roles.url("writer")) as conn:
        assert write_rows(conn, rows).written == {
            "anomalies": len(HOSTILE),
            "local_models": len(HOSTILE),
            "dead_letters": len(HOSTILE),
        }
        assert write_rows(conn, rows).rejected == []  # again: nothing twice, nothing refused
    with connect(roles.url("reader")) as conn:
        assert sorted(row[0] for row in conn.execute("SELECT device_id FROM anomalies")) == sorted(HOSTILE)
        for table, row in rows:
            if table == "anomalies":
                stored = conn.execute(
                    'SELECT device_id, field, "values", explanation FROM anomalies WHERE device_id = %s',
                    (row["device_id"],),
                ).fetchall()
                assert stored == [(row["device_id"], row["field"], row["values"], row["explanation"])]
            elif table == "local_models":
                stored = conn.execute("SELECT weights FROM local_models WHERE device_id = %s", (row["device_id"],))
                assert stored.fetchall() == [(row["weights"],)]
            else:
                stored = conn.execute(
                    "SELECT reason, detail, source, payload FROM dead_letters WHERE id = %s", (dead_letter_id(row),)
                ).fetchall()
                assert stored == [(row["reason"], row["detail"], row["source"], row["payload"])]
        trend = conn.execute("SELECT device_id FROM anomalies_hourly WHERE device_id = ANY(%s)", (HOSTILE,)).fetchall()
        assert sorted(device for (device,) in trend) == sorted(HOSTILE)
    grafana = FilledDatabase(roles.url("owner"), roles.url("reader"), roles.timescaledb)
    panels = {query.where: query for query in sql_queries()}
    with connect(grafana.reader_url) as conn:
        for text in HOSTILE:  # the device variable set to the string, quoted as Grafana quotes it
            critical = conn.execute(grafana.query(panels["Latest critical anomalies"], [text])).fetchall()
            assert [(row[1], row[2]) for row in critical] == [(text, text)], repr(text)
            devices = conn.execute(grafana.query(panels["Most anomalous devices"], [text])).fetchall()
            assert [row[0] for row in devices] == [text], repr(text)
    with connect(roles.url("reader")) as conn:  # the HTTP API's queries (api/queries.py), as the reader
        assert sorted(row["device_id"] for row in api_queries.devices(conn, limit=100)) == sorted(HOSTILE)
        for text in HOSTILE:
            device = api_queries.device(conn, text)
            assert device["device_id"] == text and device["latest_local_model"]["weights"] == {text: 0.5}, repr(text)
            assert [(row["device_id"], row["field"]) for row in device["recent_anomalies"]] == [(text, text)]
            assert [row["explanation"] for row in api_queries.anomalies(conn, 10, device_id=text)] == [
                [{"evidence": text, "field": text, "log10_tail": -4.0}]
            ]
    with connect(roles.url("owner")) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname = ANY(%s)", (list(TABLES),)).fetchone()[0] == 5


def test_a_nul_character_is_the_one_change_and_it_is_documented(roles):
    """PostgreSQL text cannot hold NUL: the sink writes U+FFFD instead (``sinks/database_rows.py``)."""
    migrated(roles)
    row = {
        "received_at": "2014-06-01T00:00:00.000Z",
        "reason": "r",
        "detail": "a\x00b",
        "source": "s",
        "payload": "\x00",
    }
    with connect(roles.url("writer")) as conn:
        assert write_rows(conn, [("dead_letters", row)]).written == {"dead_letters": 1}
        stored = conn.execute("SELECT detail, payload FROM dead_letters").fetchall()
    assert stored == [("a\ufffdb", "\ufffd")]
