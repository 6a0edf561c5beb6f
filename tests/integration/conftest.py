"""Fixtures the integration tests share."""

import orjson
import pytest

from tests.flead_runs import anomaly_rows_keys, run


@pytest.fixture(scope="package")
def replay_reference(nab_sample, tmp_path_factory):
    """The sample replayed once from its files: the summary, and the anomalies it found."""
    out = tmp_path_factory.mktemp("replay-reference")
    summary = run(nab_sample, out)
    anomalies = [orjson.loads(line) for line in (out / "anomalies.jsonl").read_bytes().splitlines()]
    keys = anomaly_rows_keys(anomalies)
    # a comparison with an empty reference, or one holding an anomaly twice, would prove nothing
    assert keys and max(keys.values()) == 1, "the replay's anomalies are not a non-empty list of distinct ones"
    assert summary["local_updates"] > 0 and summary["global_versions"] > 0
    return summary, keys
