"""Keep a Bytewax worker thread's Python thread state for as long as the thread lives.

Bytewax's workers are Rust threads that enter Python through PyO3, which takes the GIL
with ``PyGILState_Ensure`` and gives it back with ``PyGILState_Release``. On a thread that
Python did not start, the release that balances the outermost ensure destroys the thread
state, and with it the 16 KiB frame stack CPython 3.11 maps for every thread state: each
entry into Python then costs an ``mmap``, an ``munmap`` (a TLB shootdown on the other cores
in a threaded process) and fresh page faults. A worker thread of a 2-process replay entered
Python ~31,000 times that way. One ensure that is never released keeps the state alive
between entries; the GIL is still released and taken as before.
"""

from __future__ import annotations

import ctypes
import threading

_held = threading.local()


def hold_thread_state() -> None:
    """On the calling thread, from now on; calling it again on the same thread does nothing."""
    if not getattr(_held, "state", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _held.state = True
