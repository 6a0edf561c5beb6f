"""A stop asked for by a signal: the inputs end at their next batch and the dataflow drains.

SIGTERM (what a process manager, ``timeout`` or ``kill`` sends) and SIGINT (Ctrl-C) do not
end the process where it stands: the sources see :func:`requested` and end, so the readings
in flight are processed, the sinks flush what they hold (the database buffer, the Kafka
producer), and the summary and report are written, saying the run was stopped. A second
signal stops the process at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

_requested = threading.Event()
_by: list[str] = []


def install() -> None:
    """Take SIGTERM and SIGINT over; call from the main thread, before the dataflow runs."""
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _ask)


def requested() -> bool:
    return _requested.is_set()


def stopped_by() -> str | None:
    """The signal that asked for the stop, if one did."""
    return _by[0] if _by else None


def _ask(signum: int, frame: object) -> None:
    if _requested.is_set():
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _by.append(signal.Signals(signum).name)
    _requested.set()
    print(
        f"flead: {_by[0]}: stopping after the readings in flight (send it again to stop at once)",
        file=sys.stderr,
        flush=True,
    )
