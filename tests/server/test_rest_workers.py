"""The worker routes over HTTP with real shells and the demo agent."""

from __future__ import annotations

import asyncio
import json

import pytest


async def screen(api, sid="s", wid="sh") -> str:
    code, body = await api("GET", "sessions", sid, "workers", wid, "screen")
    assert code == 200, body
    return "\n".join(body["lines"])


async def test_terminal_worker_create_list_get_input_screen_output(until, api, shell_session):
    s, w = await shell_session()
    assert w["kind"] == "terminal" and w["status"] == "running" and w["session_id"] == s["id"]
    code, listed = await api("GET", "sessions", "s", "workers")
    assert code == 200 and [x["name"] for x in listed] == ["sh"]
    for key in ("sh", w["id"]):
        code, got = await api("GET", "sessions", s["id"], "workers", key)
        assert code == 200 and got["id"] == w["id"]
    code, body = await api(
        "POST", "sessions", "s", "workers", "sh", "input", body={"data": "echo hi-$((6*7))\r"}
    )
    assert code == 200 and body == {"written": len("echo hi-$((6*7))\r")}

    async def echoed():
        return "hi-42" in await screen(api)

    await until(echoed, what="the shell's echo")
    code, out = await api("GET", "sessions", "s", "workers", "sh", "output")
    assert code == 200 and "hi-42" in out["data"] and out["end"] >= len(out["data"])
    code, tail = await api("GET", "sessions", "s", "workers", "sh", "output", params={"tail": "4"})
    assert code == 200 and len(tail["data"].encode()) <= 4 and tail["end"] == out["end"]
    code, scr = await api("GET", "sessions", "s", "workers", "sh", "screen")
    assert scr["cols"] == w["cols"] and scr["rows"] == w["rows"]
    code, session = await api("GET", "sessions", "s")
    assert [x["name"] for x in session["workers"]] == ["sh"]


async def test_resize_restart_transcript_and_delete(api, shell_session):
    await shell_session(cols=80, rows=24)
    code, w = await api(
        "POST", "sessions", "s", "workers", "sh", "resize", body={"cols": 100, "rows": 30}
    )
    assert code == 200 and (w["cols"], w["rows"]) == (100, 30)
    assert w == (await api("GET", "sessions", "s", "workers", "sh"))[1]  # the row as stored
    code, page = await api("GET", "sessions", "s", "workers", "sh", "transcript")
    assert code == 200 and page["records"][0]["type"] == "start"
    code, page = await api(
        "GET", "sessions", "s", "workers", "sh", "transcript", params={"offset": "0", "limit": "1"}
    )
    assert code == 200 and len(page["records"]) == 1
    code, w2 = await api("POST", "sessions", "s", "workers", "sh", "restart")
    assert code == 200 and w2["status"] == "running"
    # The answer is the worker as it is now: its new pid, and its updated_at (was the old one).
    assert w2 == (await api("GET", "sessions", "s", "workers", "sh"))[1]
    assert w2["updated_at"] > w["updated_at"] and w2["pid"] != w["pid"]
    code, body = await api("DELETE", "sessions", "s", "workers", "sh")
    assert code == 204 and body is None
    assert (await api("GET", "sessions", "s", "workers", "sh"))[0] == 404
    assert (await api("GET", "sessions", "s", "workers"))[1] == []


async def test_connect_lists_each_worker_channel(api, shell_session, jp_ws_fetch):
    s, w = await shell_session()
    code, info = await api("POST", "sessions", "s", "connect")
    assert code == 200 and info["workspace"] == s["workspace"]
    [entry] = info["workers"]
    assert entry["name"] == "sh" and entry["id"] == w["id"]
    assert entry["channel"] == f"sessions/{s['id']}/workers/{w['id']}/channel"
    assert entry["attach"] == "jupyter mas attach s sh" and entry["tmux_attach"] is None
    ws = await jp_ws_fetch("api", "mas", *entry["channel"].split("/"))
    ws.close()


async def test_demo_agent_send_and_wait(api, demo_session):
    await demo_session()
    body = {"text": "count the rows", "wait": True, "timeout": 30}
    code, result = await api("POST", "sessions", "s", "workers", "bot", "send", body=body)
    assert code == 200, result
    assert result["timed_out"] is False and result["activity"] == "idle"
    assert "count the rows" in result["reply"] and "\x1b" not in result["reply"]
    code, result = await api("POST", "sessions", "s", "workers", "bot", "send", body={"text": "hi"})
    assert code == 200 and result["timed_out"] is False


