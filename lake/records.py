"""Validation and normalisation of ingestion records (reference §3.1–§3.5, §4).

:func:`normalise` turns one parsed JSON object into a :class:`RecordSpec`: legacy aliases
resolved, task types inferred, every value checked, derived values (confidences, entropy,
masks, boxes, vectors) computed. Nothing here reads the lake; applying a spec to existing rows is
:mod:`lake.ingest`'s job. Problems raise :class:`~lake.errors.RecordError` naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lake import derive
from lake.encoding import decode_npy
from lake.errors import RecordError
from lake.ids import canonical
from lake.ndjson import dump_json

DATAPOINT_TYPES = frozenset({"IMAGE", "VIDEO", "AUDIO", "TEXT"})
TASK_TYPES = frozenset(
    {
        "OBJECT_DETECTION",
        "CLASSIFICATION",
        "NER",
        "SEGMENTATION",
        "SEMANTIC_SEGMENTATION",
        "INSTANCE_SEGMENTATION",
        "LANE_DETECTION",
        "COMPLETION",
    }
)
_LEGACY_PREFIXES = (
    "features",
    "tags",
    "image_metadata",
    "text_metadata",
    "audio_metadata",
    "video_metadata",
    "groundtruth",
    "prediction",
)
_LEGACY_METADATA = {
    "image_metadata": "IMAGE",
    "video_metadata": "VIDEO",
    "audio_metadata": "AUDIO",
    "text_metadata": "TEXT",
}
_BOX_KEYS = ("top", "left", "height", "width")
_CHILD_KINDS = ("bboxes", "lanes", "completions")


def task_key(task_type: str | None) -> str | None:
    """The task type used for uniqueness: SEGMENTATION and SEMANTIC_SEGMENTATION are one."""
    return "SEMANTIC_SEGMENTATION" if task_type == "SEGMENTATION" else task_type


@dataclass
class ChildSpec:
    """One bbox, lane or completion: its id (update) or None (append), and columns to set."""

    id: str | None
    fields: dict[str, Any]
    metrics: dict[str, Any] | None = None


@dataclass
class VectorSpec:
    """A feature vector to set (``value`` given) or delete (``value`` None).

    ``layer`` None with ``clear_all`` deletes every vector of ``type`` of the prediction.
    """

    type: str
    layer: str | None
    value: np.ndarray | None = None
    shape: list[int] | None = None
    clear_all: bool = False


@dataclass
class AttachmentSpec:
    kind: str  # "predictions" or "groundtruths"
    id: str | None
    task_type: str | None
    model_name: str | None
    fields: dict[str, Any]
    metrics: dict[str, Any] | None = None
    children: dict[str, list[ChildSpec] | None] = field(default_factory=dict)
    vectors: list[VectorSpec] = field(default_factory=list)
    #: [C] logits (and class names) whose derived values :func:`finish_logits` fills in
    pending_logits: tuple[np.ndarray, list[str] | None] | None = None

    @property
    def key(self) -> str | None:
        return task_key(self.task_type)


_MISSING: Any = object()


@dataclass
class RecordSpec:
    line: int
    id: str | None
    fields: dict[str, Any]
    tags: dict[str, str | None] | Any | None = _MISSING  # _MISSING: leave tags alone
    groundtruths: list[AttachmentSpec] = field(default_factory=list)
    predictions: list[AttachmentSpec] = field(default_factory=list)

    @property
    def tags_given(self) -> bool:
        return self.tags is not _MISSING


# -- helpers ---------------------------------------------------------------------------------
def json_text(value: Any) -> str | None:
    """JSON text for a JSON column (non-finite floats become null)."""
    if value is None:
        return None
    try:
        return dump_json(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise RecordError(f"cannot be stored as JSON: {exc}") from exc


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(f"must be a number, got {type(value).__name__}", field=name)
    result = float(value)
    return result if math.isfinite(result) else None


def _string(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise RecordError(f"must be a string, got {type(value).__name__}", field=name)


def _object(value: Any, name: str) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise RecordError(f"must be an object, got {type(value).__name__}", field=name)


def _uuid(value: Any, name: str) -> str:
    result = canonical(value)
    if result is None:
        raise RecordError(f"must be a UUID, got {value!r:.80}", field=name)
    return result


def _string_list(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise RecordError(f"must be a list of strings, got {type(value).__name__}", field=name)
    return [str(v) for v in value]


def _number_list(value: Any, name: str) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        (isinstance(v, int | float) and not isinstance(v, bool)) or v is None for v in value
    ):
        raise RecordError("must be a list of numbers", field=name)
    return [float(v) if v is not None else math.nan for v in value]


def _array(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise RecordError("must be a rectangular array of numbers", field=name) from exc
    if array.dtype == object:
        raise RecordError("must be a rectangular array of numbers", field=name)
    return array


# -- legacy normalisation --------------------------------------------------------------------
def _unflatten(record: dict[str, Any]) -> dict[str, Any]:
    if not any("." in key for key in record):
        return record
    out: dict[str, Any] = {}
    for key, value in record.items():
        head, dot, rest = key.partition(".")
        if dot and head in _LEGACY_PREFIXES:
            node = out.setdefault(head, {})
            if not isinstance(node, dict):
                raise RecordError(f"both {head!r} and dotted {key!r} given", field=key)
            parts = rest.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        else:
            out[key] = value
    return out


def _legacy(record: dict[str, Any]) -> dict[str, Any]:
    record = _unflatten(record)
    for key, kind in _LEGACY_METADATA.items():
        if key in record:
            record = dict(record)
            value = record.pop(key)
            record.setdefault("metadata", value)
            record.setdefault("type", kind)
    for singular, plural in (("prediction", "predictions"), ("groundtruth", "groundtruths")):
        if singular in record:
            record = dict(record)
            value = record.pop(singular)
            if plural not in record:
                record[plural] = value if isinstance(value, list) else [value]
    return record


def _infer_task_type(item: dict[str, Any], kind: str) -> str | None:
    if any(k in item for k in _BOX_KEYS):
        return "OBJECT_DETECTION"
    if "segmentation_class_mask" in item:
        return "SEMANTIC_SEGMENTATION" if kind == "predictions" else "SEGMENTATION"
    if "class_name" in item:
        return "CLASSIFICATION"
    if "completions" in item:
        return "COMPLETION"
    return None


# -- the record ------------------------------------------------------------------------------
def normalise(raw: Any, line: int, *, defer_logits: bool = False) -> RecordSpec:
    """Validate one parsed record and compute everything derivable from it alone.

    With ``defer_logits`` the values derived from classification logits are left to
    :func:`finish_logits`, which computes them for many records at once.
    """
    try:
        spec = _normalise(raw, line)
    except RecordError as exc:
        exc.line = line
        raise
    if not defer_logits:
        finish_logits([spec])
    return spec


def finish_logits(specs: list[RecordSpec]) -> None:
    """Fill in what [C] logits give (confidences, class, entropy), vectorised per length."""
    pending = [a for spec in specs for a in spec.predictions if a.pending_logits is not None]
    by_length: dict[int, list[AttachmentSpec]] = {}
    for attachment in pending:
        assert attachment.pending_logits is not None
        by_length.setdefault(len(attachment.pending_logits[0]), []).append(attachment)
    for group in by_length.values():
        x = np.stack([a.pending_logits[0] for a in group])  # type: ignore[index]
        p = derive.rows_probabilities(x)
        best = np.argmax(p, axis=1).tolist()
        confidences = p.tolist()
        entropy = derive.rows_entropy(p).tolist()
        for i, attachment in enumerate(group):
            names = attachment.pending_logits[1]  # type: ignore[index]
            attachment.fields["confidences"] = confidences[i]
            attachment.fields["confidence"] = confidences[i][best[i]]
            attachment.fields["class_name"] = derive.class_name_of(best[i], names)
            assert attachment.metrics is not None
            attachment.metrics["entropy"] = entropy[i]
            attachment.pending_logits = None


def _normalise(raw: Any, line: int) -> RecordSpec:
    if not isinstance(raw, dict):
        raise RecordError(f"a record must be a JSON object, got {type(raw).__name__}")
    record = _legacy(raw)
    datapoint_id = _uuid(record["id"], "id") if record.get("id") is not None else None
    fields: dict[str, Any] = {}
    if "type" in record:
        kind = record["type"]
        if not isinstance(kind, str) or kind not in DATAPOINT_TYPES:
            raise RecordError(
                f"must be one of {sorted(DATAPOINT_TYPES)}, got {kind!r:.40}", field="type"
            )
        fields["type"] = kind
    if "metadata" in record:
        metadata = _object(record["metadata"], "metadata")
        if metadata is not None:  # replaced wholesale, null-valued keys dropped (reference §4.2)
            metadata = {k: v for k, v in metadata.items() if v is not None}
        fields["metadata"] = json_text(metadata)
    if record.get("text") is not None:
        fields["text"] = _string(record["text"], "text")
        fields["type"] = "TEXT"
    if record.get("parent_datapoint") is not None:
        fields["parent_datapoint"] = _uuid(record["parent_datapoint"], "parent_datapoint")
    if datapoint_id is None and "type" not in fields:
        raise RecordError(
            "required when creating a datapoint (one of IMAGE, VIDEO, AUDIO, TEXT)", field="type"
        )
    spec = RecordSpec(line, datapoint_id, fields)
    if "tags" in record:
        spec.tags = _tags(record["tags"])
    spec.groundtruths = _attachments(record.get("groundtruths"), "groundtruths")
    spec.predictions = _attachments(record.get("predictions"), "predictions")
    return spec


def _tags(value: Any) -> dict[str, str | None] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RecordError(
            f"must be an object of name: value, got {type(value).__name__}", field="tags"
        )
    tags: dict[str, str | None] = {}
    for name, tag in value.items():
        if tag is None:
            tags[name] = None
        elif isinstance(tag, bool):
            tags[name] = "true" if tag else "false"
        elif isinstance(tag, str | int | float):
            tags[name] = str(tag)
        else:
            raise RecordError(
                f"must be a string, number, boolean or null, got {type(tag).__name__}",
                field=f"tags.{name}",
            )
    return tags


def _attachments(value: Any, kind: str) -> list[AttachmentSpec]:
    if value is None:
        return []
    if isinstance(value, dict | str):
        value = [value]
    if not isinstance(value, list):
        raise RecordError(f"must be a list of objects, got {type(value).__name__}", field=kind)
    specs = []
    for index, item in enumerate(value):
        if item is None:
            continue
        if isinstance(item, str):
            item = {"class_name": item}
        try:
            specs.append(_attachment(item, kind))
        except RecordError as exc:
            raise exc.at(f"{kind}[{index}]") from None
    return specs


def _attachment(item: Any, kind: str) -> AttachmentSpec:
    if not isinstance(item, dict):
        raise RecordError(f"must be an object, got {type(item).__name__}")
    att_id = _uuid(item["id"], "id") if item.get("id") is not None else None
    task_type = item.get("task_type")
    if task_type is None:
        task_type = _infer_task_type(item, kind)
    elif not isinstance(task_type, str) or task_type.upper() not in TASK_TYPES:
        raise RecordError(
            f"must be one of {sorted(TASK_TYPES)}, got {task_type!r:.40}", field="task_type"
        )
    else:
        task_type = task_type.upper()
    if task_type is None and att_id is None:
        raise RecordError(
            "required when creating a prediction or groundtruth (and it could not "
            "be inferred from the keys given)",
            field="task_type",
        )
    model_name = None
    if kind == "predictions" and ("model_name" in item or att_id is None):
        model_name = _string(item.get("model_name"), "model_name") or ""
    spec = AttachmentSpec(kind, att_id, task_type, model_name, {})
    _common_fields(spec, item)
    if kind == "predictions":
        _prediction_values(spec, item)
    elif "segmentation_class_mask" in item:
        _class_mask(spec, item)
    for child_kind in _CHILD_KINDS:
        if child_kind in item:
            spec.children[child_kind] = _children(item[child_kind], child_kind, kind)
    return spec


def _common_fields(spec: AttachmentSpec, item: dict[str, Any]) -> None:
    if "class_name" in item:
        value = item["class_name"]
        spec.fields["class_name"] = None if value is None else str(value)
    if "class_names" in item:
        spec.fields["class_names"] = _string_list(item["class_names"], "class_names")
    for key in _BOX_KEYS:
        if key in item:
            spec.fields[key] = _number(item[key], key)


def _prediction_values(spec: AttachmentSpec, item: dict[str, Any]) -> None:
    if item.get("metrics") is not None:
        spec.metrics = dict(_object(item["metrics"], "metrics") or {})
    class_names = spec.fields.get("class_names")
    if "confidences" in item:
        confidences = _number_list(item["confidences"], "confidences")
        spec.fields["confidences"] = confidences
        if confidences:
            confidence, name, entropy = derive.process_confidences(confidences, class_names)
            spec.fields["confidence"] = confidence
            if name is not None:
                spec.fields["class_name"] = name
            spec.metrics = {**(spec.metrics or {}), "entropy": entropy}
    if "confidence" in item and "confidences" not in item:
        spec.fields["confidence"] = _number(item["confidence"], "confidence")
    logits = item.get("logits")
    if item.get("encoded_logits") is not None:
        logits = _decode_logits(item["encoded_logits"])
    if "logits" in item or "encoded_logits" in item:
        _logits(spec, logits, class_names)
    if (
        "segmentation_class_mask" in item
        and spec.fields.get("encoded_segmentation_class_mask") is None
    ):
        _class_mask(spec, item)
    for key, vector_type in (("embeddings", "EMBEDDINGS"), ("grad_embeddings", "GRAD_EMBEDDINGS")):
        if key in item:
            spec.vectors.extend(_embeddings(item[key], key, vector_type))


def _decode_logits(value: Any) -> Any:
    try:
        if isinstance(value, list):
            return [decode_npy(v).astype(np.float32).tolist() for v in value]
        if isinstance(value, str):
            return decode_npy(value).astype(np.float32).tolist()
    except Exception as exc:
        raise RecordError(f"not npy-lz4-base64 data: {exc}", field="encoded_logits") from exc
    raise RecordError("must be a string or a list of strings", field="encoded_logits")


def _logits(spec: AttachmentSpec, logits: Any, class_names: list[str] | None) -> None:
    if logits is None or (isinstance(logits, list) and not logits):
        spec.vectors.append(VectorSpec("LOGITS", None))
        return
    array = _array(logits, "logits")
    if np.isnan(array).any():
        raise RecordError("must not contain NaN or null", field="logits")
    flat = derive.half_precision(array, "logits")
    spec.vectors.append(VectorSpec("LOGITS", None, flat.reshape(-1), list(array.shape)))
    if array.ndim == 1 and array.size >= 1:
        # classification: derived later for the whole batch; keep the metrics key order
        spec.pending_logits = (array, class_names)
        spec.metrics = {**(spec.metrics or {}), "entropy": None}
        return
    result = derive.process_logits(array, class_names)
    spec.fields["confidences"] = result.confidences
    spec.fields["confidence"] = result.confidence
    if result.class_name is not None:
        spec.fields["class_name"] = result.class_name
    spec.metrics = {**(spec.metrics or {}), **result.metrics}
    if result.mask is not None:
        columns, distribution = derive.class_mask_fields(result.mask, class_names)
        spec.fields.update(columns)
        spec.metrics["distribution"] = distribution


def _class_mask(spec: AttachmentSpec, item: dict[str, Any]) -> None:
    value = item["segmentation_class_mask"]
    if value is None:
        spec.fields["encoded_segmentation_class_mask"] = None
        spec.fields["encoded_resized_segmentation_class_mask"] = None
        return
    mask = derive.squeeze_mask(value, "segmentation_class_mask")
    columns, distribution = derive.class_mask_fields(mask, spec.fields.get("class_names"))
    spec.fields.update(columns)
    if spec.kind == "predictions":
        spec.metrics = {**(spec.metrics or {}), "distribution": distribution}
    else:  # groundtruths keep no metrics from the record, only the derived distribution
        spec.fields["metrics"] = json_text({"distribution": distribution})


def _embeddings(value: Any, key: str, vector_type: str) -> list[VectorSpec]:
    if value is None or (isinstance(value, dict | list) and not value):
        return [VectorSpec(vector_type, None, clear_all=True)]
    layers = value if isinstance(value, dict) else {"": value}
    specs = []
    for layer, array in layers.items():
        name = f"{key}.{layer}" if layer else key
        if array is None or (isinstance(array, list) and not array):
            specs.append(VectorSpec(vector_type, layer))
            continue
        flat, shape = derive.embedding_vector(array, name)
        specs.append(VectorSpec(vector_type, layer, flat, shape))
    return specs


# -- children --------------------------------------------------------------------------------
def _children(value: Any, child_kind: str, parent_kind: str) -> list[ChildSpec] | None:
    if value is None or value == []:
        return None  # deletes every child of this kind
    if not isinstance(value, list):
        raise RecordError(
            f"must be a list of objects, got {type(value).__name__}", field=child_kind
        )
    builder = {"bboxes": _bbox, "lanes": _lane, "completions": _completion}[child_kind]
    specs = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise RecordError(
                f"must be an object, got {type(item).__name__}", field=f"{child_kind}[{index}]"
            )
        try:
            child_id = _uuid(item["id"], "id") if item.get("id") is not None else None
            specs.append(ChildSpec(child_id, *builder(item, parent_kind == "groundtruths")))
        except RecordError as exc:
            raise exc.at(f"{child_kind}[{index}]") from None
    return specs


def _confidence_for(item: dict[str, Any], is_groundtruth: bool) -> dict[str, Any]:
    if "confidence" not in item or item["confidence"] is None:
        return {}
    if is_groundtruth:
        raise RecordError("must be null for a groundtruth", field="confidence")
    return {"confidence": _number(item["confidence"], "confidence")}


def _bbox(item: dict[str, Any], is_gt: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    fields: dict[str, Any] = {}
    metrics: dict[str, Any] | None = None
    if "class_name" in item:
        fields["class_name"] = None if item["class_name"] is None else str(item["class_name"])
    if "class_names" in item:
        fields["class_names"] = _string_list(item["class_names"], "class_names")
    if "objectness" in item:
        fields["objectness"] = _number(item["objectness"], "objectness")
    fields.update(_confidence_for(item, is_gt))
    if item.get("segmentation_mask") is not None:
        mask = derive.squeeze_mask(item["segmentation_mask"], "segmentation_mask")
        fields.update(derive.instance_mask_fields(mask))
    if item.get("coco_polygon") is not None:
        polygon = _number_list(item["coco_polygon"], "coco_polygon")
        if not polygon or len(polygon) % 2 or any(math.isnan(v) for v in polygon):
            raise RecordError("must be a non-empty list of x, y pairs", field="coco_polygon")
        fields["coco_polygon"] = polygon
        fields.update(derive.box_from_polygon(polygon))
    for key in _BOX_KEYS:  # explicit box fields win over derived extents
        if key in item:
            fields[key] = _number(item[key], key)
    if item.get("confidences") is not None:
        confidences = _number_list(item["confidences"], "confidences")
        if is_gt:
            raise RecordError("must be null for a groundtruth", field="confidences")
        fields["confidences"] = confidences
        confidence, name, entropy = derive.process_confidences(
            confidences or [], fields.get("class_names")
        )
        fields["confidence"] = confidence
        fields["class_name"] = name
        metrics = {"entropy": entropy}
    return fields, metrics


def _lane(item: dict[str, Any], is_gt: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    fields: dict[str, Any] = _confidence_for(item, is_gt)
    if item.get("coco_polyline") is not None:
        polyline = _number_list(item["coco_polyline"], "coco_polyline")
        if not polyline or len(polyline) % 2:
            raise RecordError("must be a non-empty list of x, y pairs", field="coco_polyline")
        fields["coco_polyline"] = polyline
    if "classifications" in item:
        fields["classifications"] = json_text(_classifications(item["classifications"]))
    metrics = _object(item.get("metrics"), "metrics")
    return fields, dict(metrics) if metrics else None


def _classifications(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise RecordError("must be a list of objects", field="classifications")
    out = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise RecordError("must be an object", field=f"classifications[{index}]")
        item = dict(item)
        if item.get("confidences") is not None and item.get("class_names") is not None:
            names = _string_list(item["class_names"], f"classifications[{index}].class_names")
            confidences = _number_list(item["confidences"], f"classifications[{index}].confidences")
            confidence, name, entropy = derive.process_confidences(confidences or [], names)
            item.update(confidence=confidence, class_name=name)
            item["metrics"] = {**(item.get("metrics") or {}), "entropy": entropy}
        out.append(item)
    return out


def _completion(item: dict[str, Any], is_gt: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    fields: dict[str, Any] = _confidence_for(item, is_gt)
    if "text" in item:
        fields["text"] = _string(item["text"], "text")
    metrics = _object(item.get("metrics"), "metrics")
    return fields, dict(metrics) if metrics else None
