"""Values the lake derives from what a record sends (reference §3.3–§3.5).

Confidences, class names, normalised entropy and MC-dropout variance from logits or
confidences; segmentation masks and their encodings; boxes from polygons or masks; embeddings
turned into flat vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lake.encoding import encode_json, encode_npy, resize_nearest
from lake.errors import RecordError

MAX_EMBEDDINGS_SIZE = 5000


def normalised_entropy(p: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """Σ −p·ln p / ln N over ``axis`` (N = the number of values aggregated), p clipped to 1e-10."""
    axes = (axis,) if isinstance(axis, int) else axis
    n = int(np.prod([p.shape[a] for a in axes]))
    clipped = np.clip(p, 1e-10, 1.0)
    total = np.sum(-clipped * np.log(clipped), axis=axes)
    return total / math.log(n) if n > 1 else total * 0.0


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    # Unshifted first: it reproduces the reference's test vectors to the last digit; the
    # max-shifted form only where exp would overflow.
    with np.errstate(over="ignore"):
        exps = np.exp(x)
    if not np.isfinite(exps).all():
        exps = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return exps / np.sum(exps, axis=axis, keepdims=True)


def _sigmoid_pair(x: np.ndarray) -> np.ndarray:
    """[..., 1] logits → [..., 2] probabilities (p, 1 − p)."""
    p = 1.0 / (1.0 + np.exp(-x[..., 0]))
    return np.stack([p, 1.0 - p], axis=-1)


def _class_probabilities(x: np.ndarray, axis: int) -> np.ndarray:
    if x.shape[axis] == 1:
        return np.moveaxis(_sigmoid_pair(np.moveaxis(x, axis, -1)), -1, axis)
    return _softmax(x, axis)


def class_name_of(index: int, class_names: list[str] | None) -> str:
    if class_names and 0 <= index < len(class_names):
        return str(class_names[index])
    return str(index)


@dataclass
class LogitsResult:
    confidences: list[float]
    confidence: float
    class_name: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    mask: np.ndarray | None = None


def process_logits(logits: np.ndarray, class_names: list[str] | None) -> LogitsResult:
    """Derive confidences, class and metrics from logits of shape [C], [S,C], [C,H,W], [S,C,H,W]."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim == 1 and x.size >= 1:  # the same arithmetic as a batch of [C] logits
        return _classification(rows_probabilities(x[None, :])[0], class_names)
    if x.ndim == 2 and x.shape[0] >= 1 and x.shape[1] >= 1:  # MC dropout classification
        samples = _class_probabilities(x, 1)
        result = _classification(samples.mean(axis=0), class_names)
        result.metrics["variance"] = float(np.mean(np.var(samples, axis=0)))
        return result
    if x.ndim == 3 and min(x.shape) >= 1:
        return _segmentation(_class_probabilities(x, 0), None)
    if x.ndim == 4 and min(x.shape) >= 1:
        samples = _class_probabilities(x, 1)
        pixel_variance = np.mean(np.var(samples, axis=0), axis=0)
        return _segmentation(samples.mean(axis=0), float(np.mean(pixel_variance)))
    raise RecordError(
        f"Unknown logits shape {list(x.shape)}: expected [C], [S,C], [C,H,W] or [S,C,H,W]",
        field="logits",
    )


def _classification(p: np.ndarray, class_names: list[str] | None) -> LogitsResult:
    index = int(np.argmax(p))
    return LogitsResult(
        confidences=[float(v) for v in p],
        confidence=float(p[index]),
        class_name=class_name_of(index, class_names),
        metrics={"entropy": float(rows_entropy(p[None, :])[0])},
    )


def _segmentation(p: np.ndarray, variance: float | None) -> LogitsResult:
    pixel_entropy = normalised_entropy(p, 0)
    confidences = p.reshape(p.shape[0], -1).mean(axis=1)
    metrics = {"entropy": float(np.mean(pixel_entropy))}
    if variance is not None:
        metrics["variance"] = variance
    return LogitsResult(
        confidences=[float(v) for v in confidences],
        confidence=float(np.mean(confidences)),
        class_name=None,
        metrics=metrics,
        mask=np.argmax(p, axis=0),
    )


