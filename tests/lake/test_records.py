"""Record validation and normalisation (no lake involved)."""

from __future__ import annotations

import json

import pytest

from lake.errors import RecordError
from lake.records import normalise, task_key

DP = "6f1c2a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"


def error_of(record: object) -> RecordError:
    with pytest.raises(RecordError) as caught:
        normalise(record, 7)
    assert caught.value.line == 7
    return caught.value


def test_create_needs_a_type() -> None:
    error = error_of({"metadata": {"uri": "x"}})
    assert error.field == "type"
    assert "required when creating" in error.reason


def test_text_forces_type_text() -> None:
    spec = normalise({"type": "IMAGE", "text": "hello"}, 1)
    assert spec.fields["type"] == "TEXT"
    assert spec.fields["text"] == "hello"


def test_metadata_drops_null_keys() -> None:
    spec = normalise({"type": "IMAGE", "metadata": {"uri": "a", "width": None}}, 1)
    assert json.loads(spec.fields["metadata"]) == {"uri": "a"}


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"id": "not-a-uuid"}, "id"),
        ({"type": "PICTURE"}, "type"),
        ({"type": "IMAGE", "metadata": [1]}, "metadata"),
        ({"type": "IMAGE", "tags": ["a"]}, "tags"),
        ({"type": "IMAGE", "tags": {"a": {"b": 1}}}, "tags.a"),
        ({"type": "IMAGE", "parent_datapoint": "x"}, "parent_datapoint"),
        (
            {"type": "IMAGE", "groundtruths": [{"task_type": "NOPE", "class_name": "a"}]},
            "groundtruths[0].task_type",
        ),
        (
            {
                "type": "IMAGE",
                "predictions": [{"task_type": "CLASSIFICATION", "class_names": "ab"}],
            },
            "predictions[0].class_names",
        ),
        (
            {
                "type": "IMAGE",
                "predictions": [{"task_type": "CLASSIFICATION", "logits": [[1], [2, 3]]}],
            },
            "predictions[0].logits",
        ),
        (
            {
                "type": "IMAGE",
                "predictions": [{"task_type": "CLASSIFICATION", "logits": [[[[[1]]]]]}],
            },
            "predictions[0].logits",
        ),
        ({"type": "IMAGE", "predictions": [{"model_name": "m"}]}, "predictions[0].task_type"),
        (
            {
                "type": "IMAGE",
                "groundtruths": [
                    {"task_type": "OBJECT_DETECTION", "bboxes": [{"confidence": 0.5}]}
                ],
            },
            "groundtruths[0].bboxes[0].confidence",
        ),
        (
            {
                "type": "IMAGE",
                "predictions": [{"task_type": "OBJECT_DETECTION", "bboxes": [{"top": "high"}]}],
            },
            "predictions[0].bboxes[0].top",
        ),
        (
            {
                "type": "IMAGE",
                "predictions": [
                    {"task_type": "INSTANCE_SEGMENTATION", "bboxes": [{"coco_polygon": [1, 2, 3]}]}
                ],
            },
            "predictions[0].bboxes[0].coco_polygon",
        ),
        (
            {
                "type": "IMAGE",
                "predictions": [{"task_type": "CLASSIFICATION", "encoded_logits": "???"}],
            },
            "predictions[0].encoded_logits",
        ),
        ("just a string", ""),
    ],
)
def test_bad_values_name_their_field(record: object, field: str) -> None:
    assert error_of(record).field == field


def test_legacy_aliases() -> None:
    spec = normalise(
        {
            "image_metadata": {"uri": "s3://b/x.jpg", "width": 10},
            "tags.split": "train",
            "prediction": {"class_name": "dog", "model_name": "m"},
            "groundtruth": "cat",
        },
        1,
    )
    assert spec.fields["type"] == "IMAGE"
    assert json.loads(spec.fields["metadata"]) == {"uri": "s3://b/x.jpg", "width": 10}
    assert spec.tags == {"split": "train"}
    assert [(p.task_type, p.fields["class_name"], p.model_name) for p in spec.predictions] == [
        ("CLASSIFICATION", "dog", "m")
    ]
    assert [(g.task_type, g.fields["class_name"]) for g in spec.groundtruths] == [
        ("CLASSIFICATION", "cat")
    ]


@pytest.mark.parametrize(
    ("item", "kind", "expected"),
    [
        ({"top": 1, "left": 1, "height": 2, "width": 2}, "predictions", "OBJECT_DETECTION"),
        ({"segmentation_class_mask": [[0, 1]]}, "predictions", "SEMANTIC_SEGMENTATION"),
        ({"segmentation_class_mask": [[0, 1]]}, "groundtruths", "SEGMENTATION"),
        ({"class_name": "a"}, "groundtruths", "CLASSIFICATION"),
        ({"completions": [{"text": "hi"}]}, "predictions", "COMPLETION"),
    ],
)
def test_task_type_inference(item: dict[str, object], kind: str, expected: str) -> None:
    spec = normalise({"type": "IMAGE", kind: [item]}, 1)
    assert getattr(spec, kind)[0].task_type == expected


