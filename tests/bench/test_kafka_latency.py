import os
import time
import uuid

import pytest

from bench.kafka_latency import _Dataflow, _metrics, _start_flead


def test_a_dataflow_that_stops_with_an_error_is_reported_with_its_message():
    """A FLEAD that fails to start must stop the benchmark, not read as "processed nothing"."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEAD_")} | {"FLEAD_LEARNING_RATE": "fast"}
    dataflow = _Dataflow("dataflows.flead", env)
    dataflow.wait(60)
    with pytest.raises(RuntimeError, match="FLEAD_LEARNING_RATE"):
        dataflow.check()


@pytest.mark.integration
def test_a_dataflow_still_running_passes_the_check(kafka, tmp_path):
    """Started as the benchmark starts FLEAD (reading Kafka, following its topics) and checked
    once it is up (its /metrics answer), not the moment it was launched, when even a FLEAD
    about to fail is still running."""
    dataflow, port = _start_flead(kafka, uuid.uuid4().hex[:6], str(tmp_path))
    try:
        deadline = time.monotonic() + 120
        while not _metrics(port):
            dataflow.check()  # an error exit fails here, with its message
            assert dataflow.poll() is None, "FLEAD exited before its metrics answered"
            assert time.monotonic() < deadline, "FLEAD's metrics did not answer within 120 s"
            time.sleep(0.2)
        dataflow.check()
        assert dataflow.poll() is None
    finally:
        dataflow.kill()
        dataflow.wait(30)
