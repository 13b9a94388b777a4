"""Process-wide memory settings for processes that ingest (the server, the CLI, benchmarks).

An ingest works in batches of tens of megabytes: the text of a batch, the buffers parsed from
it, the tables planned. With glibc's defaults every block that large is a fresh ``mmap`` that
is handed back to the kernel when freed, so each batch faults in all its memory again, page by
page; on virtual machines that give freed memory back to the host, a fault costs several
microseconds. Measured on the reference machine: a 60,000-record embedding upload took 5.5 s,
4.7 s of it in the kernel, and 3.5–4.0 s once freed memory was kept for reuse.

:func:`retain_freed_memory` keeps it: blocks come from the heap and up to
1 GiB of freed memory stay with the process. It changes
nothing but where memory comes from, is a no-op where the C library is not glibc, and is
called by Shoal's own entry points (``shoal serve``, ``shoal ingest``, the benchmarks); an
application embedding the lake may call it too. ``SHOAL_RETAIN_MEMORY=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_RETAIN = 1 << 30

_done = False


def retain_freed_memory() -> bool:
    """Keep freed memory in the process for the next batch (glibc); True when applied."""
    global _done
    if _done:
        return True
    if os.environ.get("SHOAL_RETAIN_MEMORY", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): its allocator keeps its own counsel
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = (
        mallopt(_M_MMAP_MAX, 0) == 1  # large blocks from the heap, not a fresh mmap each
        and mallopt(_M_TRIM_THRESHOLD, _RETAIN) == 1  # freed memory kept up to this much
        and mallopt(_M_TOP_PAD, 64 << 20) == 1  # the heap grows in steps of 64 MiB
    )
    if not applied:
        log.debug("mallopt refused a setting; the allocator's defaults stay")
    _done = applied
    return applied


def status_mib(field: str, pid: int | str = "self") -> float | None:
    """A memory figure (``VmRSS``, ``VmHWM``, ...) of a process from ``/proc`` (Linux), in MiB;
    None where there is none to read."""
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


#: Allocations (net, of objects the collector tracks) between two young collections; Python's
#: default is 700.
GC_YOUNG_THRESHOLD = 10_000


def calm_garbage_collector() -> None:
    """Fewer, cheaper collections for a long-running server, once its start-up is done.

    A request allocates thousands of short-lived objects (its parsed JSON), so with Python's
    defaults the collector runs every few hundred allocations, and now and then goes over
    every object of the process: the modules of pyarrow, polars and FastAPI, and what the
    server remembers. Measured on the reference machine under the small-batch benchmark: a
    second of collection in 15 s, and parsing a request's body took 0.6 ms of CPU instead of
    0.15. What exists at start-up is moved out of the collector's sight (``gc.freeze``), and
    young collections wait for ``GC_YOUNG_THRESHOLD`` allocations: ~15 ms in the same run.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
