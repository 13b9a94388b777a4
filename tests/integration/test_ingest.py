"""Ingestion rules, on the local-folder lake and on the S3 lake (reference §4)."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from lake import Lake, Uploads, UploadStatus
from lake.uploads import Upload


def classification(model: str = "m1", logits: list[float] | None = None) -> dict[str, object]:
    return {
        "task_type": "CLASSIFICATION",
        "model_name": model,
        "logits": logits or [0.1, 0.2, 0.8],
        "class_names": ["a", "b", "c"],
    }


def test_create_datapoints_with_everything(ingest) -> None:  # type: ignore[no-untyped-def]
    upload = ingest(
        [
            {
                "type": "IMAGE",
                "metadata": {"uri": "s3://b/1.jpg"},
                "tags": {"split": "train", "n": 3},
                "groundtruths": [{"task_type": "CLASSIFICATION", "class_name": "c"}],
                "predictions": [{**classification(), "embeddings": {"layer4": [0.5, 0.25]}}],
            }
        ]
    )
    assert upload.status is UploadStatus.SUCCEEDED
    assert upload.summary()["datapoints_created"] == 1
    datapoint = ingest.one("datapoints")
    assert json.loads(datapoint["metadata"]) == {"uri": "s3://b/1.jpg"}
    assert datapoint["type"] == "IMAGE"
    assert {(t["name"], t["value"]) for t in ingest.rows("tags")} == {
        ("split", "train"),
        ("n", "3"),
    }
    prediction = ingest.one("predictions")
    assert prediction["datapoint"] == datapoint["id"]
    assert prediction["confidences"] == [0.2427818748077445, 0.2683154674734019, 0.4889026577188538]
    assert json.loads(prediction["metrics"]) == {"entropy": 0.9525912616642588}
    vectors = {(v["type"], v["model_name"]): v for v in ingest.rows("feature_vectors")}
    assert set(vectors) == {("LOGITS", "m1"), ("EMBEDDINGS", "m1:layer4")}
    assert vectors[("EMBEDDINGS", "m1:layer4")]["value"] == [0.5, 0.25]
    assert ingest.one("groundtruths")["class_name"] == "c"


def test_update_by_id_replaces_metadata_and_upserts_tags(ingest) -> None:  # type: ignore[no-untyped-def]
    ingest(
        [
            {
                "type": "IMAGE",
                "metadata": {"uri": "a", "w": 1},
                "tags": {"keep": "1", "change": "old", "drop": "x"},
            }
        ]
    )
    dp = ingest.one("datapoints")["id"]
    upload = ingest(
        [{"id": dp, "metadata": {"uri": "b"}, "tags": {"change": "new", "drop": None, "add": "y"}}]
    )
    assert upload.summary()["datapoints_updated"] == 1
    assert json.loads(ingest.one("datapoints")["metadata"]) == {"uri": "b"}
    assert {(t["name"], t["value"]) for t in ingest.rows("tags")} == {
        ("keep", "1"),
        ("change", "new"),
        ("add", "y"),
    }
    ingest([{"id": dp, "tags": None}])
    assert ingest.rows("tags") == []
    assert len(ingest.rows("datapoints")) == 1


def test_one_groundtruth_per_task_type(ingest) -> None:  # type: ignore[no-untyped-def]
    ingest(
        [
            {
                "type": "IMAGE",
                "groundtruths": [
                    {"task_type": "CLASSIFICATION", "class_name": "old"},
                    {
                        "task_type": "OBJECT_DETECTION",
                        "bboxes": [
                            {"top": 1, "left": 1, "height": 2, "width": 2, "class_name": "box"}
                        ],
                    },
                ],
            }
        ]
    )
    dp = ingest.one("datapoints")["id"]
    ingest(
        [
            {
                "id": dp,
                "groundtruths": [
                    {"task_type": "CLASSIFICATION", "class_name": "new"},
                    {"task_type": "OBJECT_DETECTION", "bboxes": []},
                ],
            }
        ]
    )
    by_task = {g["task_type"]: g for g in ingest.rows("groundtruths")}
    assert by_task["CLASSIFICATION"]["class_name"] == "new"
    assert set(by_task) == {"CLASSIFICATION", "OBJECT_DETECTION"}
    assert ingest.rows("bboxes") == []  # the replaced groundtruth took its boxes with it


def test_segmentation_is_semantic_segmentation(ingest) -> None:  # type: ignore[no-untyped-def]
    ingest(
        [
            {
                "type": "IMAGE",
                "groundtruths": [
                    {"task_type": "SEMANTIC_SEGMENTATION", "segmentation_class_mask": [[0, 1]]}
                ],
            }
        ]
    )
    dp = ingest.one("datapoints")["id"]
    ingest(
        [
            {
                "id": dp,
                "groundtruths": [
                    {"task_type": "SEGMENTATION", "segmentation_class_mask": [[1, 1]]}
                ],
            }
        ]
    )
    groundtruth = ingest.one("groundtruths")
    assert groundtruth["task_type"] == "SEGMENTATION"  # echoed as sent
    assert json.loads(groundtruth["metrics"]) == {"distribution": {"1": 2}}


def test_one_prediction_per_task_type_and_model(ingest) -> None:  # type: ignore[no-untyped-def]
    ingest([{"type": "IMAGE", "predictions": [classification("m1"), classification("m2")]}])
    dp = ingest.one("datapoints")["id"]
    old = ingest.one("predictions", model_name="m1")
    ingest([{"id": dp, "predictions": [classification("m1", [5.0, 0.0, 0.0])]}])
    predictions = {p["model_name"]: p for p in ingest.rows("predictions")}
    assert set(predictions) == {"m1", "m2"}
    assert predictions["m1"]["id"] != old["id"]
    assert predictions["m1"]["class_name"] == "a"
    logits = [v for v in ingest.rows("feature_vectors") if v["type"] == "LOGITS"]
    assert sorted(v["prediction"] for v in logits) == sorted(p["id"] for p in predictions.values())


def test_update_attachment_by_id_merges(ingest) -> None:  # type: ignore[no-untyped-def]
    ingest(
        [
            {
                "type": "IMAGE",
                "predictions": [
                    {
                        **classification(),
                        "metrics": {"kept": 1},
                        "bboxes": [
                            {"top": 1, "left": 1, "height": 1, "width": 1, "class_name": "x"}
                        ],
                    }
                ],
            }
        ]
    )
    dp = ingest.one("datapoints")["id"]
    prediction = ingest.one("predictions")
    box = ingest.one("bboxes")
    upload = ingest(
        [
            {
                "id": dp,
                "predictions": [
                    {
                        "id": prediction["id"],
                        "metrics": {"added": 2},
                        "bboxes": [
                            {"id": box["id"], "class_name": "y"},
                            {"top": 5, "left": 5, "height": 1, "width": 1, "class_name": "z"},
                        ],
                    }
                ],
            }
        ]
    )
    assert upload.failures == 0, upload.errors
    updated = ingest.one("predictions")
    assert updated["id"] == prediction["id"]
    assert updated["class_name"] == prediction["class_name"]
    assert json.loads(updated["metrics"]) == {"kept": 1, "entropy": 0.9525912616642588, "added": 2}
    assert sorted((b["class_name"], b["top"]) for b in ingest.rows("bboxes")) == [
        ("y", 1.0),
        ("z", 5.0),
    ]
    ingest([{"id": dp, "predictions": [{"id": prediction["id"], "bboxes": None, "logits": None}]}])
    assert ingest.rows("bboxes") == []
    assert ingest.rows("feature_vectors") == []


def test_children_of_every_kind(ingest) -> None:  # type: ignore[no-untyped-def]
    ingest(
        [
            {
                "type": "IMAGE",
                "predictions": [
                    {
                        "task_type": "LANE_DETECTION",
                        "model_name": "lanes",
                        "lanes": [{"coco_polyline": [0, 0, 1, 1], "confidence": 0.4}],
                    },
                    {
                        "task_type": "COMPLETION",
                        "model_name": "llm",
                        "completions": [
                            {"text": "hello", "confidence": 0.9, "metrics": {"rlhf_score": 1}}
                        ],
                    },
                    {
                        "task_type": "INSTANCE_SEGMENTATION",
                        "model_name": "seg",
                        "bboxes": [
                            {
                                "segmentation_mask": [[0, 1], [1, 1]],
                                "confidences": [0.2, 0.8],
                                "class_names": ["a", "b"],
                            }
                        ],
                    },
                ],
            }
        ]
    )
    assert ingest.one("lanes")["coco_polyline"] == [0.0, 0.0, 1.0, 1.0]
    completion = ingest.one("completions")
    assert (completion["text"], json.loads(completion["metrics"])) == ("hello", {"rlhf_score": 1})
    box = ingest.one("bboxes")
    assert (box["class_name"], box["height"], box["width"]) == ("b", 1.0, 1.0)
    assert box["encoded_segmentation_mask"].startswith("BCJNGG")
    datapoint = ingest.one("datapoints")["id"]
    assert {r["datapoint"] for t in ("lanes", "completions", "bboxes") for r in ingest.rows(t)} == {
        datapoint
    }


def test_bad_records_are_reported_and_the_rest_lands(ingest) -> None:  # type: ignore[no-untyped-def]
    ingest([{"type": "IMAGE", "tags": {"v": "1"}}])
    existing = ingest.one("datapoints")["id"]
    missing = "00000000-0000-4000-8000-000000000000"
    data = "\n".join(
        [
            json.dumps({"type": "IMAGE"}),
            "{not json",
            json.dumps({"id": missing, "tags": {"v": "2"}}),
            json.dumps(
                {
                    "type": "VIDEO",
                    "predictions": [{"task_type": "CLASSIFICATION", "logits": [[[[[1]]]]]}],
                }
            ),
            json.dumps({"id": existing, "predictions": [{"id": missing, "class_name": "x"}]}),
            json.dumps({"type": "TEXT", "text": "ok"}),
        ]
    ).encode()
    upload = ingest(data)
    assert upload.status is UploadStatus.SUCCEEDED
    assert upload.failures == 4
    assert [(e["line"], e["field"]) for e in upload.errors] == [
        (2, ""),
        (3, "id"),
        (4, "predictions[0].logits"),
        (5, "predictions[0].id"),
    ]
    assert "Datapoint 00000000-0000-4000-8000-000000000000 not found" in upload.errors[1]["reason"]
    assert upload.summary()["datapoints_created"] == 2
    assert len(ingest.rows("datapoints")) == 3
    assert ingest.one("tags")["value"] == "1"  # the failed update changed nothing


def test_later_records_of_a_batch_see_earlier_ones(ingest) -> None:  # type: ignore[no-untyped-def]
    ingest([{"type": "IMAGE"}])
    dp = ingest.one("datapoints")["id"]
    ingest(
        [
            {"id": dp, "tags": {"a": "1"}, "predictions": [classification()]},
            {"id": dp, "tags": {"a": "2"}, "predictions": [classification(logits=[9, 0, 0])]},
        ]
    )
    assert ingest.one("tags")["value"] == "2"
    assert ingest.one("predictions")["class_name"] == "a"
    assert len(ingest.rows("feature_vectors")) == 1


def test_compressed_and_carriage_return_uploads(ingest) -> None:  # type: ignore[no-untyped-def]
    records = [{"type": "IMAGE", "metadata": {"i": i}} for i in range(5)]
    assert ingest(records, separator="\r").summary()["datapoints_created"] == 5
    data = gzip.compress("\r\n".join(json.dumps(r) for r in records).encode())
    assert ingest(data).summary()["datapoints_created"] == 5
    assert len(ingest.rows("datapoints")) == 10


def test_organizations_do_not_see_each_other(ingest) -> None:  # type: ignore[no-untyped-def]
    ingest([{"type": "IMAGE"}], org="acme")
    dp = ingest.one("datapoints")["id"]
    upload = ingest([{"id": dp, "tags": {"a": "1"}}], org="other")
    assert upload.failures == 1
    assert ingest.rows("tags") == []


def test_undecodable_upload_fails_and_keeps_the_lake(ingest) -> None:  # type: ignore[no-untyped-def]
    ingest([{"type": "IMAGE"}])
    upload = ingest(gzip.compress(b'{"type": "IMAGE"}\n' * 50)[:-12])
    assert upload.status is UploadStatus.FAILED
    assert "compressed" in (upload.error_message or "")
    assert len(ingest.rows("datapoints")) == 1


def test_vectors_are_float_lists(ingest) -> None:  # type: ignore[no-untyped-def]
    embedding = np.linspace(-1, 1, 512).tolist()
    ingest([{"type": "IMAGE", "predictions": [{**classification(), "embeddings": embedding}]}])
    vector = ingest.one("feature_vectors", type="EMBEDDINGS")
    assert vector["model_name"] == "m1"
    assert vector["shape"] == [512]
    assert vector["value"] == pytest.approx(embedding, abs=1e-3)


def test_new_model_outputs_for_many_datapoints(ingest) -> None:  # type: ignore[no-untyped-def]
    """A batch of plain updates (planned in columns): each replaces the prediction of its
    model and the groundtruth with their vectors and children; another organization's
    datapoint is not found."""
    box = {"top": 1, "left": 1, "height": 2, "width": 2, "class_name": "a"}
    seeded = [
        {
            "type": "IMAGE",
            "metadata": {"i": i},
            "groundtruths": [{"task_type": "CLASSIFICATION", "class_name": "a", "bboxes": [box]}],
            "predictions": [
                {**classification("m1"), "embeddings": [0.5, 0.5]},
                classification("m2"),
            ],
        }
        for i in range(100)
    ]
    assert ingest(seeded).failures == 0
    ingest([{"type": "IMAGE"}], org="other")
    (foreign,) = [d["id"] for d in ingest.rows("datapoints", organization_id="other")]
    datapoints = sorted(d["id"] for d in ingest.rows("datapoints", organization_id="default"))
    old = {p["id"] for p in ingest.rows("predictions", model_name="m1")}
    updates = [
        {
            "id": dp,
            "groundtruths": [{"task_type": "CLASSIFICATION", "class_name": "b"}],
            "predictions": [classification("m1", [4.0, 0.0, float(i % 2)])],
        }
        for i, dp in enumerate(datapoints)
    ]
    updates[70]["id"] = foreign
    upload = ingest(updates)
    assert [(e["line"], e["field"]) for e in upload.summary()["errors"]] == [(71, "id")]
    assert upload.counts.datapoints_updated == 99
    assert upload.counts.predictions == 99
    m1 = {p["datapoint"]: p for p in ingest.rows("predictions", model_name="m1")}
    assert len(m1) == 100 and len(ingest.rows("predictions", model_name="m2")) == 100
    skipped = datapoints[70]
    assert m1[skipped]["id"] in old  # the record that failed changed nothing
    assert all(p["class_name"] == "a" and p["id"] not in old for d, p in m1.items() if d != skipped)
    labels = {g["datapoint"]: g["class_name"] for g in ingest.rows("groundtruths")}
    assert labels[skipped] == "a" and sum(v == "b" for v in labels.values()) == 99
    assert len(ingest.rows("bboxes")) == 1  # the replaced groundtruths' boxes went with them
    embeddings = ingest.rows("feature_vectors", type="EMBEDDINGS")
    assert [v["datapoint"] for v in embeddings] == [skipped]
    logits = ingest.rows("feature_vectors", type="LOGITS")
    assert len(logits) == 200 and {v["prediction"] for v in logits} <= {
        p["id"] for p in ingest.rows("predictions")
    }
    assert ingest.rows("datapoints", id=foreign)[0]["organization_id"] == "other"
    assert not ingest.rows("predictions", datapoint=foreign)


def _records_file(path: Path, n: int, tag: str = "a") -> Path:
    records = [{"type": "IMAGE", "tags": {"v": tag}, "metadata": {"i": i}} for i in range(n)]
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records))
    return path


def _landed(lake: Lake, upload: Upload) -> Path:
    return Path(lake.uri) / upload.landing_key


def _upload_of_a_file(lake: Lake, folder: Path) -> tuple[Uploads, Upload, Path]:
    """An upload (not run yet) of a new file of 3 records in ``folder``."""
    source = _records_file(folder / "records.ndjson", 3)
    uploads = Uploads(lake)
    return uploads, uploads.create(source), source


def test_a_file_beside_a_local_lake_is_linked_into_it_not_copied(
    local_lake: Lake, tmp_path: Path
) -> None:
    uploads, upload, source = _upload_of_a_file(local_lake, tmp_path)
    assert _landed(local_lake, upload).stat().st_ino == source.stat().st_ino
    source.unlink()  # the lake's link keeps the file
    assert uploads.run(upload.id).status is UploadStatus.SUCCEEDED
    assert local_lake.count("datapoints") == 3


def test_a_linked_file_rewritten_in_place_fails_its_upload_and_nothing_lands(
    local_lake: Lake, tmp_path: Path
) -> None:
    uploads, upload, source = _upload_of_a_file(local_lake, tmp_path)
    _records_file(source, 5, tag="b")  # the same file, truncated and written again
    failed = uploads.run(upload.id)
    assert failed.status is UploadStatus.FAILED
    assert "changed after it was uploaded" in (failed.error_message or "")
    assert local_lake.count("datapoints") == 0


def test_a_linked_file_replaced_by_a_new_one_leaves_its_upload_as_it_was(
    local_lake: Lake, tmp_path: Path
) -> None:
    uploads, upload, source = _upload_of_a_file(local_lake, tmp_path)
    os.replace(_records_file(tmp_path / "new.ndjson", 5, tag="b"), source)  # a save by rename
    assert uploads.run(upload.id).counts.datapoints_created == 3
    assert {r["value"] for r in local_lake.read("tags").to_pylist()} == {"a"}


def test_a_file_on_another_file_system_is_copied(local_lake: Lake) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as elsewhere:  # a tmpfs
        Path(local_lake.uri).mkdir(parents=True, exist_ok=True)
        assert os.stat(elsewhere).st_dev != os.stat(local_lake.uri).st_dev
        uploads, upload, source = _upload_of_a_file(local_lake, Path(elsewhere))
        assert _landed(local_lake, upload).stat().st_ino != source.stat().st_ino
        assert "linked" not in upload.options
        _records_file(source, 5, tag="b")  # the copy does not change with it
    assert uploads.run(upload.id).counts.datapoints_created == 3


@pytest.mark.s3
def test_a_file_copied_to_object_storage_is_read_from_disk_by_its_first_run(
    lake_on_s3: Lake, tmp_path: Path
) -> None:
    lake = lake_on_s3
    uploads, upload, source = _upload_of_a_file(lake, tmp_path)
    # the lake's copy made different, to tell which one a run reads
    other = _records_file(tmp_path / "other.ndjson", 5, tag="b").read_bytes()
    lake.store.put(upload.landing_key, other)
    assert uploads.run(upload.id).counts.datapoints_created == 3  # the file on disk
    assert {r["value"] for r in lake.read("tags").to_pylist()} == {"a"}

    # another process (a server resuming the upload, say) reads the lake's copy
    upload = uploads.create(source)
    lake.store.put(upload.landing_key, other)
    assert Uploads(lake).run(upload.id).counts.datapoints_created == 5


@pytest.mark.s3
def test_a_file_changed_after_its_copy_to_object_storage_is_read_from_the_copy(
    lake_on_s3: Lake, tmp_path: Path
) -> None:
    uploads, upload, source = _upload_of_a_file(lake_on_s3, tmp_path)
    _records_file(source, 5, tag="b")  # rewritten after the upload began
    assert uploads.run(upload.id).counts.datapoints_created == 3
    assert {r["value"] for r in lake_on_s3.read("tags").to_pylist()} == {"a"}
