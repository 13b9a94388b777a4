"""Derived values, including the reference's test vectors, reproduced exactly."""

from __future__ import annotations

import numpy as np
import pytest

from lake import derive
from lake.encoding import decode_json, decode_npy, encode_json, encode_npy, resize_nearest
from lake.errors import RecordError


def test_binary_logits_reference_vector() -> None:
    result = derive.process_logits(np.array([0.1]), ["positive", "negative"])
    assert result.confidences == [0.52497918747894, 0.47502081252106]
    assert result.class_name == "positive"
    assert result.confidence == 0.52497918747894
    assert result.metrics == {"entropy": 0.9981988829078698}


def test_multiclass_logits_reference_vector() -> None:
    result = derive.process_logits(np.array([0.1, 0.2, 0.8]), ["positive", "negative", "neutral"])
    assert result.confidences == [0.2427818748077445, 0.2683154674734019, 0.4889026577188538]
    assert result.class_name == "neutral"
    assert result.metrics["entropy"] == 0.9525912616642588


def test_class_name_falls_back_to_the_index() -> None:
    assert derive.process_logits(np.array([0.0, 3.0]), None).class_name == "1"


def test_huge_logits_do_not_overflow() -> None:
    result = derive.process_logits(np.array([1000.0, 0.0]), None)
    assert result.confidences == [1.0, 0.0]


def test_mc_dropout_classification() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    result = derive.process_logits(logits, ["a", "b"])
    assert result.confidences == pytest.approx([0.5, 0.5])
    assert result.metrics["entropy"] == pytest.approx(1.0)
    p = 1 / (1 + np.exp(-2.0))
    assert result.metrics["variance"] == pytest.approx(np.var([p, 1 - p]))


def test_segmentation_logits() -> None:
    logits = np.zeros((3, 2, 2))
    logits[2, 0, 0] = 5.0
    logits[1, 1, 1] = 5.0
    result = derive.process_logits(logits, None)
    assert result.mask is not None
    assert result.mask.tolist() == [[2, 0], [0, 1]]
    assert len(result.confidences) == 3
    assert result.confidence == pytest.approx(1 / 3)  # the reference's quirk: mean of means
    assert 0 < result.metrics["entropy"] < 1
    assert "variance" not in result.metrics


def test_mc_dropout_segmentation_has_variance() -> None:
    rng = np.random.default_rng(0)
    result = derive.process_logits(rng.normal(size=(4, 3, 5, 5)), None)
    assert result.metrics["variance"] > 0
    assert result.mask is not None and result.mask.shape == (5, 5)


@pytest.mark.parametrize("shape", [(), (2, 2, 2, 2, 2), (0,)])
def test_unknown_logits_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(RecordError, match="Unknown logits shape"):
        derive.process_logits(np.zeros(shape), None)


def test_process_confidences() -> None:
    confidence, name, entropy = derive.process_confidences([0.2, 0.7, 0.1], ["a", "b", "c"])
    assert (confidence, name) == (0.7, "b")
    assert entropy == pytest.approx(float(derive.normalised_entropy(np.array([0.2, 0.7, 0.1]), 0)))
    assert derive.process_confidences([0.9, 0.1], None)[1] is None


def test_box_from_polygon() -> None:
    assert derive.box_from_polygon([10, 20, 30, 5, 15, 40]) == {
        "top": 5.0,
        "left": 10.0,
        "height": 35.0,
        "width": 20.0,
    }


def test_instance_mask_fields_give_extents_and_encodings() -> None:
    mask = np.zeros((6, 8), dtype=np.int64)
    mask[2:4, 3:7] = 1
    fields = derive.instance_mask_fields(mask)
    assert (fields["top"], fields["left"], fields["height"], fields["width"]) == (2, 3, 1, 3)
    assert fields["encoded_segmentation_mask"].startswith("BCJNGG")
    assert decode_npy(fields["encoded_segmentation_mask"]).tolist() == mask.tolist()


def test_small_embeddings_are_flattened_to_float16_precision() -> None:
    values, shape = derive.embedding_vector([[0.1, 0.2], [0.3, 0.4]], "embeddings")
    assert shape == [2, 2]
    assert values.dtype == np.float32
    assert values.tolist() == np.array([0.1, 0.2, 0.3, 0.4], np.float16).astype(np.float32).tolist()


def test_large_3d_embeddings_are_max_pooled() -> None:
    array = np.arange(8 * 40 * 40, dtype=np.float32).reshape(8, 40, 40)
    values, shape = derive.embedding_vector(array, "embeddings")
    assert values.size <= 5000
    assert shape[-1] == 8  # moved to H x W x C
    assert values.max() == np.float32(np.float16(array.max()))


def test_npy_encoding_round_trip() -> None:
    text = encode_npy(np.array([[1, 2], [3, 4]]))
    assert text.startswith("BCJNGG")
    decoded = decode_npy(text)
    assert decoded.dtype == np.float16
    assert decoded.tolist() == [[1, 2], [3, 4]]


def test_json_encoding_round_trip_and_resize() -> None:
    mask = np.array([[0, 1], [2, 3]])
    resized = resize_nearest(mask, 4)
    assert resized.dtype == np.uint16
    assert resized.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert decode_json(encode_json(resized.tolist())) == resized.tolist()
