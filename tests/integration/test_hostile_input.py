"""Hostile uploads: every bad line is reported precisely, and what the lake held stays intact."""

from __future__ import annotations

import json
from typing import Any

from lake import Lake, Uploads, UploadStatus

GOOD = {"type": "IMAGE", "metadata": {"uri": "s3://b/keep.jpg"}, "tags": {"keep": "yes"}}


def snapshot(lake: Lake) -> dict[str, list[dict[str, Any]]]:
    tables = ("datapoints", "tags", "predictions", "feature_vectors")
    return {t: sorted(lake.read(t).to_pylist(), key=lambda r: r["id"]) for t in tables}


def errors_of(ingest: Any, data: bytes) -> list[tuple[int, str, str]]:
    upload = ingest(data)
    assert upload.status is UploadStatus.SUCCEEDED, upload.summary()
    return [(e["line"], e["field"], e["reason"]) for e in upload.errors]


def test_hostile_lines_are_reported_and_change_nothing(lake: Lake, ingest: Any) -> None:
    assert ingest([GOOD]).status is UploadStatus.SUCCEEDED
    before = snapshot(lake)
    kept = before["datapoints"][0]["id"]
    lines = [
        json.dumps({"type": []}).encode(),
        b"[" * 5_000 + b"]" * 5_000,  # nested deeper than any parser recurses
        json.dumps(
            {"type": "IMAGE", "predictions": [{"task_type": "CLASSIFICATION", "logits": [1e6]}]}
        ).encode(),
        json.dumps(
            {
                "type": "IMAGE",
                "predictions": [
                    {"task_type": "CLASSIFICATION", "logits": [1, 2], "embeddings": [7e4]}
                ],
            }
        ).encode(),
        json.dumps({"id": kept, "metadata": "not an object"}).encode(),
        json.dumps({"id": kept, "tags": {"keep": {"nested": 1}}}).encode(),
        json.dumps({"type": "IMAGE", "parent_datapoint": "../../etc/passwd"}).encode(),
        b"\xff\xfe\x00garbage\x9c",  # binary
        b'{"type": "TEXT", "text": "caf\xe9"}',  # Latin-1, not UTF-8
        b'{"type": "AUDIO", "metadata": {"n": 1e999999, "m": 12345678901234567890123}}',
        b'{"type": "IMAGE", "type": "VIDEO"}',  # duplicate keys: the last one counts
    ]
    upload = ingest(b"\n".join(lines))
    assert upload.status is UploadStatus.SUCCEEDED, upload.summary()
    assert [(e["line"], e["field"], e["reason"]) for e in upload.errors] == [
        (1, "type", "must be one of ['AUDIO', 'IMAGE', 'TEXT', 'VIDEO'], got []"),
        (2, "", "malformed JSON: nested too deeply"),
        (3, "predictions[0].logits", "1e+06 is beyond ±65504: vectors are stored as float16"),
        (4, "predictions[0].embeddings", "70000 is beyond ±65504: vectors are stored as float16"),
        (5, "metadata", "must be an object, got str"),
        (6, "tags.keep", "must be a string, number, boolean or null, got dict"),
        (7, "parent_datapoint", "must be a UUID, got '../../etc/passwd'"),
        (8, "", "not valid UTF-8: byte 0xff at position 0"),
        (9, "", "not valid UTF-8: byte 0xe9 at position 29"),
    ]
    after = snapshot(lake)
    assert after["tags"] == before["tags"]  # the failed tag update changed nothing
    assert [d for d in after["datapoints"] if d["id"] == kept] == before["datapoints"]
    new = {d["type"]: d for d in after["datapoints"] if d["id"] != kept}
    assert sorted(new) == ["AUDIO", "VIDEO"]
    # a number no float holds is read as infinity, which becomes null (and null keys go)
    assert json.loads(new["AUDIO"]["metadata"]) == {"m": 12345678901234567890123}


def test_binary_garbage_file_fails_cleanly(lake: Lake, ingest: Any) -> None:
    assert ingest([GOOD]).status is UploadStatus.SUCCEEDED
    before = snapshot(lake)
    upload = ingest(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 64)  # a broken gzip
    assert upload.status is UploadStatus.FAILED and upload.error_message
    assert upload.error_message.startswith("the upload is not valid compressed data")
    assert snapshot(lake) == before


def test_a_100_mb_line_is_reported_and_skipped(local_lake: Lake) -> None:
    uploads = Uploads(local_lake, max_line=64 * 2**20)
    big = b'{"type": "IMAGE", "metadata": {"blob": "' + b"x" * (100 * 2**20) + b'"}}'
    data = json.dumps(GOOD).encode() + b"\n" + big + b"\n" + json.dumps(GOOD).encode()
    upload = uploads.run(uploads.create(data).id)
    assert upload.status is UploadStatus.SUCCEEDED
    assert [(e["line"], e["field"]) for e in upload.errors] == [(2, "")]
    assert "longer than" in upload.errors[0]["reason"] or "limit" in upload.errors[0]["reason"]
    assert local_lake.count("datapoints") == 2