async def test_a_send_that_ends_the_agent_says_it_exited_with_its_code(api, demo_session):
    await demo_session()
    body = {"text": "/exit", "wait": True, "timeout": 30}
    code, result = await api("POST", "sessions", "s", "workers", "bot", "send", body=body)
    assert code == 200, result  # the api fixture checks the body against SendReply
    assert (result["activity"], result["exit_code"], result["timed_out"]) == ("exited", 0, False)
    assert result["exit_reason"] == "exited"


async def test_a_send_that_is_not_waited_for_has_no_exit_reason(api, demo_session):
    await demo_session()
    code, result = await api("POST", "sessions", "s", "workers", "bot", "send", body={"text": "hi"})
    assert code == 200 and result["reply"] is None and result["exit_reason"] is None


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (("POST", "sessions", "s", "pause"), "paused"),
        (("POST", "sessions", "s", "stop", {"force": True}), "stopped"),
        (("POST", "sessions", "s", "workers", "bot", "restart"), "restarted"),
        (("DELETE", "sessions", "s", "workers", "bot"), "deleted"),
    ],
)
async def test_a_send_cut_off_by_a_pause_stop_restart_or_delete_says_why(
    api, demo_session, until, action, reason
):
    """The waiting send answers 200 with the worker's exit_reason (before: only
    `activity: exited` and `exit_code: null`, as if the agent had ended by itself)."""
    await demo_session()
    body = {"text": "/sleep 30", "wait": True, "timeout": 60}
    send = asyncio.ensure_future(api("POST", "sessions", "s", "workers", "bot", "send", body=body))

    async def busy():
        return (await api("GET", "sessions", "s", "workers", "bot"))[1]["activity"] == "busy"

    await until(busy, what="the demo agent busy sleeping")
    method, *path = action
    extra = path.pop() if isinstance(path[-1], dict) else None
    code, _ = await api(method, *path, body=extra)
    assert code in (200, 204)
    code, result = await asyncio.wait_for(send, 30)
    assert code == 200, result  # the api fixture checks the body against SendReply
    assert (result["activity"], result["timed_out"]) == ("exited", False)
    assert result["exit_reason"] == reason


async def test_a_waited_send_to_a_busy_agent_waits_for_its_turn_or_is_a_409(api, demo_session):
    """Before, it was typed ahead and the answer was the end of the work the agent was busy
    with ('slept 1.5 s')."""
    await demo_session()
    send = ("POST", "sessions", "s", "workers", "bot", "send")
    assert (await api(*send, body={"text": "/sleep 1.5"}))[0] == 200
    code, result = await api(*send, body={"text": "count the rows", "wait": True, "timeout": 30})
    assert code == 200 and "reply: count the rows" in result["reply"], result
    assert "slept" not in result["reply"]
    assert (await api(*send, body={"text": "/sleep 60"}))[0] == 200
    code, body = await api(*send, body={"text": "too early", "wait": True, "timeout": 0.5})
    assert code == 409 and body["reason"] == "conflict", body
    assert body["message"] == (
        "'bot' was still busy after 0.5 s; the message was not sent (send it with 'wait': "
        "false to type it ahead)"
    )
    assert body["field"] == "wait", body  # the field that changes it, for clients to name
    _, output = await api("GET", "sessions", "s", "workers", "bot", "output")
    assert "too early" not in output["data"]


