"""Reading JSONL input: line numbers, endings, and lines too long to hold."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from streamlearn.jsonl import LongLine, iter_lines


def test_lines_keep_their_numbers_and_lose_their_endings(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\n{"b": 2}')  # CRLF, a blank line, no final newline
    consumed: list[int] = []
    assert list(iter_lines(path, consumed.append, max_bytes=100)) == [(1, b'{"a": 1}'), (2, b""), (3, b'{"b": 2}')]
    assert sum(consumed) == path.stat().st_size


def test_only_lines_well_over_the_limit_are_cut_and_they_keep_their_size(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"x" * 10 + b"\r\n" + b"y" * 11 + b"\n" + b"z" * 20 + b"\r\n" + b"w" * 13)
    lines = list(iter_lines(path, max_bytes=10))
    assert [number for number, _ in lines] == [1, 2, 3, 4]
    assert lines[0][1] == b"x" * 10 and lines[1][1] == b"y" * 11  # whole (the caller's size check rejects y)
    for (_, line), size in zip(lines[2:], (20, 13)):  # the last one has no newline
        assert isinstance(line, LongLine) and line.size == size and len(line) <= 12
        assert getattr(line, "size", len(line)) > 10


def test_line_endings_past_the_limit_are_not_content(tmp_path: Path) -> None:
    # The first piece read can end in "\r" (or "\r\r"): that is part of the ending, not of the record.
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"a" * 10 + b"\r\r\n" + b"b" * 11 + b"\r\n" + b"c" * 11 + b"\r")
    lines = [raw for _, raw in iter_lines(path, max_bytes=10)]
    assert lines[0] == b"a" * 10 and not isinstance(lines[0], LongLine)  # exactly at the limit: whole
    assert [getattr(raw, "size", len(raw)) for raw in lines[1:]] == [11, 11]
    assert [raw for _, raw in iter_lines(path)] == [b"a" * 10, b"b" * 11, b"c" * 11]  # as without a limit


def test_a_huge_line_is_skipped_without_being_held(tmp_path: Path) -> None:
    # A JSON array file passed as JSONL is one line of gigabytes: it used to be read into memory whole.
    path = tmp_path / "in.jsonl"
    with path.open("wb") as fh:
        fh.write(b"[")
        for _ in range(40):
            fh.write(b"1," * 500_000)  # 1 MB at a time: 40 MB in all
        fh.write(b"1]\n" + b'{"features": [1]}\n')
    consumed: list[int] = []
    tracemalloc.start()
    try:
        lines = list(iter_lines(path, consumed.append, max_bytes=1_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [number for number, _ in lines] == [1, 2]
    assert lines[0][1].size == 40_000_002 + 1 and len(lines[0][1]) <= 1_002
    assert lines[1][1] == b'{"features": [1]}'
    assert sum(consumed) == path.stat().st_size
    assert peak < 5_000_000, peak  # the line is 40 MB; it is read 1 MB at a time and dropped
