"""A ring of the most recent raw output bytes of a worker, bounded in bytes.

A reconnecting client rebuilds its screen from this history, so it keeps raw bytes (escape
sequences included) and knows absolute offsets: `total` is how many bytes were ever appended,
`start` the absolute offset of the oldest byte still kept. A client that remembers the offset it
has seen asks for `since(offset)` and gets only what it missed.

Storage is a deque of the chunks as they were read, so an append copies nothing (every chunk
of output passes here, and with many workers streaming a buffer that grows and is compacted
spent its time moving megabytes). The oldest chunks are dropped whole, the oldest kept one
may be partly dropped (`_skip`). A chunk smaller than `MERGE_BYTES` (a keystroke's echo) is
merged into the previous small one, so many small chunks do not cost an object each. Reading
(`snapshot`, `since`, `tail`) joins, which happens once per console connect.
"""

from __future__ import annotations

from collections import deque

MERGE_BYTES = 4096


class OutputRing:
    """The last `capacity` bytes of a stream, addressed by absolute offsets."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be a positive number of bytes")
        self.capacity = capacity
        self._chunks: deque[bytes] = deque()
        self._skip = 0  # bytes of the first chunk already dropped
        self._size = 0  # bytes kept
        self._total = 0

    @property
    def total(self) -> int:
        """Bytes ever appended: the absolute offset of the end of the stream."""
        return self._total

    @property
    def start(self) -> int:
        """Absolute offset of the oldest byte still kept."""
        return self._total - self._size

    def __len__(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        """Add output at the end, dropping the oldest bytes beyond the capacity."""
        n = len(data)
        if not n:
            return
        data = bytes(data)  # no copy for bytes; a bytearray must not change under us
        self._total += n
        if n >= self.capacity:
            # The new chunk alone fills the ring: keep its tail and nothing older.
            self._chunks = deque([data[n - self.capacity :]])
            self._skip, self._size = 0, self.capacity
            return
        chunks = self._chunks
        if n < MERGE_BYTES and chunks and len(chunks[-1]) < MERGE_BYTES:
            chunks[-1] += data
        else:
            chunks.append(data)
        self._size += n
        excess = self._size - self.capacity
        while excess > 0:
            first = len(chunks[0]) - self._skip
            if first <= excess:
                chunks.popleft()
                self._skip = 0
                self._size -= first
                excess -= first
            else:
                self._skip += excess
                self._size -= excess
                excess = 0

    def snapshot(self) -> bytes:
        """All kept bytes, oldest first."""
        return self.tail(self._size)

    def since(self, offset: int) -> bytes:
        """Bytes after absolute `offset`; everything kept if that offset was already dropped."""
        if offset >= self._total:
            return b""
        return self.tail(self._total - max(offset, self.start))

    def tail(self, n: int) -> bytes:
        """The last `n` kept bytes (fewer if less is kept)."""
        n = min(n, self._size)
        if n <= 0:
            return b""
        parts, got = [], 0
        for chunk in reversed(self._chunks):
            parts.append(chunk)
            got += len(chunk)
            if got >= n:
                break
        parts.reverse()
        data = b"".join(parts)
        return data[len(data) - n :]

    def clear(self) -> None:
        """Forget the kept bytes; `total` stays, so offsets remain absolute."""
        self._chunks.clear()
        self._skip = self._size = 0


def first_character(data: bytes) -> int:
    """Where the first whole UTF-8 character of `data` starts: a ring that dropped its oldest
    bytes may begin inside a character, with up to three of its continuation bytes."""
    start = 0
    while start < min(len(data), 3) and 0x80 <= data[start] < 0xC0:
        start += 1
    return start
