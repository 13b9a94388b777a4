"""The lake's object store, on a local folder and on S3."""

from __future__ import annotations

from lake import Lake


def test_many_objects_are_deleted_together(lake: Lake) -> None:
    keys = [f"_shoal/pending/k{i:04d}" for i in range(1203)]  # more than one S3 request holds
    for key in keys:
        lake.store.put(key, b"x")
    lake.store.put("_shoal/pending/kept", b"y")
    lake.store.delete_many([*keys, "_shoal/pending/never-there"])
    assert lake.store.list("_shoal/pending/") == ["_shoal/pending/kept"]
