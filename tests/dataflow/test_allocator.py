"""The dataflow's entry point keeps glibc's mmap threshold, so that freed large arrays go back
to the system (dataflows/allocator.py)."""

import ctypes
import subprocess
import sys

import pytest

from tests.flead_runs import REPO, environment

# After building the dataflow, free a 16 MiB array (glibc would raise its threshold to 16 MiB),
# then say how many bytes of memory maps a 1 MiB array takes: its own map, or none (the heap).
MAPPED_AFTER_BUILDING = """
import ctypes, sys
import numpy as np
FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS.split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "flead":
    import dataflows.flead as flead
    flead.flow
large = np.ones(2 * 1024 * 1024)
del large
before = libc.mallinfo2().hblkhd
array = np.ones(128 * 1024)
print(libc.mallinfo2().hblkhd - before)
"""


def mapped_bytes_of_a_new_array(tmp_path, entry: str) -> int:
    env = environment(REPO / "data" / "nab", tmp_path)
    command = [sys.executable, "-c", MAPPED_AFTER_BUILDING, entry]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc 2.33 or later")
def test_after_the_dataflow_is_built_a_large_array_has_its_own_memory_map(tmp_path):
    assert mapped_bytes_of_a_new_array(tmp_path, "flead") >= 1024 * 1024
    # without the dataflow's setting, glibc puts it in the heap, which keeps it when freed
    assert mapped_bytes_of_a_new_array(tmp_path, "plain") == 0
