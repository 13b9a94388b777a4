"""The lake's tables and their Arrow schemas.

Types are plain Arrow types that Spark, DuckDB and Polars read directly: ids are canonical
lowercase UUID strings, times are UTC microsecond timestamps, free-form JSON objects
(``metadata``, ``metrics``, ``classifications``) are JSON text, vectors are lists of floats.
Every row carries ``organization_id``. Child rows (bboxes, lanes, completions, feature vectors)
also carry their ``datapoint`` so that replacements and cascades are one predicate away.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
STR = pa.string()
F64 = pa.float64()


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, typ) for name, typ in fields])


_BOX = (("top", F64), ("left", F64), ("height", F64), ("width", F64))

SCHEMAS: dict[str, pa.Schema] = {
    "datapoints": _schema(
        ("id", STR),
        ("organization_id", STR),
        ("created_at", TS),
        ("request_id", STR),
        ("type", STR),
        ("metadata", STR),
        ("text", STR),
        ("parent_datapoint", STR),
    ),
    "tags": _schema(
        ("id", STR),
        ("organization_id", STR),
        ("datapoint", STR),
        ("name", STR),
        ("value", STR),
        ("created_at", TS),
    ),
    "groundtruths": _schema(
        ("id", STR),
        ("organization_id", STR),
        ("datapoint", STR),
        ("task_type", STR),
        ("created_at", TS),
        ("class_name", STR),
        ("class_names", pa.list_(STR)),
        *_BOX,
        ("metrics", STR),
        ("encoded_segmentation_class_mask", STR),
        ("encoded_resized_segmentation_class_mask", STR),
    ),
    "predictions": _schema(
        ("id", STR),
        ("organization_id", STR),
        ("datapoint", STR),
        ("task_type", STR),
        ("created_at", TS),
        ("class_name", STR),
        ("class_names", pa.list_(STR)),
        ("confidence", F64),
        ("confidences", pa.list_(F64)),
        *_BOX,
        ("metrics", STR),
        ("model_name", STR),
        ("encoded_segmentation_class_mask", STR),
        ("encoded_resized_segmentation_class_mask", STR),
    ),
    "bboxes": _schema(
        ("id", STR),
        ("organization_id", STR),
        ("prediction", STR),
        ("groundtruth", STR),
        ("datapoint", STR),
        ("created_at", TS),
        ("class_name", STR),
        ("class_names", pa.list_(STR)),
        ("objectness", F64),
        ("confidence", F64),
        ("confidences", pa.list_(F64)),
        ("encoded_segmentation_mask", STR),
        ("encoded_resized_segmentation_mask", STR),
        *_BOX,
        ("metrics", STR),
        ("coco_polygon", pa.list_(F64)),
    ),
    "lanes": _schema(
        ("id", STR),
        ("organization_id", STR),
        ("prediction", STR),
        ("groundtruth", STR),
        ("datapoint", STR),
        ("created_at", TS),
        ("classifications", STR),
        ("confidence", F64),
        ("metrics", STR),
        ("coco_polyline", pa.list_(F64)),
    ),
    "completions": _schema(
        ("id", STR),
        ("organization_id", STR),
        ("prediction", STR),
        ("groundtruth", STR),
        ("datapoint", STR),
        ("created_at", TS),
        ("confidence", F64),
        ("metrics", STR),
        ("text", STR),
    ),
    "feature_vectors": _schema(
        ("id", STR),
        ("organization_id", STR),
        ("type", STR),
        ("prediction", STR),
        ("datapoint", STR),
        ("bbox", STR),
        ("model_name", STR),
        ("metadata", STR),
        ("value", pa.list_(pa.float32())),
        ("shape", pa.list_(pa.int32())),
    ),
    "uploads": _schema(
        ("id", STR),
        ("organization_id", STR),
        ("status", STR),
        ("created_at", TS),
        ("updated_at", TS),
        ("finished_at", TS),
        ("source", STR),
        ("landing_key", STR),
        ("options", STR),
        ("lines_done", pa.int64()),
        ("records_read", pa.int64()),
        ("datapoints_created", pa.int64()),
        ("datapoints_updated", pa.int64()),
        ("predictions", pa.int64()),
        ("groundtruths", pa.int64()),
        ("failures", pa.int64()),
        ("errors", STR),
        ("error_message", STR),
    ),
    "datasets": _schema(
        ("id", STR),
        ("organization_id", STR),
        ("created_at", TS),
        ("created_by", STR),
        ("display_name", STR),
    ),
    # one working (uncommitted) version per dataset; committed versions are never changed
    "dataset_versions": _schema(
        ("id", STR),
        ("organization_id", STR),
        ("dataset", STR),
        ("created_at", TS),
        ("created_by", STR),
        ("message", STR),
        ("committed", pa.bool_()),
        ("dirty", pa.bool_()),
        ("parent", STR),  # lineage: the version this one was copied from (commit or checkout)
        ("committed_at", TS),
        ("lake_state", STR),  # committed: the lake state (table versions) at commit, as JSON
    ),
    # every version's full membership, keyed by version
    "dataset_members": _schema(
        ("version", STR),
        ("organization_id", STR),
        ("datapoint", STR),
    ),
    # API keys of the server: only a hash of each key is kept
    "api_keys": _schema(
        ("id", STR),
        ("organization_id", STR),
        ("name", STR),
        ("key_hash", STR),
        ("prefix", STR),  # the key's first characters, to tell keys apart in listings
        ("created_at", TS),
        ("revoked_at", TS),
    ),
    # miners: a configuration (JSON) and the state of its latest run (Celery-style status)
    "miners": _schema(
        ("id", STR),
        ("organization_id", STR),
        ("display_name", STR),
        ("strategy", STR),
        ("config", STR),
        ("created_at", TS),
        ("updated_at", TS),
        ("created_by", STR),
        ("task_id", STR),  # the latest run; null before any run and after a reset
        ("task_status", STR),  # PENDING (queued), STARTED, SUCCESS, FAILURE
        ("task_requested_at", TS),
        ("task_started_at", TS),
        ("task_done_at", TS),
        ("task_message", STR),  # why a run failed
        ("task_result", pa.list_(STR)),  # datapoint ids, most informative first
    ),
    # record errors of running uploads (a finished upload's first ones are in its row)
    "upload_errors": _schema(
        ("upload_id", STR),
        ("organization_id", STR),
        ("line", pa.int64()),
        ("field", STR),
        ("reason", STR),
    ),
}

#: The tables that hold datapoints and what hangs off them (not the bookkeeping of datasets,
#: uploads and keys): what SQL reads and what an export writes.
DATA_TABLES = (
    "datapoints",
    "tags",
    "groundtruths",
    "predictions",
    "bboxes",
    "lanes",
    "completions",
    "feature_vectors",
)
#: Child lists of a prediction or groundtruth.
ATTACHMENT_CHILDREN = ("bboxes", "lanes", "completions")
TABLE_NAMES = tuple(SCHEMAS)


def empty(name: str) -> pa.Table:
    return SCHEMAS[name].empty_table()