async def test_a_waited_send_whose_client_went_away_is_not_typed_later(
    api, demo_session, until, mas_app, jp_http_port, jp_base_url, jp_auth_header
):
    """Ctrl-C on `jupyter mas send` closes its connection: the message that waited for its
    turn is dropped. Before, the server went on waiting and typed it once the agent was free."""
    await demo_session()
    assert (
        await api("POST", "sessions", "s", "workers", "bot", "send", body={"text": "/sleep 2"})
    )[0] == 200
    body = json.dumps({"text": "nobody waits for this", "wait": True, "timeout": 60}).encode()
    head = (
        f"POST {jp_base_url}api/mas/sessions/s/workers/bot/send HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{jp_http_port}\r\nAuthorization: {jp_auth_header['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    writer.write(head.encode() + body)
    await writer.drain()
    live = next(iter(mas_app.manager.supervisor.live.values()))
    await until(live._asking.locked, what="the message to wait for its turn")
    writer.close()
    await until(lambda: not live._asking.locked(), what="the server to drop the message")

    async def idle():
        return (await api("GET", "sessions", "s", "workers", "bot"))[1]["activity"] == "idle"

    await until(idle, what="the agent free again")
    _, output = await api("GET", "sessions", "s", "workers", "bot", "output")
    assert "slept 2 s" in output["data"] and "nobody waits" not in output["data"]


async def test_stop_refused_while_an_agent_waits_for_an_answer(api, demo_session):
    await demo_session()
    body = {"text": "/ask", "wait": True, "timeout": 30}
    code, result = await api("POST", "sessions", "s", "workers", "bot", "send", body=body)
    assert result["activity"] == "waiting"
    code, body = await api("POST", "sessions", "s", "stop")
    assert code == 409 and body["reason"] == "stop_refused"
    assert any("waiting" in e for e in body["errors"])
    code, body = await api("POST", "sessions", "s", "stop", body={"force": True})
    assert code == 200 and body["status"] == "stopped"
    assert body["workers"][0]["status"] == "exited"


async def test_catalogues(api):
    code, backends = await api("GET", "backends")
    assert code == 200 and {"shell", "demo"} <= {b["name"] for b in backends}
    code, personas = await api("GET", "personas")
    assert code == 200 and {"pm", "qa", "specialist"} <= {p["name"] for p in personas}
    code, templates = await api("GET", "templates")
    assert code == 200 and "default" in [t["name"] for t in templates]


@pytest.mark.parametrize(
    ("spec", "status"),
    [
        ({"name": "x", "kind": "terminal", "shell": "/bin/sh"}, 400),
        ({"name": "../x", "kind": "terminal"}, 400),
        ({"name": "x", "kind": "robot"}, 400),
        ({"name": "x", "backend": "no-such-backend"}, 404),
        ({"name": "x", "kind": "terminal", "env": {"LD_PRELOAD": "/x.so"}}, 400),
        ({"name": "x", "kind": "terminal", "cols": "wide"}, 400),
        ({"name": "x", "kind": "terminal", "runtime": "docker"}, 400),
    ],
)
async def test_bad_worker_specs(api, spec, status):
    await api("POST", "sessions", body={"name": "s"})
    code, body = await api("POST", "sessions", "s", "workers", body=spec)
    assert code == status, body
    assert body["message"] and (await api("GET", "sessions", "s", "workers"))[1] == []


async def test_duplicate_worker_name_is_409(api, shell_session):
    await shell_session()
    code, body = await api(
        "POST", "sessions", "s", "workers", body={"name": "sh", "kind": "terminal"}
    )
    assert code == 409


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("input", {}),
        ("input", {"data": 5}),
        ("input", {"data": "x", "more": 1}),
        ("send", {}),
        ("send", {"text": "hi", "wait": "yes"}),
        ("send", {"text": "hi", "timeout": "soon"}),
        ("send", {"text": "hi", "timeout": True}),
        ("send", {"text": "hi", "timeout": -1}),
        ("resize", {"cols": 80}),
        ("resize", {"cols": 80, "rows": True}),
        ("resize", {"cols": 1, "rows": 1}),
        ("restart", {"hard": True}),
    ],
)
async def test_bad_worker_bodies_are_400(api, shell_session, route, body):
    await shell_session()
    code, reply = await api("POST", "sessions", "s", "workers", "sh", route, body=body)
    assert code == 400, reply
    assert reply["reason"] == "invalid"


async def test_bad_worker_bodies_say_what_is_allowed(api, shell_session):
    await shell_session()
    worker = ("sessions", "s", "workers", "sh")
    code, reply = await api("POST", *worker, "restart", body={"hard": True})
    assert reply["message"] == "unknown field(s) for restart: hard; it takes none"
    body = {"text": "hi", "wait": True, "timeout": 0}
    code, reply = await api("POST", *worker, "send", body=body)
    assert reply["message"] == "timeout must be more than 0 and at most 3600 seconds"
    # Without wait a timeout would bound nothing: refused, not ignored, and nothing typed.
    code, reply = await api("POST", *worker, "send", body={"text": "echo typed", "timeout": 5})
    assert (code, reply["message"]) == (
        400,
        "timeout is how long to wait for the reply: it needs wait (true)",
    )
    code, output = await api("GET", *worker, "output")
    assert "typed" not in output["data"]


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("output", {"tail": "-1"}),
        ("output", {"tail": "x"}),
        ("transcript", {"offset": "x"}),
        ("transcript", {"limit": "0"}),
    ],
)
async def test_bad_worker_queries_are_400(api, shell_session, route, params):
    await shell_session()
    code, reply = await api("GET", "sessions", "s", "workers", "sh", route, params=params)
    assert code == 400, reply


