"""A ring of the most recent raw output bytes of a worker, bounded in bytes.

A reconnecting client rebuilds its screen from this history, so it keeps raw bytes (escape
sequences included) and knows absolute offsets: `total` is how many bytes were ever appended,
`start` the absolute offset of the oldest byte still kept. A client that remembers the offset it
has seen asks for `since(offset)` and gets only what it missed.

Storage is one bytearray that grows at the end and is compacted (its head deleted) only when the
dropped head is at least as large as the kept part, so each byte is moved a bounded number of
times: appends are O(len(data)) amortized, and many small chunks cost no per-chunk object.
"""

from __future__ import annotations


class OutputRing:
    """The last `capacity` bytes of a stream, addressed by absolute offsets."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be a positive number of bytes")
        self.capacity = capacity
        self._buf = bytearray()
        # Index in _buf of the oldest kept byte; bytes before it are dropped but not yet
        # compacted away.
        self._head = 0
        self._total = 0

    @property
    def total(self) -> int:
        """Bytes ever appended: the absolute offset of the end of the stream."""
        return self._total

    @property
    def start(self) -> int:
        """Absolute offset of the oldest byte still kept."""
        return self._total - (len(self._buf) - self._head)

    def __len__(self) -> int:
        return len(self._buf) - self._head

    def append(self, data: bytes) -> None:
        """Add output at the end, dropping the oldest bytes beyond the capacity."""
        n = len(data)
        if not n:
            return
        self._total += n
        if n >= self.capacity:
            # The new chunk alone fills the ring: keep its tail and nothing older.
            self._buf = bytearray(memoryview(data)[n - self.capacity :])
            self._head = 0
            return
        self._buf += data
        kept = len(self._buf) - self._head
        if kept > self.capacity:
            self._head += kept - self.capacity
        # Compact when the dead head outweighs the live part (amortized O(1) per byte), so
        # the buffer never holds more than about twice the capacity.
        if self._head >= self.capacity:
            del self._buf[: self._head]
            self._head = 0

    def snapshot(self) -> bytes:
        """All kept bytes, oldest first."""
        return bytes(memoryview(self._buf)[self._head :])

    def since(self, offset: int) -> bytes:
        """Bytes after absolute `offset`; everything kept if that offset was already dropped."""
        if offset >= self._total:
            return b""
        start = self.start
        if offset <= start:
            return self.snapshot()
        return bytes(memoryview(self._buf)[self._head + (offset - start) :])

    def tail(self, n: int) -> bytes:
        """The last `n` kept bytes (fewer if less is kept)."""
        if n <= 0:
            return b""
        kept = len(self._buf) - self._head
        return bytes(memoryview(self._buf)[len(self._buf) - min(n, kept) :])

    def clear(self) -> None:
        """Forget the kept bytes; `total` stays, so offsets remain absolute."""
        self._buf = bytearray()
        self._head = 0
