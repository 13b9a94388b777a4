from __future__ import annotations

import bz2
import gzip
import io

import pytest

from lake import ndjson
from lake.errors import InputError, RecordError
from lake.ndjson import LineReader, parse_line


def read(data: bytes, **options: int) -> list[tuple[int, bytes, str | None]]:
    return [
        (line.number, line.data, line.error and line.error.reason)
        for line in LineReader(io.BytesIO(data), **options)
    ]


@pytest.fixture(params=[3, 1 << 20], ids=["tiny-chunks", "default-chunks"])
def chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(ndjson, "CHUNK", request.param)
    return int(request.param)


def test_all_three_separators_and_blank_lines(chunk: int) -> None:
    data = b'{"a":1}\r{"b":2}\r\n\n{"c":3}\n  \n{"d":4}'
    assert read(data) == [
        (1, b'{"a":1}', None),
        (2, b'{"b":2}', None),
        (4, b'{"c":3}', None),
        (6, b'{"d":4}', None),
    ]


def test_trailing_separators_add_no_line(chunk: int) -> None:
    assert [n for n, _, _ in read(b"x\r\ny\r\n")] == [1, 2]
    assert [n for n, _, _ in read(b"x\ry\r")] == [1, 2]


def test_gzip_with_several_members(chunk: int) -> None:
    data = gzip.compress(b"x\ny") + gzip.compress(b"\nz\r")
    assert [d for _, d, _ in read(data)] == [b"x", b"y", b"z"]


def test_bz2_detected_by_magic(chunk: int) -> None:
    assert [d for _, d, _ in read(bz2.compress(b"x\r\ny"))] == [b"x", b"y"]


def test_truncated_gzip_is_an_input_error() -> None:
    with pytest.raises(InputError, match="end marker"):
        read(gzip.compress(b"x\n" * 1000)[:-20])


def test_corrupt_gzip_is_an_input_error() -> None:
    data = bytearray(gzip.compress(b"hello\n" * 100))
    data[20:30] = b"\xff" * 10
    with pytest.raises(InputError):
        read(bytes(data))


def test_oversized_lines_are_reported_and_skipped(chunk: int) -> None:
    lines = read(b"ab\nabcdefghij\ncd\nabcdefghijk", max_line=5)
    assert lines == [
        (1, b"ab", None),
        (2, b"", "line is longer than the limit of 5 bytes"),
        (3, b"cd", None),
        (4, b"", "line is longer than the limit of 5 bytes"),
    ]


def test_parse_line_accepts_nan_and_infinity_as_null() -> None:
    assert parse_line(b'{"a": NaN, "b": [1, Infinity, -Infinity]}') == {
        "a": None,
        "b": [1, None, None],
    }


def test_parse_line_reports_malformed_json() -> None:
    with pytest.raises(RecordError, match="malformed JSON"):
        parse_line(b'{"a": 1')
