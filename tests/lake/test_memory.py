"""Freed memory kept for the next batch: what ``retain_freed_memory`` changes (a fresh process)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import json, os, sys
from lake.memory import retain_freed_memory
applied = retain_freed_memory()
again = retain_freed_memory()
page = os.sysconf("SC_PAGE_SIZE")
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
before = resident()
block = b"x" * (256 << 20)  # written, so its pages are resident
del block
print(json.dumps({"applied": applied, "again": again, "kept": resident() - before}))
"""

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not os.path.exists("/proc/self/statm"),
    reason="the setting exists only in glibc's allocator",
)


def probe(**env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@glibc_only
def test_freed_memory_stays_with_the_process_for_reuse() -> None:
    result = probe(SHOAL_RETAIN_MEMORY="1")
    assert result["applied"] is True and result["again"] is True
    assert int(str(result["kept"])) >= 200 << 20


@glibc_only
def test_turned_off_the_allocator_gives_freed_memory_back() -> None:
    result = probe(SHOAL_RETAIN_MEMORY="0")
    assert result["applied"] is False and result["again"] is False
    assert int(str(result["kept"])) < 64 << 20


def test_the_calmed_collector_leaves_start_up_objects_and_collects_less_often() -> None:
    code = """
import gc, json
from lake.memory import GC_YOUNG_THRESHOLD, calm_garbage_collector
before = gc.get_threshold()
calm_garbage_collector()
print(json.dumps({"before": before, "after": gc.get_threshold(),
                  "frozen": gc.get_freeze_count(), "young": GC_YOUNG_THRESHOLD}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(done.stdout)
    assert result["after"] == [result["young"], *result["before"][1:]]
    assert result["young"] > result["before"][0]
    assert result["frozen"] > 1000  # the imported modules' objects
