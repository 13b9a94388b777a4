"""Property tests: any record gives a spec or a RecordError, any filter list a result or a
QueryError, any miner configuration a config or an InputError. Never another exception."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lake import InputError, Lake, QueryError, RecordError, Uploads
from lake.miners import MinerConfig
from lake.query import select
from lake.query.filters import Op
from lake.records import TASK_TYPES, finish_logits, normalise

# the profiles are in tests/conftest.py: 200 examples a test, or 5,000 with
# `pytest --hypothesis-profile deep`
SETTINGS = settings(suppress_health_check=list(HealthCheck))

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
vectors = st.lists(floats, min_size=1, max_size=6)
task_types = st.sampled_from(sorted(TASK_TYPES)) | st.text(max_size=10)
attachment_values: dict[str, st.SearchStrategy[Any]] = {
    "task_type": task_types,
    "model_name": st.text(max_size=8) | st.none(),
    "class_name": st.text(max_size=8) | st.none(),
    "class_names": st.lists(st.text(max_size=4), max_size=4) | json_values,
    "logits": vectors | st.lists(vectors, max_size=3) | json_values,
    "confidences": vectors | json_values,
    "embeddings": vectors | st.dictionaries(st.text(max_size=4), vectors, max_size=2) | json_values,
    "grad_embeddings": vectors | json_values,
    "encoded_logits": st.text(max_size=12) | json_values,
    "segmentation_class_mask": st.lists(
        st.lists(st.integers(0, 4), min_size=2, max_size=2), min_size=2, max_size=2
    )
    | json_values,
    "bboxes": st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "top",
                    "left",
                    "height",
                    "width",
                    "class_name",
                    "confidences",
                    "objectness",
                    "coco_polygon",
                    "id",
                ]
            ),
            json_values,
            max_size=5,
        ),
        max_size=3,
    )
    | json_values,
    "lanes": json_values,
    "completions": json_values,
    "metrics": json_values,
    "id": st.uuids().map(str) | st.text(max_size=8),
}
attachments = (
    st.lists(st.fixed_dictionaries({}, optional=attachment_values), max_size=3) | json_values
)
record_values: dict[str, st.SearchStrategy[Any]] = {
    "id": st.uuids().map(str) | st.text(max_size=8) | json_values,
    "type": st.sampled_from(["IMAGE", "VIDEO", "AUDIO", "TEXT"]) | json_values,
    "metadata": st.dictionaries(st.text(max_size=6), json_values, max_size=3) | json_values,
    "tags": st.dictionaries(st.text(max_size=6), scalars, max_size=3) | json_values,
    "text": st.text(max_size=10) | json_values,
    "parent_datapoint": st.uuids().map(str) | json_values,
    "predictions": attachments,
    "groundtruths": attachments,
    "prediction": json_values,
    "groundtruth": json_values,
    "image_metadata": json_values,
    "request_id": json_values,
}
records = st.fixed_dictionaries({}, optional=record_values) | json_values


@SETTINGS
@given(records)
def test_any_record_is_normalised_or_refused_with_a_record_error(raw: Any) -> None:
    try:
        spec = normalise(raw, 7, defer_logits=True)
    except RecordError as exc:
        assert exc.line == 7 and exc.reason
        return
    finish_logits([spec])
    assert spec.line == 7


COLUMNS = [
    "id",
    "type",
    "metadata.uri",
    "metadata.width",
    "tags.name",
    "tags.value",
    "text",
    "predictions.class_name",
    "predictions.confidence",
    "predictions.metrics.entropy",
    "groundtruths.class_name",
    "created_at",
    "nope",
    "bboxes.top",
]
filters = (
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "left": st.sampled_from(COLUMNS) | scalars,
                "op": st.sampled_from([op.value for op in Op]) | st.text(max_size=6) | scalars,
                "right": json_values,
            },
        )
        | json_values,
        max_size=4,
    )
    | json_values
)


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    lake = Lake(str(Path(tmp_path_factory.mktemp("props")) / "lake"))
    uploads = Uploads(lake)
    data = b"\n".join(
        b'{"type": "IMAGE", "metadata": {"uri": "s3://b/%d.jpg", "width": %d}, '
        b'"tags": {"split": "val"}, "predictions": [{"task_type": "CLASSIFICATION", '
        b'"model_name": "m", "class_names": ["a", "b"], "logits": [%d, 0]}]}' % (i, i, i)
        for i in range(5)
    )
    assert uploads.run(uploads.create(data).id).status == "SUCCEEDED"
    yield lake


@SETTINGS
@given(value=filters, table=st.sampled_from(["datapoints", "predictions", "bboxes"]))
def test_any_filter_list_selects_or_is_refused_with_a_query_error(
    small_lake: Lake, value: Any, table: str
) -> None:
    try:
        rows = select(small_lake, table, filters=value, columns=["id"]).to_pylist()
    except QueryError as exc:
        assert str(exc)
        return
    assert all(isinstance(r["id"], str) for r in rows)


miner_payloads = (
    st.fixed_dictionaries(
        {},
        optional={
            "display_name": st.text(max_size=6) | scalars,
            "strategy": st.sampled_from(
                ["RANDOM", "ENTROPY", "CORESET", "NEAREST_NEIGHBORS", "weighted entropy", "BADGE"]
            )
            | scalars,
            "size": st.integers(-5, 2_000_000) | scalars,
            "model_name": st.text(max_size=6) | scalars,
            "metric": st.sampled_from(["euclidean", "cosine", "euclidian"]) | scalars,
            "embeddings_field": st.sampled_from(["embeddings", "logits"]) | scalars,
            "select": st.fixed_dictionaries(
                {},
                optional={
                    "filters": filters,
                    "limit": scalars,
                    "order_by": scalars,
                    "desc": scalars,
                },
            )
            | json_values,
            "select_reference": json_values,
            "skip_caching": scalars,
            "seed": scalars,
        },
    )
    | json_values
)


@SETTINGS
@given(miner_payloads)
def test_any_miner_configuration_is_accepted_or_refused_with_an_input_error(raw: Any) -> None:
    try:
        config = MinerConfig.parse(raw)
    except InputError as exc:
        assert str(exc)
        return
    assert MinerConfig.parse(config.to_doc()) == config  # what is stored parses back the same
