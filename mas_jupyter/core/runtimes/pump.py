"""The read pump: every PTY of one event loop is read in turns, with one shared budget.

A PTY read returns at most about 4 KiB and costs tens of microseconds in the kernel, and each
chunk read then costs the engine (ring, screen, transcript) and every console (one frame). So:

- A worker streaming alone is read up to `MAX_READS` times per turn of the loop and its reads
  go on as one chunk: few, large chunks, few frames, most of the time spent reading.
- Many workers streaming at once share `READS_PER_TURN` reads per turn, in the order they
  became readable (first in, first out: nobody starves), each at least `MIN_READS` so chunks
  stay large. Those left over wait for the next turn, after the loop has looked at its sockets:
  a turn stays short, so a keystroke never waits behind fifty streams.
- A worker typed into during the last `INTERACTIVE_SECONDS`, which has printed less than
  `ECHO_BYTES` since (an echo, a prompt, not a flood), is read at once when readable, ahead
  of the queue: its echo goes out in the same turn. At most `URGENT_PER_TURN` such reads per
  turn (a hundred workers typed into at once are not all urgent); the others go to the front
  of the queue.
- While someone types into a PTY that does not stream itself (written to during the last
  `TYPING_SECONDS`, and less than `ECHO_BYTES` read from it since), a turn for the other
  streams starts `YIELD_SECONDS` after it is due instead of at once. A loop
  that never sleeps loses the CPU to the streams' producers and wakes late for a keystroke;
  one that sleeps between turns is run the moment the keystroke or its echo arrives (figures
  and the cost to the streams' rate in docs/performance.md). A command typed into a PTY that
  then floods it (the PTY typed into is the stream) is read at full speed.

- A PTY that nobody is answering holds its output back a moment before passing it on
  (`PtyProcess._pass_on`): until it was quiet for 20 ms or its command ended (a shell took
  the terminal back), and for at most 20 ms, or up to
  250 ms when many hold output, so that while they stream they pass output on about 250
  times a second in all, whatever their number.

The pump watches its PTYs through an epoll of its own, edge-triggered, which the loop watches
as one fd: a PTY is reported once when output arrives, not again and again while it waits in
the queue, and nothing is registered or unregistered per read (a read that stops before the
PTY is empty puts it back in the queue itself). The pump lives while it watches PTYs: when the
last one is forgotten, its epoll is closed and the loop's next PTY starts a new pump.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import weakref
from collections import deque
from typing import Protocol

READS_PER_TURN = 12
MAX_READS = 12
MIN_READS = 2
INTERACTIVE_SECONDS = 0.5
URGENT_PER_TURN = 4
TYPING_SECONDS = 1.0
YIELD_SECONDS = 0.001
ECHO_BYTES = 16 * 1024  # more than a screenful answering input is a stream
HOLD_SECONDS = 0.02
HOLD_MAX_SECONDS = 0.25
RELEASES_PER_SECOND = 250


class Readable(Protocol):
    """What the pump reads: a PTY with a non-blocking fd (None once closed)."""

    fd: int | None
    eof: bool
    typed_at: float | None  # loop time of the last input
    printed_since_typed: int  # bytes read since that input

    def read_burst(self, reads: int) -> bool:
        """Read at most `reads` times and pass the output on; True if there may be more."""
        ...


class ReadPump:
    """The queue of ready PTYs of one loop, served in turns of `READS_PER_TURN` reads."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: deque[Readable] = deque()
        self.queued: set[Readable] = set()
        self.ptys: dict[int, Readable] = {}  # by fd
        self.epoll = select.epoll()
        loop.add_reader(self.epoll.fileno(), self._poll)
        self.scheduled = False
        self.urgent_left = URGENT_PER_TURN
        self.typist: Readable | None = None  # the PTY last typed into
        self.next_turn: asyncio.Handle | None = None
        self.holding = 0  # PTYs holding output back (see PtyProcess._pass_on)

    def watch(self, pty: Readable) -> None:
        """Have the loop tell the pump when the PTY has output."""
        if pty.fd is not None:
            self.ptys[pty.fd] = pty
            self.epoll.register(pty.fd, select.EPOLLIN | select.EPOLLET)

    def forget(self, pty: Readable) -> None:
        """Stop watching the PTY (it is skipped if still queued)."""
        if pty.fd is not None and self.ptys.get(pty.fd) is pty:
            del self.ptys[pty.fd]
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(pty.fd)
        self.queued.discard(pty)
        if pty is self.typist:
            self.typist = None
        if not self.ptys:
            self.close()

    @property
    def closed(self) -> bool:
        """Whether the pump stopped watching (its last PTY was forgotten)."""
        return self.epoll.closed

    def close(self) -> None:
        """Stop watching: the epoll's fd is closed, and the loop gets a new pump if needed."""
        if self.epoll.closed:
            return
        if self.next_turn is not None:
            self.next_turn.cancel()
        self.scheduled = False
        self.queue.clear()
        self.queued.clear()
        self.loop.remove_reader(self.epoll.fileno())  # a closed loop watches nothing already
        self.epoll.close()
        if _pumps.get(self.loop) is self:
            del _pumps[self.loop]

    def hold_seconds(self) -> float:
        """How long a stream's output may be held: `HOLD_SECONDS`, longer when many PTYs hold
        output, so that together they pass it on about `RELEASES_PER_SECOND` times a second
        (each release costs a frame per console), at most `HOLD_MAX_SECONDS`."""
        return min(HOLD_MAX_SECONDS, max(HOLD_SECONDS, self.holding / RELEASES_PER_SECOND))

    def typed(self, pty: Readable) -> None:
        """Someone wrote to the PTY: until it streams, space the other streams' turns."""
        self.typist = pty

    def _typing(self) -> bool:
        return self.typist is not None and self._answering(self.typist, TYPING_SECONDS)

    def interactive(self, pty: Readable) -> bool:
        """Whether someone is answering the PTY: its output should go out at once."""
        return self._answering(pty, INTERACTIVE_SECONDS)

    def _answering(self, pty: Readable, seconds: float) -> bool:
        """Typed into during the last `seconds`, and printed no more than an echo since."""
        return (
            pty.typed_at is not None
            and self.loop.time() - pty.typed_at < seconds
            and pty.printed_since_typed < ECHO_BYTES
        )

    def _poll(self) -> None:
        for fd, _events in self.epoll.poll(0):
            pty = self.ptys.get(fd)
            if pty is not None:
                self._readable(pty)

    def _readable(self, pty: Readable) -> None:
        if pty.fd is None or pty.eof or pty in self.queued:
            return
        urgent = self.interactive(pty)
        if urgent and self.urgent_left > 0:
            if self.urgent_left == URGENT_PER_TURN:
                self.loop.call_soon(self._refill)  # the first urgent read of this turn
            self.urgent_left -= 1
            if not pty.read_burst(MIN_READS):  # interactive: its echo goes out in this turn
                return
        self.queued.add(pty)
        if urgent:
            self.queue.appendleft(pty)
        else:
            self.queue.append(pty)
        if not self.scheduled:
            self._schedule()

    def _refill(self) -> None:
        self.urgent_left = URGENT_PER_TURN

    def _turn(self) -> None:
        self.scheduled = False
        left = READS_PER_TURN
        share = min(MAX_READS, max(MIN_READS, READS_PER_TURN // max(1, len(self.queue))))
        while self.queue and left > 0:
            pty = self.queue.popleft()
            self.queued.discard(pty)
            if pty.fd is None or pty.eof:
                continue  # closed while it waited
            reads = min(share, left)
            left -= reads
            if pty.read_burst(reads) and pty.fd is not None and not pty.eof:
                self.queued.add(pty)  # not emptied: no new edge will say so
                self.queue.append(pty)
        if self.queue:
            self._schedule()

    def _schedule(self) -> None:
        self.scheduled = True
        if self._typing():
            self.next_turn = self.loop.call_later(YIELD_SECONDS, self._turn)
        else:
            self.next_turn = self.loop.call_soon(self._turn)


_pumps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReadPump] = weakref.WeakKeyDictionary()


def pump() -> ReadPump:
    """The read pump of the running loop."""
    loop = asyncio.get_running_loop()
    found = _pumps.get(loop)
    if found is None or found.closed:
        found = _pumps[loop] = ReadPump(loop)
    return found
