"""Resource limits: exactly the limit succeeds, the rest get 429; huge bodies and messages are
refused with 413/1009; deeply nested JSON is bad input (400), never a server error."""

from __future__ import annotations

import asyncio
import json

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.reliability.harness import serve

LIMITS = {
    "MASManager": {
        "max_sessions": 3,
        "max_workers_per_session": 2,
        "max_workers": 3,
        "max_input_bytes": 65536,
    },
    "MASExtensionApp": {"max_body_bytes": 1024 * 1024},
}
NESTED = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("limits"), config=LIMITS)


@pytest.fixture
def api(limited, api_for):
    api = api_for(limited)
    yield api
    # Each test starts from no sessions.
    code, sessions = limited.mas("GET", "sessions")
    for s in sessions:
        limited.mas("DELETE", f"sessions/{s['id']}?purge=true")


async def test_exactly_max_sessions_succeed_when_created_at_once(api):
    codes = await asyncio.gather(*(api.mas("POST", "sessions", {}) for _ in range(6)))
    statuses = sorted(code for code, _ in codes)
    assert statuses == [201, 201, 201, 429, 429, 429], codes
    refused = next(body for code, body in codes if code == 429)
    assert "max_sessions" in refused["message"]
    # A stopped session frees its place.
    first = next(body for code, body in codes if code == 201)
    await api.ok("POST", f"sessions/{first['id']}/stop?force=true")
    code, _ = await api.mas("POST", "sessions", {})
    assert code == 201


async def test_exactly_max_workers_succeed(api):
    await api.ok("POST", "sessions", {"name": "a"})
    await api.ok("POST", "sessions", {"name": "b"})
    spec = {"kind": "terminal"}
    codes = await asyncio.gather(
        *(api.mas("POST", "sessions/a/workers", {**spec, "name": f"w{i}"}) for i in range(4))
    )
    assert sorted(c for c, _ in codes) == [201, 201, 429, 429], codes
    assert "max_workers_per_session" in next(b["message"] for c, b in codes if c == 429)
    code, _ = await api.mas("POST", "sessions/b/workers", {**spec, "name": "x"})
    assert code == 201  # the third worker of the server
    code, body = await api.mas("POST", "sessions/b/workers", {**spec, "name": "y"})
    assert code == 429 and "max_workers" in body["message"]
    # A session created with more workers than allowed is refused before anything is made.
    many = [{"kind": "terminal", "name": f"m{i}"} for i in range(3)]
    code, body = await api.mas("POST", "sessions", {"name": "c", "workers": many})
    assert code == 429 and "at most 2 workers" in body["message"]
    code, _ = await api.mas("GET", "sessions/c")
    assert code == 404
    # Within the session's limit but over the server's: refused, and nothing is left behind
    # (before, the session was made with its first worker and a retry met its name).
    code, body = await api.mas("POST", "sessions", {"name": "d", "workers": many[:1]})
    assert code == 429 and "max_workers" in body["message"]
    code, _ = await api.mas("GET", "sessions/d")
    assert code == 404


async def test_huge_body_is_refused(api):
    body = json.dumps({"name": "big", "task": "x" * (2 * 1024 * 1024)})
    code, data = await api.mas("POST", "sessions", raw=body.encode())
    assert code == 413 and "message" in data
    code, _ = await api.mas("GET", "sessions/big")
    assert code == 404


async def test_input_over_the_limit_is_refused(api):
    await api.ok("POST", "sessions", {"name": "in"})
    await api.ok("POST", "sessions/in/workers", {"name": "sh", "kind": "terminal"})
    code, data = await api.mas("POST", "sessions/in/workers/sh/input", {"data": "x" * 70_000})
    assert code == 413 and "limit" in data["message"]
    code, _ = await api.mas("POST", "sessions/in/workers/sh/input", {"data": "x" * 60_000})
    assert code in (200, 204)


async def test_huge_websocket_message_closes_with_1009(api, limited):
    await api.ok("POST", "sessions", {"name": "ws"})
    _, console = await api.mas_shell("ws")
    console.conn.write_message(json.dumps(["stdin", "x" * (65536 * 6 + 4096)]))
    code, _ = await console.wait_closed(20)
    assert code == 1009
    # The worker and the server are fine: a new console works.
    _, again = await api.mas_shell("ws", "sh2")
    again.send("echo fine-$((1+1))\r")
    await again.read_until("fine-2", 20)
    again.close()


@pytest.mark.parametrize("body", [NESTED, '{"name": ' + NESTED + "}"])
async def test_deeply_nested_json_body_is_bad_input(api, body):
    code, data = await api.mas("POST", "sessions", raw=body.encode())
    assert code == 400, data
    assert "JSON" in data["message"]


async def test_deeply_nested_websocket_message_is_a_bad_message(api, limited):
    await api.ok("POST", "sessions", {"name": "deep"})
    worker, console = await api.mas_shell("deep")
    console.conn.write_message('["stdin", ' + "[" * 50_000 + "]" * 50_000 + "]")
    code, _ = await console.wait_closed(20)
    assert code == 1003, code


async def test_a_bad_websocket_message_leaves_the_server_serving(api, limited):
    await api.ok("POST", "sessions", {"name": "deep2"})
    worker, console = await api.mas_shell("deep2")
    console.conn.write_message('["stdin", ' + "[" * 50_000 + "]" * 50_000 + "]")
    await console.wait_closed(20)
    code, _ = await api.call("GET", "/api/status")
    assert code == 200
    req = HTTPRequest(
        f"{limited.ws_url}/api/mas/{worker['channel']}",
        headers={"Authorization": f"token {limited.token}"},
    )
    conn = await websocket_connect(req)
    conn.close()
    await asyncio.sleep(0)  # let the close be sent
