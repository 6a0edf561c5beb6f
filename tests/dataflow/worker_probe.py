"""A dataflow that prints which worker thread holds each key of ``PROBE_KEYS`` (comma-separated;
imported without it, as the doctest collection does, it has no keys)."""

import os
import threading

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource

flow = Dataflow("worker_probe")
keys = op.input("keys", flow, TestingSource([key for key in os.environ.get("PROBE_KEYS", "").split(",") if key]))
held = op.stateful_map("held", op.key_on("by_key", keys, lambda key: key), lambda _, __: (None, threading.get_ident()))
# One write per line: the workers are threads of one process, and print() writes a line in parts.
op.inspect("print", held, lambda _, item: os.write(1, f"{item[0]} {item[1]}\n".encode()))
