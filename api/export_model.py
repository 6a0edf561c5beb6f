"""A global version as one model file (``operators/model_file.py``), from the database.

    FLEAD_DATABASE_URL=postgresql://reader:…@db/flead python -m api.export_model latest --out model.json

:func:`global_model_document` makes the file for this command and for ``GET
/models/global/{version}/download``: the version's ``federated_models`` row as the dataflow
wrote it (``GlobalModel.as_row``), the lineage the API shows for it (``api/queries.py``), and the
settings of :data:`api.settings.MODEL_SETTINGS` that the exporter's environment sets. Another
deployment starts from the file with ``FLEAD_INITIAL_MODEL=path``.

The command prints one line naming the file it wrote; an unknown version, a database it cannot
read or a file it cannot write ends it with one line on stderr (the URL's password masked) and
exit code 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from api import queries
from api.settings import ConfigError, load_database_url, model_settings
from instrumentation.masking import masked_url
from sinks.database_schema import first_line


def file_name(version: int) -> str:
    """The file's name as the API offers it.

    >>> file_name(248)
    'flead-global-v248.json'
    """
    return f"flead-global-v{version}.json"


def _iso(moment: datetime) -> str:
    """A time as ``GlobalModel.as_row`` writes it: UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def global_model_document(
    conn: psycopg.Connection, version: int | None, settings: dict[str, str]
) -> dict[str, Any] | None:
    """The model file of ``version`` (the newest when ``None``); ``None`` when there is no such version."""
    found = queries.global_model(conn, version)
    if found is None:
        return None
    row = queries.federated_row(conn, found["global_version"])
    if row is None:  # removed between the two reads
        return None
    row["created_at"] = _iso(row["created_at"])
    # Imported here: the model's module brings River and NumPy, which the API's other routes do
    # not need, and a start-up without them is a second faster.
    from operators.model_file import model_document

    return model_document(row, found["lineage"], settings)


def document_bytes(document: dict[str, Any]) -> bytes:
    """The file's bytes, as ``operators.model_file.write_model_file`` writes them (the API sends
    these; the tests hold the two to the same bytes)."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def _version(text: str) -> int | None:
    if text == "latest":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is neither a version number nor latest")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m api.export_model",
        description="Write a global version of FLEAD_DATABASE_URL's federated_models as a model file "
        "(what FLEAD_INITIAL_MODEL starts a deployment from).",
    )
    parser.add_argument("version", type=_version, help="a global version number, or latest")
    parser.add_argument("--out", type=Path, help="the file to write (default: flead-global-v<N>.json here)")
    args = parser.parse_args(argv)
    try:
        url = load_database_url()
    except ConfigError as exc:
        sys.exit(f"flead export: bad setting: {exc}")
    options = "-c default_transaction_read_only=on -c statement_timeout=30000 -c TimeZone=UTC"
    try:
        with psycopg.connect(
            url, autocommit=True, connect_timeout=5, application_name="flead-export", options=options
        ) as conn:
            document = global_model_document(conn, args.version, model_settings(os.environ))
    except psycopg.errors.UndefinedTable:
        sys.exit(f"flead export: the database {masked_url(url)} has no FLEAD tables yet")
    except psycopg.Error as exc:
        sys.exit(f"flead export: cannot read the database {masked_url(url)}: {first_line(exc)}")
    if document is None:
        wanted = "global version yet" if args.version is None else f"global version {args.version}"
        sys.exit(f"flead export: no {wanted} in the database {masked_url(url)}")
    version = document["model"]["global_version"]
    path = args.out if args.out is not None else Path(file_name(version))
    from operators.model_file import write_model_file  # loaded already, by global_model_document

    try:
        write_model_file(path, document)
    except OSError as exc:
        sys.exit(f"flead export: cannot write {path}: {exc.strerror or exc}")
    print(f"flead export: wrote global version {version} to {path}")


if __name__ == "__main__":
    main()
