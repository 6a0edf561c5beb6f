"""A Bytewax worker thread keeps its Python thread state between entries once it is held.

The thread state is observed through ``threading.local``, whose values live in it: they
vanish whenever Bytewax's worker thread leaves Python and the state is destroyed.
"""

from __future__ import annotations

import threading

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main

from dataflows.thread_state import hold_thread_state


def calls_that_found_an_earlier_value(hold: bool) -> tuple[int, int]:
    """Items visited one batch at a time on Bytewax worker threads: how many of the visits
    found the thread-local value an earlier visit on the same thread left, out of how many."""
    local = threading.local()

    def visit(item: int) -> bool:
        if hold:
            hold_thread_state()
        found = getattr(local, "visited", False)
        local.visited = True
        return found

    flow = Dataflow("thread_state")
    visits: list[bool] = []
    items = op.input("items", flow, TestingSource(range(100), batch_size=1))
    op.output("visits", op.map("visit", items, visit), TestingSink(visits))
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    return sum(visits), len(visits)


def test_without_holding_a_worker_thread_loses_its_python_state_between_batches():
    assert calls_that_found_an_earlier_value(hold=False) == (0, 100)


def test_a_held_thread_state_lasts_from_batch_to_batch():
    assert calls_that_found_an_earlier_value(hold=True) == (99, 100)
