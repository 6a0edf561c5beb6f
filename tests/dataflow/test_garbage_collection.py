"""The dataflow's entry point sets the cyclic garbage collector for its load (dataflows/garbage_collection.py)."""

import subprocess
import sys

from dataflows.garbage_collection import ALLOCATIONS_PER_COLLECTION
from tests.flead_runs import REPO, environment

BUILD_AND_REPORT = "import gc, dataflows.flead as flead; flead.flow; print(*gc.get_threshold())"


def test_building_the_dataflow_from_its_entry_point_collects_cycles_less_often(tmp_path):
    env = environment(REPO / "data" / "nab", tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", BUILD_AND_REPORT], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    youngest, *older = map(int, result.stdout.split())
    assert youngest == ALLOCATIONS_PER_COLLECTION > 700
    assert older == [10, 10]  # CPython's defaults, kept
