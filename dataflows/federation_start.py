"""Which global model a Kafka run's federation goes on from, the same on every resume.

A run that reads Kafka goes on from the newest global version on its topic, so that its
versions follow the ones already there. A run resumed from a recovery store must go on from
the model its first start took instead: the topic now also holds the versions the run made
before it stopped, and a resume whose FedAvg has no snapshot yet (it stopped before FedAvg's
state was first committed) would otherwise number the versions it makes again after them,
leaving a gap that is never written. So the first start with a recovery store keeps its
starting model in a file beside the store, and every later start with that store reads it.

The file belongs to the store it was written for: it names the store's partitions by their
creation times (Bytewax's ``parts`` table), so a store made again in the same directory is a
first start again. Back up the whole recovery directory, this file with the partitions.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import orjson

from operators.fedavg import GlobalModel

log = logging.getLogger(__name__)

START_FILE = "flead-federation-start.json"


def recovery_directory(argv: Sequence[str], environ: Mapping[str, str]) -> Path | None:
    """The recovery store ``python -m bytewax.run`` was given (``-r``/``--recovery-directory``,
    or ``BYTEWAX_RECOVERY_DIRECTORY`` as Bytewax itself reads it); ``None`` without one.

    >>> recovery_directory(["dataflows.flead", "-r", "store", "-s", "5"], {})
    PosixPath('store')
    >>> recovery_directory(["dataflows.flead", "--recovery-directory=store"], {}) is not None
    True
    >>> recovery_directory(["dataflows.flead"], {"BYTEWAX_RECOVERY_DIRECTORY": "/var/store"})
    PosixPath('/var/store')
    >>> recovery_directory(["dataflows.flead", "-w", "2"], {}) is None
    True
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("-r", "--recovery-directory", default=environ.get("BYTEWAX_RECOVERY_DIRECTORY"))
    known, _ = parser.parse_known_args(list(argv))
    return None if known.recovery_directory is None else Path(known.recovery_directory)


def store_identity(directory: Path) -> list[list[object]]:
    """The store's partitions as ``[index, created_at]`` pairs, which a store made again differs in."""
    identity: list[list[object]] = []
    for part in sorted(directory.glob("part-*.sqlite3")):
        with contextlib.closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True)) as store:
            parts = store.execute("SELECT part_index, created_at FROM parts")
            identity.extend([index, created] for index, created in parts)
    return sorted(identity)


def federation_start(directory: Path | None, newest_on_topic: Callable[[], GlobalModel | None]) -> GlobalModel | None:
    """The global model to go on from: ``newest_on_topic()`` without a recovery store or on the
    store's first start (then kept in its :data:`START_FILE`), the kept one on a resume. A
    directory that is not there is left to Bytewax, which stops with its own message."""
    if directory is None or not directory.is_dir():
        return newest_on_topic()
    identity = store_identity(directory)
    kept = directory / START_FILE
    if kept.exists():
        document = orjson.loads(kept.read_bytes())
        if document["store"] == identity:
            model = document["model"]
            start = None if model is None else GlobalModel.from_row(model)
            log.info(
                "resuming the federation from %s, where this recovery store's first start began",
                "version 0" if start is None else f"global version {start.version}",
            )
            return start
    start = newest_on_topic()
    written = kept.with_name(f"{START_FILE}.{os.getpid()}")
    written.write_bytes(orjson.dumps({"store": identity, "model": None if start is None else start.as_row()}))
    written.replace(kept)
    return start
