"""Shard keys against Bytewax's real routing: which worker holds a key (operators/worker_routing.py)."""

import os
import subprocess
import sys
from collections import defaultdict

import pytest

from operators.sharding import shard_keys
from operators.worker_routing import key_hash
from tests.flead_runs import REPO


def workers_of(keys: list[str], workers: int) -> list[set[str]]:
    """The keys each worker thread held, in a real run of ``workers`` workers."""
    env = {**os.environ, "PROBE_KEYS": ",".join(keys)}
    result = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "tests.dataflow.worker_probe", "-w", str(workers)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    held = defaultdict(set)
    for line in result.stdout.splitlines():
        key, thread = line.split()
        held[thread].add(key)
    return list(held.values())


def test_the_key_hash_predicts_which_keys_bytewax_puts_together():
    keys = [f"device-{i}" for i in range(24)]
    predicted = defaultdict(set)
    for key in keys:
        predicted[key_hash(key) % 4].add(key)
    assert sorted(map(sorted, workers_of(keys, 4))) == sorted(map(sorted, predicted.values()))


@pytest.mark.parametrize(("shards", "workers"), [(4, 2), (6, 3), (8, 4)])
def test_every_worker_holds_as_many_shards(shards, workers):
    held = workers_of(shard_keys(shards), workers)
    assert len(held) == workers and {len(keys) for keys in held} == {shards // workers}