async def test_unknown_worker_is_404_on_every_worker_route(api):
    await api("POST", "sessions", body={"name": "s"})
    routes = [
        ("GET", ()),
        ("DELETE", ()),
        ("POST", ("input",), {"data": "x"}),
        ("POST", ("send",), {"text": "x"}),
        ("GET", ("screen",)),
        ("GET", ("output",)),
        ("GET", ("transcript",)),
        ("POST", ("resize",), {"cols": 80, "rows": 24}),
        ("POST", ("restart",)),
    ]
    for method, rest, *body in routes:
        code, data = await api(
            method, "sessions", "s", "workers", "ghost", *rest, body=(body or [None])[0]
        )
        assert code == 404, (method, rest, data)
        assert "ghost" in data["message"]
    assert (await api("GET", "sessions", "nope", "workers"))[0] == 404
    assert (await api("POST", "sessions", "nope", "workers", body={"name": "x"}))[0] == 404


async def test_input_to_an_exited_worker_is_409(until, api, demo_session):
    await demo_session()
    await api("POST", "sessions", "s", "workers", "bot", "input", body={"data": "/exit\r"})

    async def exited():
        return (await api("GET", "sessions", "s", "workers", "bot"))[1]["status"] == "exited"

    await until(exited, what="the agent to exit")
    code, body = await api("POST", "sessions", "s", "workers", "bot", "input", body={"data": "x"})
    assert code == 409 and "restart" in body["message"]
    code, body = await api("POST", "sessions", "s", "workers", "bot", "send", body={"text": "x"})
    assert code == 409


@pytest.fixture
def small_input(mas_config):
    mas_config["MASManager"] = {"max_input_bytes": 1000}


async def test_oversized_input_is_413(small_input, api, shell_session):
    await shell_session()
    code, body = await api(
        "POST", "sessions", "s", "workers", "sh", "input", body={"data": "x" * 2000}
    )
    assert code == 413 and body["reason"] == "too_large"
    code, body = await api(
        "POST", "sessions", "s", "workers", "sh", "send", body={"text": "x" * 2000}
    )
    assert code == 413


@pytest.fixture
def one_worker_per_session(mas_config):
    mas_config["MASManager"] = {"max_workers_per_session": 1}


async def test_worker_limit_is_429(one_worker_per_session, api, shell_session):
    await shell_session()
    code, body = await api(
        "POST", "sessions", "s", "workers", body={"name": "two", "kind": "terminal"}
    )
    assert code == 429 and body["reason"] == "limit_reached"


async def test_session_created_with_workers(api):
    spec = {
        "name": "multi",
        "workers": [{"name": "a", "kind": "terminal"}, {"name": "b", "kind": "terminal"}],
    }
    code, s = await api("POST", "sessions", body=spec)
    assert code == 201 and [w["name"] for w in s["workers"]] == ["a", "b"]
    code, _ = await api("DELETE", "sessions", "multi", params={"purge": "true"})
    assert code == 204


async def test_the_server_token_never_reaches_a_worker(api, until, jp_serverapp, monkeypatch):
    token = jp_serverapp.identity_provider.token
    monkeypatch.setenv("JUPYTER_TOKEN", token)
    await api("POST", "sessions", body={"name": "s"})
    _, w = await api("POST", "sessions", "s", "workers", body={"name": "sh", "kind": "terminal"})
    await api(
        "POST",
        "sessions",
        "s",
        "workers",
        "sh",
        "input",
        body={"data": "env; echo env-$((2*3))-done\r"},
    )

    async def listed():
        out = (await api("GET", "sessions", "s", "workers", "sh", "output"))[1]["data"]
        return "env-6-done" in out

    await until(listed, what="env")
    out = (await api("GET", "sessions", "s", "workers", "sh", "output"))[1]["data"]
    assert token not in out
    with open(f"/proc/{w['pid']}/cmdline", "rb") as fh:
        assert token.encode() not in fh.read()
    with open(f"/proc/{w['pid']}/environ", "rb") as fh:
        assert token.encode() not in fh.read()
