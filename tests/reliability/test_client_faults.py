"""Clients that misbehave: stalled, vanished, very many, deleting under streaming, racing.
The server stays bounded in memory, other clients keep receiving, nothing is left behind."""

from __future__ import annotations

import asyncio
import socket

import pytest

from bench.client import PROMPT, raw_websocket, vanish
from tests.conftest import until
from tests.reliability.harness import db_rows, tree_gone

LEAK_BOUND = 64 * 2**20
FLOOD = 'yes "0123456789abcdefghijklmnopqrstuvwxyz" | head -c {n}; echo __DONE$((6*7))__\r'


@pytest.fixture
def api(shared_server, api_for):
    return api_for(shared_server)


def read_to_eof(sock: socket.socket, timeout: float) -> bool:
    """Read what the server sent until it closes; False if it is still open after timeout."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 20):
            pass
    except (TimeoutError, OSError):
        return False
    return True


async def test_stalled_client_is_dropped_and_others_keep_receiving(api, shared_server):
    await api.ok("POST", "sessions", {"name": "stall"})
    worker, reader = await api.mas_shell("stall")
    path = f"api/mas/{worker['channel']}"
    stalled = raw_websocket(shared_server, path)
    base = shared_server.rss()
    peak = base

    async def sample():
        nonlocal peak
        while True:
            peak = max(peak, shared_server.rss())
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(sample())
    try:
        reader.send(FLOOD.format(n=30_000_000))
        await reader.read_until("__DONE42__", 120)
    finally:
        sampler.cancel()
    assert peak - base < LEAK_BOUND, (peak - base) / 2**20
    # The server drops the client that never read (client_stall_seconds is 1 s here): by a write
    # left pending, or by its socket's send queue not shrinking once nothing more is sent. Read
    # nothing before the server says so: reading would make it a client that keeps up.
    dropped = f"dropping a stalled console client of worker {worker['id']}"
    await until(lambda: dropped in shared_server.log(), timeout=20, what="the drop", every=0.1)
    assert await asyncio.to_thread(read_to_eof, stalled, 20)
    stalled.close()
    reader.send("echo after-$((2+3))\r")
    await reader.read_until("after-5", 20)


async def test_vanished_client_does_not_disturb_the_worker(api, shared_server):
    await api.ok("POST", "sessions", {"name": "gone"})
    worker, reader = await api.mas_shell("gone")
    path = f"api/mas/{worker['channel']}"
    for _ in range(3):
        vanish(raw_websocket(shared_server, path))
    reader.send(FLOOD.format(n=5_000_000))
    await reader.read_until("__DONE42__", 60)
    # A new console replays the recent output up to the prompt, with no gap.
    again = await api.connect(path)
    text = await again.read_until("__DONE42__", 20, keep=True)
    assert "0123456789abcdefghijklmnopqrstuvwxyz" in text


async def test_200_clients_on_one_worker(api, shared_server):
    await api.ok("POST", "sessions", {"name": "crowd"})
    worker, typist = await api.mas_shell("crowd")
    path = f"api/mas/{worker['channel']}"
    base = shared_server.rss()
    consoles = []
    for start in range(0, 200, 50):
        consoles += await asyncio.gather(*(api.connect(path) for _ in range(start, start + 50)))
    typist.send("echo crowd-$((6*7))\r")
    await asyncio.gather(*(c.read_until("crowd-42", 60) for c in consoles))
    assert shared_server.rss() - base < LEAK_BOUND
    for c in consoles:
        c.close()
    await api.ok("DELETE", "sessions/crowd")
    assert tree_gone(worker["pid"])


async def test_delete_while_three_clients_stream(api):
    await api.ok("POST", "sessions", {"name": "del"})
    worker, first = await api.mas_shell("del")
    others = [await api.connect(f"api/mas/{worker['channel']}") for _ in range(2)]
    first.send('yes "streaming without end"\r')
    await asyncio.gather(*(c.read_until("streaming without end", 20) for c in [first, *others]))
    code, _ = await api.mas("DELETE", "sessions/del/workers/sh")
    assert code == 204
    closed = await asyncio.gather(*(c.wait_closed(20) for c in [first, *others]))
    # Each client is told: the worker was killed (exit) or deleted (disconnect), then closed.
    assert all(code in (1000, 4004) for code, _ in closed), closed
    for c in [first, *others]:
        assert any(m[0] in ("exit", "disconnect") for m in c.messages), c.messages
    assert tree_gone(worker["pid"])


async def test_concurrent_deletes_of_one_session(api, shared_server):
    session = await api.ok(
        "POST", "sessions", {"name": "race", "workers": [{"kind": "terminal", "name": "a"}]}
    )
    await api.ok("POST", "sessions/race/workers", {"kind": "terminal", "name": "b"})
    pids = [w["pid"] for w in (await api.ok("GET", "sessions/race"))["workers"]]
    results = await asyncio.gather(
        *(api.mas("DELETE", "sessions/race?purge=true") for _ in range(6))
    )
    codes = sorted(code for code, _ in results)
    assert codes[0] == 204 and set(codes) <= {204, 404}, results
    code, _ = await api.mas("GET", "sessions/race")
    assert code == 404
    assert all(tree_gone(pid) for pid in pids)
    sid = session["id"]
    assert db_rows(shared_server, f"SELECT id FROM sessions WHERE id = '{sid}'") == []
    assert db_rows(shared_server, f"SELECT id FROM workers WHERE session_id = '{sid}'") == []


async def test_input_racing_a_stop(api):
    await api.ok("POST", "sessions", {"name": "stop", "workers": [{"kind": "terminal"}]})
    first = (await api.ok("GET", "sessions/stop"))["workers"][0]
    pid, path = first["pid"], f"sessions/stop/workers/{first['name']}/input"
    typing = [api.mas("POST", path, {"data": "echo hi\r"}) for _ in range(40)]
    stop = api.mas("POST", "sessions/stop/stop?force=true")
    results = await asyncio.gather(*typing[:20], stop, *typing[20:])
    stop_code = results[20][0]
    assert stop_code == 200, results[20]
    input_codes = {code for code, _ in results[:20] + results[21:]}
    assert input_codes <= {200, 204, 409}, results  # typed, or refused: not running
    await until(lambda: tree_gone(pid), timeout=10, what="the shell ended")
    w = (await api.ok("GET", "sessions/stop"))["workers"][0]
    assert w["status"] == "exited"


async def test_console_of_an_exited_worker_says_so(api):
    await api.ok("POST", "sessions", {"name": "ended"})
    worker, console = await api.mas_shell("ended")
    console.send("exit 7\r")
    code, _ = await console.wait_closed(20)
    assert code == 1000 and ["exit", 7, "crashed"] in console.messages
    late = await api.connect(f"api/mas/{worker['channel']}")
    await late.wait_closed(20)
    assert ["exit", 7, "crashed"] in late.messages
    assert PROMPT
