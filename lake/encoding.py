"""The two text encodings of arrays used on the wire (reference §3.4).

* npy-lz4-b64: ``base64(lz4.frame(np.save(array)))``; masks are written as float16.
* json-lz4-b64: ``base64(lz4.frame(json(nested list)))``, for the 512x512 resized masks.
"""

from __future__ import annotations

import base64
import io
import json

import lz4.frame
import numpy as np

MASK_RESIZE = 512


def encode_npy(array: np.ndarray, *, dtype: type = np.float16) -> str:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array).astype(dtype))
    packed = lz4.frame.compress(buffer.getvalue(), compression_level=lz4.frame.COMPRESSIONLEVEL_MAX)
    return base64.b64encode(packed).decode("ascii")


def decode_npy(text: str) -> np.ndarray:
    """Decode npy-lz4-b64; raw bytes without the npy magic are read as float16."""
    raw = lz4.frame.decompress(base64.b64decode(text))
    if raw.startswith(b"\x93NUMPY"):
        return np.load(io.BytesIO(raw), allow_pickle=False)
    return np.frombuffer(raw, dtype=np.float16)


def encode_json(nested: object) -> str:
    payload = json.dumps(nested, separators=(",", ":")).encode()
    packed = lz4.frame.compress(payload, compression_level=lz4.frame.COMPRESSIONLEVEL_MAX)
    return base64.b64encode(packed).decode("ascii")


def decode_json(text: str) -> object:
    return json.loads(lz4.frame.decompress(base64.b64decode(text)))


def resize_nearest(mask: np.ndarray, size: int = MASK_RESIZE) -> np.ndarray:
    """Nearest-neighbour resize of an HxW array to size x size, as uint16."""
    height, width = mask.shape
    rows = np.minimum((np.arange(size) * height / size).astype(np.int64), height - 1)
    cols = np.minimum((np.arange(size) * width / size).astype(np.int64), width - 1)
    return mask[rows[:, None], cols[None, :]].astype(np.uint16)