def test_segmentation_aliases_share_one_key_but_keep_their_spelling() -> None:
    assert task_key("SEGMENTATION") == task_key("SEMANTIC_SEGMENTATION")
    spec = normalise(
        {
            "type": "IMAGE",
            "groundtruths": [
                {
                    "task_type": "SEGMENTATION",
                    "segmentation_class_mask": [[0, 1], [1, 1]],
                    "class_names": ["bg", "dog"],
                }
            ],
        },
        1,
    )
    groundtruth = spec.groundtruths[0]
    assert groundtruth.task_type == "SEGMENTATION"
    assert json.loads(groundtruth.fields["metrics"]) == {"distribution": {"bg": 1, "dog": 3}}
    assert groundtruth.fields["encoded_segmentation_class_mask"].startswith("BCJNGG")


def test_tag_values_become_text_and_null_means_delete() -> None:
    spec = normalise({"type": "IMAGE", "tags": {"n": 1, "ok": True, "gone": None}}, 1)
    assert spec.tags == {"n": "1", "ok": "true", "gone": None}
    assert normalise({"id": DP, "tags": None}, 1).tags is None
    assert not normalise({"id": DP}, 1).tags_given


def test_logits_override_explicit_values_and_make_a_vector() -> None:
    spec = normalise(
        {
            "type": "IMAGE",
            "predictions": [
                {
                    "task_type": "CLASSIFICATION",
                    "class_name": "explicit",
                    "confidence": 0.01,
                    "logits": [0.1, 0.2, 0.8],
                    "class_names": ["positive", "negative", "neutral"],
                    "metrics": {"custom": 1},
                }
            ],
        },
        1,
    )
    prediction = spec.predictions[0]
    assert prediction.fields["class_name"] == "neutral"
    assert prediction.fields["confidence"] == 0.4889026577188538
    assert prediction.metrics == {"custom": 1, "entropy": 0.9525912616642588}
    assert [(v.type, v.layer, v.shape) for v in prediction.vectors] == [("LOGITS", None, [3])]


def test_embeddings_per_layer_and_deletions() -> None:
    spec = normalise(
        {
            "type": "IMAGE",
            "predictions": [
                {
                    "task_type": "CLASSIFICATION",
                    "model_name": "m",
                    "embeddings": {"l1": [1, 2], "l2": None},
                    "grad_embeddings": [3, 4],
                }
            ],
        },
        1,
    )
    vectors = spec.predictions[0].vectors
    assert [(v.type, v.layer, v.value is None) for v in vectors] == [
        ("EMBEDDINGS", "l1", False),
        ("EMBEDDINGS", "l2", True),
        ("GRAD_EMBEDDINGS", "", False),
    ]
    cleared = normalise(
        {"id": DP, "predictions": [{"task_type": "CLASSIFICATION", "embeddings": None}]}, 1
    )
    assert cleared.predictions[0].vectors[0].clear_all


def test_bbox_from_polygon_and_confidences() -> None:
    spec = normalise(
        {
            "type": "IMAGE",
            "predictions": [
                {
                    "task_type": "INSTANCE_SEGMENTATION",
                    "bboxes": [
                        {
                            "coco_polygon": [1, 2, 5, 2, 5, 9],
                            "class_names": ["a", "b"],
                            "confidences": [0.3, 0.7],
                            "objectness": 0.9,
                        }
                    ],
                }
            ],
        },
        1,
    )
    child = spec.predictions[0].children["bboxes"]
    assert child is not None
    box = child[0]
    assert (box.fields["top"], box.fields["left"], box.fields["height"], box.fields["width"]) == (
        2.0,
        1.0,
        7.0,
        4.0,
    )
    assert (box.fields["class_name"], box.fields["confidence"]) == ("b", 0.7)
    assert box.metrics is not None and 0 < box.metrics["entropy"] < 1


def test_lane_classifications_get_derived_values() -> None:
    spec = normalise(
        {
            "type": "IMAGE",
            "predictions": [
                {
                    "task_type": "LANE_DETECTION",
                    "lanes": [
                        {
                            "coco_polyline": [0, 0, 1, 1],
                            "confidence": 0.5,
                            "classifications": [
                                {
                                    "name": "kind",
                                    "class_names": ["solid", "dashed"],
                                    "confidences": [0.2, 0.8],
                                }
                            ],
                        }
                    ],
                }
            ],
        },
        1,
    )
    lanes = spec.predictions[0].children["lanes"]
    assert lanes is not None
    classification = json.loads(lanes[0].fields["classifications"])[0]
    assert classification["class_name"] == "dashed"
    assert classification["confidence"] == 0.8
    assert "entropy" in classification["metrics"]


def test_empty_child_list_means_delete_all() -> None:
    spec = normalise({"id": DP, "predictions": [{"task_type": "COMPLETION", "completions": []}]}, 1)
    assert spec.predictions[0].children == {"completions": None}
