"""Input the audit found accepted or answered with a 500: text that is not valid Unicode,
names shaped like ids, wrong types and nulls read as defaults, limits and documented bounds."""

from __future__ import annotations

import pytest
from tornado.httpclient import HTTPClientError

from mas_jupyter.core.errors import InvalidError
from mas_jupyter.server.openapi import openapi_document

UUID = "123e4567-e89b-12d3-a456-426614174000"
WORKER = ("sessions", "s", "workers", "sh")


async def test_text_that_is_not_unicode_is_400_on_every_route(api, shell_session):
    # json.loads turns a "\ud800" escape into a str with no UTF-8 encoding: a lone surrogate.
    _, worker = await shell_session()
    cases = [
        ("POST", ("sessions",), rb'{"task": "\ud800"}'),
        ("POST", ("sessions",), rb'{"kind": "dir", "path": "\ud800"}'),
        ("POST", ("sessions",), rb'{"kind": "worktree", "repo": "\ud800"}'),
        ("POST", ("sessions",), rb'{"\udfff": 1}'),
        ("POST", ("sessions",), rb'{"workers": [{"kind": "terminal", "env": {"A": "\udc80"}}]}'),
        ("PATCH", ("sessions", "s"), rb'{"task": "\ud800"}'),
        ("POST", ("sessions", "s", "workers"), rb'{"name": "w", "env": {"A": "\ud800"}}'),
        ("POST", (*WORKER, "input"), rb'{"data": "\ud800"}'),
        ("POST", (*WORKER, "send"), rb'{"text": "x\ud800"}'),
        ("POST", (*WORKER, "send"), rb'{"text": "x\uDBFF"}'),
    ]
    for method, path, raw in cases:
        code, body = await api(method, *path, raw=raw)
        assert code == 400, (path, raw, body)
        assert body["reason"] == "invalid" and "not valid Unicode" in body["message"], body
    code, body = await api("POST", "sessions", raw=rb'{"workers": [{"env": {"A": "x\ud800"}}]}')
    assert "workers[0].env.A" in body["message"]
    # Nothing was made or changed, and a surrogate pair (an emoji) is text like any other.
    code, sessions = await api("GET", "sessions")
    assert [s["name"] for s in sessions] == ["s"] and sessions[0]["task"] is None
    assert [w["id"] for w in sessions[0]["workers"]] == [worker["id"]]
    code, body = await api("PATCH", "sessions", "s", raw=rb'{"task": "ok \ud83d\ude00"}')
    assert code == 200 and body["task"] == "ok \U0001f600"


async def test_in_process_environment_is_checked_without_the_server(api, mas_app):
    # A kernel runs the engine in-process, where no HTTP body check is in front of it. Before,
    # such a value passed, and the forked child failed in exec and went on running the
    # server's event loop: the whole server stood still for ~10 s.
    await api("POST", "sessions", body={"name": "s"})
    manager = mas_app.manager
    for env, key in (({"A": "\ud800"}, "A"), ({"A": "ok", "B": "x\udfff"}, "B")):
        with pytest.raises(InvalidError, match=f"'{key}' is not valid Unicode"):
            await manager.create_worker("s", {"name": "w", "env": env})
    with pytest.raises(InvalidError, match="'LONG' is longer than 32768 characters"):
        await manager.create_worker("s", {"name": "w", "env": {"LONG": "x" * 32769}})
    assert (await api("GET", "sessions", "s", "workers"))[1] == []


async def test_a_name_shaped_like_an_id_is_400(api, shell_session):
    s, w = await shell_session()
    for body in ({"name": s["id"]}, {"name": UUID}):
        code, reply = await api("POST", "sessions", body=body)
        assert code == 400 and "looks like an id" in reply["message"], reply
        code, reply = await api("PATCH", "sessions", "s", body=body)
        assert code == 400 and "looks like an id" in reply["message"], reply
    code, reply = await api(
        "POST", "sessions", "s", "workers", body={"name": w["id"].upper(), "kind": "terminal"}
    )
    assert code == 400 and "looks like an id" in reply["message"], reply
    code, sessions = await api("GET", "sessions")
    assert [x["name"] for x in sessions] == ["s"] and len(sessions[0]["workers"]) == 1


@pytest.mark.parametrize(
    "spec",
    [
        {"workers": {}},
        {"workers": 0},
        {"workers": False},
        {"workers": None},
        {"template": False},
        {"template": ""},
        {"name": None},
        {"kind": "worktree", "repo": "repo", "base": ""},
        {"kind": "worktree", "repo": "repo", "base": False},
        {"kind": "worktree", "repo": "repo", "branch": "refs/heads/x"},
        {"workers": [{"name": ""}]},
        {"workers": [{"backend": ""}]},
        {"workers": [{"kind": "terminal", "runtime": ""}]},
        {"workers": [{"kind": "terminal", "name": None}]},
    ],
)
async def test_wrong_types_are_400_not_the_default(api, server_repo, spec):
    code, body = await api("POST", "sessions", body=spec)
    assert code == 400, body
    assert body["reason"] == "invalid" and body["message"]
    assert (await api("GET", "sessions"))[1] == []


