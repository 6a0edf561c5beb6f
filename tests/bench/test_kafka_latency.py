import os

import pytest

from bench.kafka_latency import _Dataflow


def test_a_dataflow_that_stops_with_an_error_is_reported_with_its_message():
    """A FLEAD that fails to start must stop the benchmark, not read as "processed nothing"."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEAD_")} | {"FLEAD_LEARNING_RATE": "fast"}
    dataflow = _Dataflow("dataflows.flead", env)
    dataflow.wait(60)
    with pytest.raises(RuntimeError, match="FLEAD_LEARNING_RATE"):
        dataflow.check()


def test_a_dataflow_still_running_passes_the_check(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEAD_")} | {"FLEAD_OUT_DIR": str(tmp_path)}
    dataflow = _Dataflow("dataflows.flead", env)
    try:
        dataflow.check()
    finally:
        dataflow.kill()
        dataflow.wait(30)
