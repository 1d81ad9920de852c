"""Tests of the output ring: byte bound, absolute offsets, replay since an offset."""

from __future__ import annotations

import random

import pytest

from mas_jupyter.core.ring import OutputRing


def test_keeps_everything_under_capacity():
    ring = OutputRing(16)
    ring.append(b"hello ")
    ring.append(b"world")
    assert ring.snapshot() == b"hello world"
    assert ring.total == 11
    assert ring.start == 0
    assert len(ring) == 11


def test_drops_oldest_bytes_beyond_capacity():
    ring = OutputRing(8)
    ring.append(b"abcdef")
    ring.append(b"ghijkl")
    assert ring.snapshot() == b"efghijkl"
    assert ring.total == 12
    assert ring.start == 4


def test_chunk_larger_than_capacity_keeps_its_tail():
    ring = OutputRing(4)
    ring.append(b"xy")
    ring.append(b"0123456789")
    assert ring.snapshot() == b"6789"
    assert ring.start == 8
    assert ring.total == 12


def test_since_returns_only_missed_bytes():
    ring = OutputRing(100)
    ring.append(b"first;")
    seen = ring.total
    ring.append(b"second;")
    assert ring.since(seen) == b"second;"
    assert ring.since(ring.total) == b""
    assert ring.since(ring.total + 50) == b""
    assert ring.since(0) == b"first;second;"


def test_since_an_offset_already_dropped_gives_everything_kept():
    ring = OutputRing(5)
    ring.append(b"0123456789")
    assert ring.since(2) == b"56789"
    assert ring.since(7) == b"789"


def test_tail():
    ring = OutputRing(10)
    ring.append(b"abc")
    assert ring.tail(2) == b"bc"
    assert ring.tail(100) == b"abc"
    assert ring.tail(0) == b""


def test_many_small_chunks_stay_bounded_and_correct():
    ring = OutputRing(1000)
    expected = bytearray()
    for i in range(20000):
        chunk = f"{i},".encode()
        ring.append(chunk)
        expected += chunk
    assert ring.total == len(expected)
    assert ring.snapshot() == bytes(expected[-1000:])
    assert ring.start == len(expected) - 1000
    # Small chunks are merged: what is held stays within the capacity plus one merged chunk.
    assert sum(len(c) for c in ring._chunks) <= 1000 + 4096 + 10
    assert len(ring._chunks) <= 3


def test_clear_keeps_offsets_absolute():
    ring = OutputRing(10)
    ring.append(b"abc")
    ring.clear()
    assert ring.snapshot() == b""
    assert ring.total == 3
    assert ring.start == 3
    ring.append(b"de")
    assert ring.since(3) == b"de"


def test_empty_append_is_a_no_op():
    ring = OutputRing(4)
    ring.append(b"")
    assert ring.total == 0


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        OutputRing(0)


def test_random_chunks_agree_with_a_plain_buffer():
    rng = random.Random(7)
    for capacity in (1, 10, 5000, 20000):
        ring = OutputRing(capacity)
        expected = bytearray()
        for _ in range(400):
            size = rng.choice((0, 1, 3, 100, 4095, 4096, 9000, 30000))
            chunk = bytes(rng.randrange(256) for _ in range(min(size, 64))) * (size // 64 + 1)
            chunk = chunk[:size]
            ring.append(bytearray(chunk) if rng.random() < 0.2 else chunk)
            expected += chunk
            kept = bytes(expected[-capacity:])
            assert ring.total == len(expected) and len(ring) == len(kept)
            assert ring.start == len(expected) - len(kept)
            assert ring.snapshot() == kept
            n = rng.randrange(capacity + 2)
            assert ring.tail(n) == (kept[max(0, len(kept) - n) :] if n else b"")
            offset = rng.randrange(len(expected) + 2)
            assert ring.since(offset) == bytes(expected[max(offset, ring.start) :])