def process_confidences(
    confidences: list[float],
    class_names: list[str] | None,
) -> tuple[float, str | None, float]:
    """(confidence = max, class_name = class_names[argmax] or None, normalised entropy)."""
    p = np.asarray(confidences, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise RecordError("confidences must be a non-empty list of numbers", field="confidences")
    index = int(np.argmax(p))
    name = str(class_names[index]) if class_names and index < len(class_names) else None
    return float(p[index]), name, float(normalised_entropy(p, 0))


def squeeze_mask(value: Any, field_name: str) -> np.ndarray:
    """An HxW integer mask from HxW, HxWx1 or 1xHxW nested lists."""
    try:
        mask = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise RecordError("must be a rectangular array of numbers", field=field_name) from exc
    if mask.ndim == 3 and 1 in (mask.shape[0], mask.shape[2]):
        mask = mask.reshape(mask.shape[1:] if mask.shape[0] == 1 else mask.shape[:2])
    if mask.ndim != 2 or mask.size == 0:
        raise RecordError(f"must be an HxW array, got shape {list(mask.shape)}", field=field_name)
    if np.isnan(mask).any():
        raise RecordError("must not contain NaN", field=field_name)
    return mask.astype(np.int64)


def class_mask_fields(
    mask: np.ndarray,
    class_names: list[str] | None,
) -> tuple[dict[str, Any], dict[str, int]]:
    """Columns for a segmentation class mask, and its class pixel distribution."""
    values, counts = np.unique(mask, return_counts=True)
    distribution = {
        class_name_of(int(v), class_names): int(c) for v, c in zip(values, counts, strict=True)
    }
    columns = {
        "encoded_segmentation_class_mask": encode_npy(mask),
        "encoded_resized_segmentation_class_mask": encode_json(resize_nearest(mask).tolist()),
    }
    return columns, distribution


def instance_mask_fields(mask: np.ndarray) -> dict[str, Any]:
    columns: dict[str, Any] = {
        "encoded_segmentation_mask": encode_npy(mask),
        "encoded_resized_segmentation_mask": encode_json(resize_nearest(mask).tolist()),
    }
    ys, xs = np.nonzero(mask)
    if ys.size:
        columns.update(
            top=float(ys.min()),
            left=float(xs.min()),
            height=float(ys.max() - ys.min()),
            width=float(xs.max() - xs.min()),
        )
    return columns


def box_from_polygon(polygon: list[float]) -> dict[str, float]:
    xs, ys = polygon[0::2], polygon[1::2]
    return {
        "top": float(min(ys)),
        "left": float(min(xs)),
        "height": float(max(ys) - min(ys)),
        "width": float(max(xs) - min(xs)),
    }


FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504: vectors are stored at float16 precision


def half_precision(array: np.ndarray, field_name: str) -> np.ndarray:
    """``array`` rounded to float16 precision (as float32); values float16 cannot hold are an
    error, never a silent infinity."""
    too_large = np.abs(array) > FLOAT16_MAX
    if too_large.any():
        value = float(array[too_large].flat[0])
        raise RecordError(
            f"{value:.6g} is beyond ±{FLOAT16_MAX:.0f}: vectors are stored as float16",
            field=field_name,
        )
    return array.astype(np.float16).astype(np.float32)


def embedding_vector(value: Any, field_name: str) -> tuple[np.ndarray, list[int]]:
    """A flat float vector (float16 precision) and its shape before flattening.

    3-D arrays (C×H×W) larger than MAX_EMBEDDINGS_SIZE are spatially max-pooled first.
    """
    try:
        array = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise RecordError("must be a rectangular array of numbers", field=field_name) from exc
    if array.ndim == 3 and array.size > MAX_EMBEDDINGS_SIZE:
        array = _max_pool(array)
    shape = [int(s) for s in array.shape]
    return half_precision(array, field_name).reshape(-1), shape


def _max_pool(array: np.ndarray) -> np.ndarray:
    channels, height, width = array.shape
    hwc = np.moveaxis(array, 0, -1)
    side = math.sqrt(MAX_EMBEDDINGS_SIZE / channels)
    kh = max(1, math.ceil(height / side * height / width))
    kw = max(1, math.ceil(width / side * width / height))
    pad_h, pad_w = (-height) % kh, (-width) % kw
    padded = np.pad(hwc, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=np.nan)
    blocks = padded.reshape((height + pad_h) // kh, kh, (width + pad_w) // kw, kw, channels)
    return np.nanmax(blocks, axis=(1, 3))


def rows_probabilities(x: np.ndarray) -> np.ndarray:
    """Row-wise probabilities, exactly as :func:`process_logits` computes them for [C]."""
    if x.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-x[:, 0]))
        return np.stack([p, 1.0 - p], axis=1)
    with np.errstate(over="ignore"):
        exps = np.exp(x)
    bad = ~np.isfinite(exps).all(axis=1)
    if bad.any():
        exps[bad] = np.exp(x[bad] - np.max(x[bad], axis=1, keepdims=True))
    return exps / np.sum(exps, axis=1, keepdims=True)


def rows_entropy(p: np.ndarray) -> np.ndarray:
    n = p.shape[1]
    clipped = np.clip(p, 1e-10, 1.0)
    total = np.sum(-clipped * np.log(clipped), axis=1)
    return total / math.log(n) if n > 1 else total * 0.0
