"""The read pump shares each turn of the loop between ready PTYs, first come first served, and
reads a typed-into PTY at once."""

from __future__ import annotations

import asyncio
import os

from mas_jupyter.core.runtimes import pump as pumps
from tests.conftest import until


class Pipe:
    """A readable fd full of output, recording how the pump reads it."""

    def __init__(self, name: str, nbytes: int) -> None:
        self.name = name
        self.fd, self.write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        os.write(self.write_fd, b"x" * nbytes)
        self.eof = False
        self.typed_at: float | None = None
        self.printed_since_typed = 0
        self.bursts: list[int] = []
        self.got = 0

    def read_burst(self, reads: int) -> bool:
        self.bursts.append(reads)
        log.append(self.name)
        for _ in range(reads):
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return False
            self.got += len(data)
            self.printed_since_typed += len(data)
        return True

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.write_fd)


log: list[str] = []


async def test_one_stream_alone_reads_large_chunks():
    pump = pumps.ReadPump(asyncio.get_running_loop())
    p = Pipe("alone", 60_000)
    try:
        pump.watch(p)
        while p.got < 60_000:
            await asyncio.sleep(0)
        assert p.bursts[0] == pumps.MAX_READS  # one turn reads many times, as one chunk
        assert len(p.bursts) <= 60_000 // (4096 * pumps.MAX_READS) + 2
    finally:
        pump.forget(p)
        p.close()


async def test_many_streams_share_turns_first_come_first_served():
    pump = pumps.ReadPump(asyncio.get_running_loop())
    pipes = [Pipe(f"p{i}", 40_000) for i in range(20)]
    log.clear()
    try:
        for p in pipes:
            pump.watch(p)
        await asyncio.sleep(0)  # the loop sees them all ready: they queue in that order
        turns = 0
        while any(p.got < 40_000 for p in pipes):
            served = len(log)
            await asyncio.sleep(0)
            turns += 1
            reads = sum(pipes[int(n[1:])].bursts[-1] for n in log[served:])
            assert reads <= pumps.READS_PER_TURN, reads  # a turn stays short
            assert turns < 1000
        # Nobody starves: everyone got its first read before anyone got its third.
        first_rounds = log[: 2 * len(pipes)]
        assert sorted(set(first_rounds)) == sorted(p.name for p in pipes)
        assert all(min(p.bursts) >= 1 for p in pipes)
    finally:
        for p in pipes:
            pump.forget(p)
            p.close()


async def test_a_typed_into_pty_is_read_ahead_of_the_queue():
    loop = asyncio.get_running_loop()
    pump = pumps.ReadPump(loop)
    streams = [Pipe(f"s{i}", 60_000) for i in range(30)]
    typed = Pipe("typed", 0)
    log.clear()
    try:
        for p in streams:
            pump.watch(p)
        await asyncio.sleep(0)
        pump.watch(typed)
        await asyncio.sleep(0)
        assert len(pump.queue) > 0  # the streams are waiting their turn
        typed.typed_at = loop.time()
        os.write(typed.write_fd, b"echo")
        waiting = len(log)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # Read in the next turn of the loop, though many streams were queued before it.
        assert "typed" in log[waiting:] and typed.got == 4
        assert len(pump.queue) > 0
    finally:
        for p in [*streams, typed]:
            pump.forget(p)
            p.close()


async def test_while_someone_types_the_streams_turns_leave_the_loop_time_to_sleep():
    loop = asyncio.get_running_loop()
    pump = pumps.ReadPump(loop)
    streams = [Pipe(f"s{i}", 60_000) for i in range(20)]
    typist = Pipe("typist", 0)
    try:
        for p in streams:
            pump.watch(p)
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # one turn ran; the rest of the streams wait for the next
        assert pump.queue and isinstance(pump.next_turn, asyncio.Handle)
        assert not isinstance(pump.next_turn, asyncio.TimerHandle)  # nobody types: at once

        pump.watch(typist)
        typist.typed_at = loop.time()
        pump.typed(typist)  # a keystroke into a PTY that does not stream
        served = sum(p.got for p in streams)
        await until(lambda: sum(p.got for p in streams) > served, 10, "the turn set before", 0)
        assert pump.queue
        # The next one waits YIELD_SECONDS, so the loop can sleep and wake for a keystroke.
        assert isinstance(pump.next_turn, asyncio.TimerHandle)
        assert pump.next_turn.when() >= loop.time() + pumps.YIELD_SECONDS / 2

        # The PTY typed into streams itself (a command that floods): full speed again.
        while typist.got <= pumps.ECHO_BYTES:
            want = typist.got + 32768
            os.write(typist.write_fd, b"y" * 32768)  # fits in the pipe, which is read meanwhile
            await until(lambda want=want: typist.got >= want, 10, "the typist's output read", 0)
        assert not pump._typing()
        assert not pump.interactive(typist)  # nor read ahead of the others

        typist.typed_at, typist.printed_since_typed = loop.time(), 0
        pump.typed(typist)
        assert pump._typing() and pump.interactive(typist)
        typist.typed_at = loop.time() - pumps.TYPING_SECONDS  # the typing is over
        assert not pump._typing()
        pump.forget(typist)
        assert pump.typist is None
    finally:
        for p in [*streams, typist]:
            pump.forget(p)
            p.close()


async def test_the_more_ptys_hold_output_the_longer_each_may_hold_it():
    pump = pumps.ReadPump(asyncio.get_running_loop())
    assert pump.hold_seconds() == pumps.HOLD_SECONDS  # one stream: its output is 20 ms late
    pump.holding = 50
    assert pump.hold_seconds() == 50 / pumps.RELEASES_PER_SECOND  # together ~250 releases/s
    pump.holding = 1000
    assert pump.hold_seconds() == pumps.HOLD_MAX_SECONDS


async def test_the_pump_closes_its_epoll_once_it_watches_nothing():
    loop = asyncio.get_running_loop()
    first = pumps.pump()
    a, b = Pipe("first", 10), Pipe("second", 20)
    try:
        first.watch(a)
        first.watch(b)
        fd = first.epoll.fileno()
        first.forget(a)
        assert not first.closed and pumps.pump() is first  # b is still watched
        first.forget(b)
        assert first.closed and not loop.remove_reader(fd)  # the loop no longer watches it
        second = pumps.pump()  # the loop's next PTY starts a new pump, which reads
        assert second is not first and not second.closed
        second.watch(b)
        await until(lambda: b.got == 20, what="the new pump reads")
        second.forget(b)
        assert second.closed
    finally:
        a.close()
        b.close()
