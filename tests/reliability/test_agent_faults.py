"""Agents that misbehave: the right final state, bounded memory, other requests still
answered, and no process of the worker's session left after a stop."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import until
from tests.reliability.harness import tree_gone

LEAK_BOUND = 64 * 2**20  # server memory growth allowed while one worker floods


async def new_session(api, name: str) -> None:
    await api.ok("POST", "sessions", {"name": name})


async def worker(api, session: str, wid: str) -> dict:
    return await api.ok("GET", f"sessions/{session}/workers/{wid}")


async def output(api, session: str, wid: str) -> str:
    code, data = await api.mas("GET", f"sessions/{session}/workers/{wid}/output?tail=65536")
    return data["data"] if code == 200 else ""


async def still_serving(api) -> None:
    """Other requests are answered meanwhile (bounded by the request timeout)."""
    code, _ = await api.call("GET", "/api/status", timeout=10)
    assert code == 200
    code, _ = await api.mas("GET", "sessions", timeout=10)
    assert code == 200


@pytest.fixture
def api(shared_server, api_for):
    return api_for(shared_server)


async def test_agent_that_exits_at_once(api):
    await new_session(api, "quit")
    w = await api.ok("POST", "sessions/quit/workers", {"name": "q", "backend": "quitter"})
    done = await until(
        lambda: _exited(api, "quit", "q"), timeout=20, what="the agent's exit to be recorded"
    )
    assert done["exit_code"] == 5 and done["exit_reason"] == "crashed"
    assert "bye now" in await output(api, "quit", "q")
    assert tree_gone(w["pid"])
    # It can be restarted, and exits again the same way.
    code, _ = await api.mas("POST", "sessions/quit/workers/q/restart")
    assert code == 200
    await until(lambda: _exited(api, "quit", "q"), timeout=20, what="the second exit")


async def _exited(api, session, wid):
    w = await worker(api, session, wid)
    return w if w["status"] == "exited" else None


async def test_agent_that_crashes_mid_reply(api):
    await new_session(api, "crash")
    spec = {"name": "bot", "backend": "demo", "env": {"MAS_DEMO_DELAY": "0.2"}}
    w = await api.ok("POST", "sessions/crash/workers", spec)
    await until(
        lambda: _activity(api, "crash", "bot", "idle"), timeout=30, what="the demo agent idle"
    )
    # The reply being waited for ends with the crash, not with the timeout.
    result = await api.ok(
        "POST", "sessions/crash/workers/bot/send", {"text": "/crash", "wait": True, "timeout": 60}
    )
    assert result["timed_out"] is False and result["exit_code"] == 3, result
    w2 = await worker(api, "crash", "bot")
    assert (w2["status"], w2["exit_reason"]) == ("exited", "crashed")
    assert tree_gone(w["pid"])
    await still_serving(api)


async def _activity(api, session, wid, state):
    return (await worker(api, session, wid))["activity"] == state


async def _printed(api, session, wid, text, timeout=30):
    async def seen():
        return text in await output(api, session, wid)

    await until(seen, timeout=timeout, what=f"{text!r} printed by {wid}")


async def test_agent_that_ignores_sigterm_is_killed(api):
    await new_session(api, "stub")
    w = await api.ok("POST", "sessions/stub/workers", {"name": "s", "backend": "stubborn"})
    await _printed(api, "stub", "s", "stubborn up")
    code, _ = await api.mas("DELETE", "sessions/stub/workers/s")
    assert code == 204
    # SIGHUP and SIGTERM are ignored; SIGKILL after kill_timeout ends it.
    assert tree_gone(w["pid"])
    code, _ = await api.mas("GET", "sessions/stub/workers/s")
    assert code == 404


async def test_background_children_end_with_their_worker(api):
    from mas_jupyter.core import processes

    await new_session(api, "kids")
    w = await api.ok("POST", "sessions/kids/workers", {"name": "k", "backend": "forker"})
    await _printed(api, "kids", "k", "children-up")
    members = processes.session_members(w["pid"])
    assert len(members) >= 4, members  # bash and its sleeps, one in its own process group
    code, data = await api.mas("POST", "sessions/kids/stop?force=true")
    assert code == 200, data
    await until(lambda: tree_gone(w["pid"]), timeout=10, what="every child ended")
    assert not [p for p in members if processes.is_alive(p)]


async def test_100_mb_in_one_line(api, shared_server):
    await new_session(api, "line")
    base = shared_server.rss()
    peak = base
    w = await api.ok("POST", "sessions/line/workers", {"name": "l", "backend": "oneline"})

    async def done():
        nonlocal peak
        peak = max(peak, shared_server.rss())
        await still_serving(api)
        return "line-done" in await output(api, "line", "l")

    await until(done, timeout=120, what="100 MB printed", every=0.1)
    assert peak - base < LEAK_BOUND, (peak - base) / 2**20
    screen = await api.ok("GET", "sessions/line/workers/l/screen")
    assert any("line-done" in line for line in screen["lines"])
    code, _ = await api.mas("DELETE", "sessions/line/workers/l")
    assert code == 204 and tree_gone(w["pid"])


async def test_invalid_utf8_and_characters_split_across_reads(api):
    await new_session(api, "utf")
    w = await api.ok("POST", "sessions/utf/workers", {"name": "u", "backend": "badbytes"})
    console = await api.connect(f"api/mas/{w['channel']}")
    # Connected first, so the split characters arrive live, not in the replay.
    console.send("\r")
    text = await console.read_until("bytes-done", 30, keep=True)
    console.close()
    assert "\u20ac:euro" in text and "\U0001f600:smile" in text, text
    assert "bad:\ufffd" in text
    shown = await output(api, "utf", "u")
    assert "\u20ac:euro" in shown and "\U0001f600:smile" in shown
    screen = await api.ok("GET", "sessions/utf/workers/u/screen")
    assert any("\u20ac:euro" in line for line in screen["lines"]), screen["lines"]


async def test_agent_that_stops_reading_during_a_large_paste(api, shared_server):
    await new_session(api, "deaf")
    w = await api.ok("POST", "sessions/deaf/workers", {"name": "d", "backend": "deaf"})
    await _printed(api, "deaf", "d", "deaf up")
    base = shared_server.rss()
    chunk = "x" * 1_000_000
    codes = []
    for _ in range(12):
        code, data = await api.mas("POST", "sessions/deaf/workers/d/input", {"data": chunk})
        codes.append(code)
        if code == 413:
            assert "not reading its input" in data["message"]
            break
    assert codes[-1] == 413, codes  # refused once its bounded queue is full
    assert set(codes[:-1]) <= {200, 204}, codes
    await still_serving(api)
    # Another worker's input still goes through at once.
    await new_session(api, "deaf-other")
    _, other = await api.mas_shell("deaf-other")
    other.send("echo other-$((20+22))\r")
    await other.read_until("other-42", 20)
    other.close()
    assert shared_server.rss() - base < LEAK_BOUND
    code, _ = await api.mas("DELETE", "sessions/deaf/workers/d")
    assert code == 204 and tree_gone(w["pid"])


async def test_server_still_answers_after_the_faults(api, shared_server):
    await asyncio.gather(*(still_serving(api) for _ in range(5)))
    assert shared_server.proc.poll() is None
