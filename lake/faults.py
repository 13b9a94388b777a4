"""Crash points: where the crash-safety tests kill the process, on purpose.

``SHOAL_CRASH_AT=name:n`` makes the process kill itself (SIGKILL, as ``kill -9``: no cleanup,
no flush) the n-th time it passes the crash point ``name`` (n defaults to 1). Unset, a crash
point costs one dictionary lookup. The points:

* ``upload.parsed``: a batch of an upload was read, parsed and planned, not committed;
* ``table.committed``: one table of a lake transaction was committed, the others not yet;
* ``state.publish``: every table of a transaction is committed, the lake state (which also
  records each upload's progress) not yet published;
* ``miner.pick``: a miner run picked one more datapoint.
"""

from __future__ import annotations

import os
import signal
import threading

_counts: dict[str, int] = {}
_lock = threading.Lock()


def crash_point(name: str) -> None:
    spec = os.environ.get("SHOAL_CRASH_AT")
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        if _counts[name] >= int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)