async def test_null_is_refused_unless_the_api_says_a_field_may_be_null(api, shell_session):
    await shell_session()
    code, body = await api("POST", "sessions", "s", "stop", body={"force": None})
    assert code == 400 and "force" in body["message"]
    assert (await api("GET", "sessions", "s"))[1]["status"] == "active"
    code, body = await api("POST", *WORKER, "send", body={"text": "true", "wait": None})
    assert code == 400 and "wait" in body["message"]
    # openapi.yaml: timeout, task and persona may be null, meaning "not given" (or none).
    code, body = await api("POST", *WORKER, "send", body={"text": "true", "timeout": None})
    assert code == 200, body
    code, body = await api("PATCH", "sessions", "s", body={"task": None})
    assert code == 200 and body["task"] is None
    code, body = await api(
        "POST", "sessions", "s", "workers", body={"name": "t", "kind": "terminal", "persona": None}
    )
    assert code == 201 and body["persona"] is None
    spec = openapi_document()["components"]["schemas"]
    assert "null" not in str(spec["StopRequest"]["properties"]["force"]["type"])
    assert "null" not in str(spec["SendRequest"]["properties"]["wait"]["type"])
    assert "null" in spec["SendRequest"]["properties"]["timeout"]["type"]


@pytest.fixture
def one_worker_per_session(mas_config):
    mas_config["MASManager"] = {"max_workers_per_session": 1}


async def test_too_many_initial_workers_is_429_like_one_worker_too_many(
    one_worker_per_session, api
):
    workers = [{"kind": "terminal", "name": f"t{i}"} for i in range(2)]
    code, body = await api("POST", "sessions", body={"name": "c", "workers": workers})
    assert code == 429 and body["reason"] == "limit_reached", body
    assert "max_workers_per_session" in body["message"]
    assert (await api("GET", "sessions", "c"))[0] == 404


def _operation(path: str, method: str = "get") -> dict:
    return openapi_document()["paths"][path][method]


def _param(path: str, name: str) -> dict:
    return next(p for p in _operation(path)["parameters"] if p["name"] == name)["schema"]


async def test_transcript_and_output_bounds_are_the_documented_ones(api, shell_session, mas_app):
    await shell_session()
    limit = _param("/sessions/{sid}/workers/{wid}/transcript", "limit")
    assert (limit["minimum"], limit["maximum"]) == (1, 10000)
    for value, status in (("0", 400), ("1", 200), ("10000", 200), ("10001", 400)):
        code, _ = await api("GET", *WORKER, "transcript", params={"limit": value})
        assert code == status, value
    tail = _param("/sessions/{sid}/workers/{wid}/output", "tail")
    kept = mas_app.manager.output_buffer_bytes
    assert (tail["minimum"], tail["maximum"]) == (0, kept)
    for value, status in (("0", 200), (str(kept), 200), (str(kept + 1), 400)):
        code, body = await api("GET", *WORKER, "output", params={"tail": value})
        assert code == status, (value, body)


async def test_screen_of_a_worker_that_is_not_running_is_a_documented_409(
    api, shell_session, until
):
    assert "409" in _operation("/sessions/{sid}/workers/{wid}/screen")["responses"]
    await shell_session()
    await api("POST", *WORKER, "input", body={"data": "exit\r"})

    async def exited():
        return (await api("GET", *WORKER))[1]["status"] == "exited"

    await until(exited, what="the shell to exit")
    code, body = await api("GET", *WORKER, "screen")
    assert code == 409 and body["reason"] == "conflict" and "restart" in body["message"]


@pytest.mark.parametrize("auth", ["", "token wrong-token"], ids=["no-token", "wrong-token"])
async def test_a_refused_websocket_says_forbidden_like_the_rest_api(jp_ws_fetch, api, auth):
    code, rest = await api("GET", "sessions", headers={"Authorization": auth})
    assert code == 403 and rest["reason"] == "forbidden"
    for path in (("events",), ("sessions", "s", "workers", "w", "channel")):
        with pytest.raises(HTTPClientError) as info:
            await jp_ws_fetch("api", "mas", *path, headers={"Authorization": auth})
        assert info.value.code == 403
        assert b'"reason": "forbidden"' in info.value.response.body, info.value.response.body
