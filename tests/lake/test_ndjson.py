from __future__ import annotations

import bz2
import gzip
import io

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

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
    several = bz2.compress(b"x\r\ny") + bz2.compress(b"\nz")
    assert [d for _, d, _ in read(several)] == [b"x", b"y", b"z"]


def test_zstd_with_several_frames(chunk: int) -> None:
    data = zstandard.compress(b"x\ny") + zstandard.compress(b"\nz\r")
    assert [d for _, d, _ in read(data)] == [b"x", b"y", b"z"]


def test_truncated_or_corrupt_zstd_is_an_input_error() -> None:
    whole = zstandard.compress(bytes(range(256)) * 400 + b"\n")
    with pytest.raises(InputError, match="end marker"):
        read(whole[:-20])
    corrupt = bytearray(whole)
    corrupt[8:40] = b"\xff" * 32
    with pytest.raises(InputError, match="not valid compressed data"):
        read(bytes(corrupt))


@pytest.mark.parametrize("size", [0, 3, 5, 3 << 20])
def test_landed_files_are_zstd_unless_already_compressed(size: int) -> None:
    text = (b'{"type": "IMAGE", "n": 12345}\n' * (size // 30 + 1))[:size]
    landed = ndjson.zstd_unless_compressed(io.BytesIO(text)).read()
    assert landed.startswith(ndjson.ZSTD_MAGIC)
    assert b"".join(d + b"\n" for _, d, _ in read(landed)) == b"".join(
        d + b"\n" for _, d, _ in read(text)
    )
    if size > 1 << 20:
        assert len(landed) < size / 10
    for compressed in (gzip.compress(text), bz2.compress(text), zstandard.compress(text)):
        assert ndjson.zstd_unless_compressed(io.BytesIO(compressed)).read() == compressed


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


def batches(data: bytes, **options: int) -> list[tuple[list[int], list[int]]]:
    from lake.ndjson import read_batches

    return [
        ([int(n) for n in batch.numbers], [e.number for e in batch.errors])
        for batch in read_batches(io.BytesIO(data), **options)
    ]


def test_batches_hold_about_the_requested_number_of_lines(chunk: int) -> None:
    data = b"\n".join(b'{"i": %d}' % i for i in range(10))
    got = batches(data, batch_lines=4)
    assert [n for numbers, _ in got for n in numbers] == list(range(1, 11))
    assert all(len(numbers) <= 4 for numbers, _ in got)


def test_batches_skip_the_lines_already_done(chunk: int) -> None:
    data = b"a\r\nb\r\n\r\nc\rd"
    assert [
        n for numbers, _ in batches(data, batch_lines=100, skip_through=2) for n in numbers
    ] == [4, 5]


def test_batches_report_oversized_lines_with_their_neighbours(chunk: int) -> None:
    data = b"ab\n" + b"x" * 50 + b"\ncd\n" + b"y" * 50
    got = batches(data, batch_lines=1, max_line=10)
    assert [n for numbers, _ in got for n in numbers] == [1, 3]
    assert [e for _, errors in got for e in errors] == [2, 4]


def test_raw_batch_lines_keep_their_numbers() -> None:
    from lake.ndjson import read_batches

    (batch,) = read_batches(io.BytesIO(b"x\n\n  \ny\n"), batch_lines=10)
    assert batch.lines() == [(1, b"x", None), (4, b"y", None)]
    assert batch.last_line == 4


def test_batches_of_large_records_are_cut_by_size(chunk: int) -> None:
    data = b"\n".join(b'{"v": "%s"}' % (b"x" * 100) for _ in range(10))
    got = batches(data, batch_lines=1000, batch_bytes=250)
    assert [len(numbers) for numbers, _ in got] == [2, 2, 2, 2, 2]


class _Trickle(io.RawIOBase):
    """A stream answering reads in the sizes given (then what is left), as a socket might."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes = data, list(sizes)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        step = self.sizes.pop(0) if self.sizes else len(self.data)
        if size >= 0:
            step = min(step, size)
        piece, self.data = self.data[:step], self.data[step:]
        return piece


_LINE = st.one_of(
    st.text('ab{}" :,', max_size=12),  # records, short and long
    st.sampled_from(["", " ", "\t ", "  x"]),  # blank, or starting with white space
)


@given(
    lines=st.lists(_LINE, max_size=150),  # past 64 lines: the other way of finding ends
    separators=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=1, max_size=4),
    trailing=st.booleans(),
    sizes=st.lists(st.integers(1, 4000), max_size=30),
    max_line=st.integers(3, 14),
    skip_through=st.integers(0, 5),
    batch_lines=st.integers(1, 6),
)
def test_batches_read_every_line_as_a_plain_split_does(
    lines: list[str],
    separators: list[str],
    trailing: bool,
    sizes: list[int],
    max_line: int,
    skip_through: int,
    batch_lines: int,
) -> None:
    from lake.ndjson import read_batches

    text = "".join(
        line + (separators[i % len(separators)] if i < len(lines) - 1 or trailing else "")
        for i, line in enumerate(lines)
    ).encode()
    expected_lines, expected_errors = [], []
    pieces = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if text.endswith((b"\n", b"\r")):
        pieces.pop()
    for number, piece in enumerate(pieces, 1):
        if number <= skip_through or not piece.strip():
            continue
        if len(piece) > max_line:
            expected_errors.append(number)
        else:
            expected_lines.append((number, piece))

    got_lines, got_errors = [], []
    for batch in read_batches(
        _Trickle(text, sizes),
        batch_lines=batch_lines,
        max_line=max_line,
        skip_through=skip_through,
    ):
        got_lines += [(line.number, line.data) for line in batch.lines()]
        got_errors += [line.number for line in batch.errors]
    assert got_lines == expected_lines
    assert sorted(got_errors) == expected_errors


@pytest.mark.parametrize("width", [8, 2000], ids=["short-lines", "long-lines"])
def test_many_lines_of_a_chunk_keep_their_numbers(chunk: int, width: int) -> None:
    from lake.ndjson import read_batches

    lines = [b'{"i":"%s"}' % (b"x" * (width + i % 5)) if i % 7 else b"  " for i in range(300)]
    data = b"\n".join(lines) + b"\n"
    got = [
        (line.number, line.data)
        for batch in read_batches(io.BytesIO(data), batch_lines=1000)
        for line in batch.lines()
    ]
    assert got == [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
