"""The session routes over HTTP: success and error cases, status codes and JSON errors."""

from __future__ import annotations

import json
import os
import subprocess

import pytest


async def test_create_get_list_and_filter_sessions(api):
    code, created = await api("POST", "sessions", body={"name": "alpha", "task": "T-1"})
    assert code == 201
    assert created["name"] == "alpha" and created["kind"] == "quick"
    assert created["status"] == "active" and created["workers"] == []
    assert created["workspace_path"] == "mas-sessions/alpha"
    code, second = await api("POST", "sessions")  # an empty body is a default quick session
    assert code == 201 and second["name"] == "session-001"

    for key in (created["id"], "alpha"):
        code, got = await api("GET", "sessions", key)
        assert code == 200 and got["id"] == created["id"]

    code, listed = await api("GET", "sessions")
    assert [s["name"] for s in listed] == ["alpha", "session-001"]
    code, listed = await api("GET", "sessions", params={"task": "T-1"})
    assert [s["name"] for s in listed] == ["alpha"]
    code, listed = await api("GET", "sessions", params={"status": "paused"})
    assert code == 200 and listed == []
    code, listed = await api("GET", "sessions", params={"kind": "quick"})
    assert len(listed) == 2


async def test_listing_has_an_etag_and_answers_304_while_unchanged(jp_fetch, api):
    await api("POST", "sessions", body={"name": "alpha"})
    first = await jp_fetch("api", "mas", "sessions")
    tag = first.headers["Etag"]
    assert (await jp_fetch("api", "mas", "sessions")).headers["Etag"] == tag
    code, body = await api("GET", "sessions", headers={"If-None-Match": tag})
    assert code == 304 and body is None
    await api("PATCH", "sessions", "alpha", body={"task": "T"})
    code, listed = await api("GET", "sessions", headers={"If-None-Match": tag})
    assert code == 200 and listed[0]["task"] == "T"


async def test_listing_is_utf8_json_with_text_beyond_ascii(jp_fetch, api):
    # The listing's body is encoded once per change, as UTF-8 (not \u escapes).
    task = "données → résumé ✓ 数据"
    await api("POST", "sessions", body={"name": "alpha", "task": task})
    resp = await jp_fetch("api", "mas", "sessions")
    assert resp.headers["Content-Type"].startswith("application/json")
    assert task.encode() in resp.body
    assert json.loads(resp.body.decode("utf-8"))[0]["task"] == task
    code, listed = await api("GET", "sessions", params={"task": task})
    assert code == 200 and [s["name"] for s in listed] == ["alpha"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [({"status": "running"}, "invalid"), ({"kind": "box"}, "invalid")],
)
async def test_list_filters_are_checked(api, params, reason):
    code, body = await api("GET", "sessions", params=params)
    assert code == 400 and body["reason"] == reason and body["message"]


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[1, 2]",
        b'"text"',
        b'{"name": NaN}',
        b"\xff\xfe{}",
        b'{"name": 5}',
        b'{"kind": "box"}',
        b'{"bogus": 1}',
        b'{"name": "../up"}',
        b'{"workers": {"a": 1}}',
        b'{"kind": "quick", "repo": "x"}',
    ],
)
async def test_bad_create_bodies_are_400_with_a_message(api, raw):
    code, body = await api("POST", "sessions", raw=raw)
    assert code == 400, body
    assert body["reason"] == "invalid" and body["message"] and "Traceback" not in body["message"]
    code, listed = await api("GET", "sessions")
    assert listed == []


async def test_unknown_fields_are_named_in_the_error(api):
    code, body = await api("POST", "sessions", body={"kind": "quick", "comand": "rm -rf /"})
    assert code == 400 and "comand" in body["message"]


@pytest.fixture
def small_body_limit(mas_config):
    mas_config["MASExtensionApp"] = {"max_body_bytes": 1024}


async def test_oversized_body_is_413(small_body_limit, api):
    code, body = await api("POST", "sessions", body={"task": "x" * 2000})
    assert code == 413 and body["reason"] == "too_large"
    code, body = await api("POST", "sessions", body={"task": "x" * 100})
    assert code == 201


async def test_duplicate_name_is_409(api):
    assert (await api("POST", "sessions", body={"name": "dup"}))[0] == 201
    code, body = await api("POST", "sessions", body={"name": "dup"})
    assert code == 409 and body["reason"] == "conflict"


async def test_dir_outside_the_allowed_roots_is_403(api, tmp_path):
    code, body = await api("POST", "sessions", body={"kind": "dir", "path": str(tmp_path)})
    assert code == 403 and body["reason"] == "forbidden"
    code, body = await api("POST", "sessions", body={"kind": "dir", "path": "../.."})
    assert code == 403


async def test_dir_session_inside_the_root(api, jp_root_dir):
    (jp_root_dir / "project").mkdir()
    code, body = await api("POST", "sessions", body={"kind": "dir", "path": "project"})
    assert code == 201 and body["workspace_path"] == "project"


@pytest.fixture
def one_session_only(mas_config):
    mas_config["MASManager"] = {"max_sessions": 1}


async def test_session_limit_is_429(one_session_only, api):
    assert (await api("POST", "sessions"))[0] == 201
    code, body = await api("POST", "sessions")
    assert code == 429 and body["reason"] == "limit_reached"


async def test_unknown_session_is_404_on_every_session_route(api):
    routes = [
        ("GET", ()),
        ("PATCH", ()),
        ("DELETE", ()),
        ("POST", ("pause",)),
        ("POST", ("resume",)),
        ("POST", ("stop",)),
        ("GET", ("activities",)),
    ]
    for method, rest in routes:
        body = {"task": "x"} if method == "PATCH" else None
        code, data = await api(method, "sessions", "nope", *rest, body=body)
        assert code == 404, (method, rest, data)
        assert data["reason"] == "not_found" and "nope" in data["message"]


async def test_rename_and_set_task(api):
    _, s = await api("POST", "sessions", body={"name": "old"})
    code, body = await api("PATCH", "sessions", "old", body={"name": "new", "task": "T-9"})
    assert code == 200 and body["name"] == "new" and body["task"] == "T-9"
    assert (await api("GET", "sessions", "old"))[0] == 404
    assert (await api("GET", "sessions", s["id"]))[1]["name"] == "new"
    code, body = await api("PATCH", "sessions", "new", body={"task": None})
    assert code == 200 and body["task"] is None


async def test_rename_errors(api):
    await api("POST", "sessions", body={"name": "a"})
    await api("POST", "sessions", body={"name": "b"})
    assert (await api("PATCH", "sessions", "a", body={"name": "b"}))[0] == 409
    assert (await api("PATCH", "sessions", "a", body={"name": ""}))[0] == 400
    assert (await api("PATCH", "sessions", "a", body={"kind": "dir"}))[0] == 400
    assert (await api("PATCH", "sessions", "a", raw=b"[]"))[0] == 400
    assert (await api("PATCH", "sessions", "a", body={"task": 7}))[0] == 400


async def test_pause_resume_stop_cycle(api):
    await api("POST", "sessions", body={"name": "cyc"})
    code, body = await api("POST", "sessions", "cyc", "pause")
    assert code == 200 and body["status"] == "paused"
    assert (await api("POST", "sessions", "cyc", "pause"))[0] == 409
    code, body = await api("POST", "sessions", "cyc", "resume", body={})
    assert code == 200 and body["status"] == "active"
    assert (await api("POST", "sessions", "cyc", "resume"))[0] == 409
    code, body = await api("POST", "sessions", "cyc", "stop")
    assert code == 200 and body["status"] == "stopped" and body["warnings"] == []
    code, body = await api("POST", "sessions", "cyc", "stop", body={"force": True})
    assert code == 409 and body["reason"] == "conflict"
    code, body = await api("POST", "sessions", "cyc", "resume")
    assert code == 200 and body["status"] == "active"


@pytest.mark.parametrize(
    ("action", "raw"),
    [
        ("pause", b'{"now": true}'),
        ("resume", b"[]"),
        ("stop", b'{"force": "yes"}'),
        ("stop", b'{"force": 1}'),
        ("stop", b'{"forse": true}'),
    ],
)
async def test_lifecycle_bodies_are_closed(api, action, raw):
    await api("POST", "sessions", body={"name": "s"})
    code, body = await api("POST", "sessions", "s", action, raw=raw)
    assert code == 400 and body["reason"] == "invalid"


async def test_stop_refused_on_uncommitted_changes_then_forced(api, server_repo):
    code, s = await api("POST", "sessions", body={"kind": "worktree", "repo": "repo"})
    assert code == 201, s
    assert s["branch"] == "mas/session-001"
    with open(os.path.join(s["workspace"], "new.txt"), "w") as fh:
        fh.write("work\n")
    code, body = await api("POST", "sessions", s["id"], "stop")
    assert code == 409
    assert body["reason"] == "stop_refused" and body["errors"] and body["warnings"] == []
    assert "uncommitted" in body["message"]
    code, body = await api("POST", "sessions", s["id"], "stop", body={"force": True})
    assert code == 200 and body["status"] == "stopped"


async def test_delete_keeps_or_purges_the_workspace(api):
    _, kept = await api("POST", "sessions", body={"name": "kept"})
    _, gone = await api("POST", "sessions", body={"name": "gone"})
    code, body = await api("DELETE", "sessions", "kept")
    assert code == 204 and body is None
    assert os.path.isdir(kept["workspace"])
    assert (await api("GET", "sessions", "kept"))[0] == 404
    code, _ = await api("DELETE", "sessions", "gone", params={"purge": "1"})
    assert code == 204 and not os.path.exists(gone["workspace"])


@pytest.mark.parametrize("params", [{"purge": "yes"}, {"force": "maybe"}, {"purge": ""}])
async def test_delete_flags_are_checked(api, params):
    await api("POST", "sessions", body={"name": "s"})
    code, body = await api("DELETE", "sessions", "s", params=params)
    assert code == 400 and body["reason"] == "invalid"
    assert (await api("GET", "sessions", "s"))[0] == 200


async def test_purging_a_changed_worktree_needs_force(api, server_repo, jp_fetch):
    _, s = await api("POST", "sessions", body={"kind": "worktree", "repo": "repo"})
    with open(os.path.join(s["workspace"], "new.txt"), "w") as fh:
        fh.write("work\n")
    code, body = await api("DELETE", "sessions", s["name"], params={"purge": "true"})
    assert code == 409 and body["changes"]
    r = await jp_fetch(
        "api", "mas", "sessions", s["name"], method="DELETE", params={"purge": "1", "force": "1"}
    )
    assert r.code == 204 and not os.path.exists(s["workspace"])
    ref = r.headers["X-MAS-Rescue-Ref"]
    assert ref.startswith("refs/mas/rescue/")
    shown = subprocess.run(
        ["git", "show", "--stat", ref], cwd=server_repo, capture_output=True, text=True
    ).stdout
    assert "new.txt" in shown


async def test_activities_with_limit_and_since(api):
    await api("POST", "sessions", body={"name": "log"})
    await api("PATCH", "sessions", "log", body={"task": "T-2"})
    await api("POST", "sessions", "log", "pause")
    code, entries = await api("GET", "sessions", "log", "activities")
    assert code == 200
    assert [e["type"] for e in entries] == ["created", "task-changed", "paused"]
    code, last = await api("GET", "sessions", "log", "activities", params={"limit": "1"})
    assert [e["type"] for e in last] == ["paused"]
    since = entries[0]["seq"]
    code, after = await api("GET", "sessions", "log", "activities", params={"since": str(since)})
    assert [e["type"] for e in after] == ["task-changed", "paused"]


@pytest.mark.parametrize(
    "params", [{"limit": "abc"}, {"limit": "-1"}, {"limit": "0"}, {"since": "1.5"}, {"limit": ""}]
)
async def test_activities_arguments_are_checked(api, params):
    await api("POST", "sessions", body={"name": "log"})
    code, body = await api("GET", "sessions", "log", "activities", params=params)
    assert code == 400 and body["reason"] == "invalid"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", ("nothing",)), ("GET", ("sessions", "s", "workers", "w", "bogus")), ("POST", ("x",))],
)
async def test_unknown_routes_are_a_json_404(api, method, path):
    code, body = await api(method, *path)
    assert code == 404 and body["reason"] == "not_found" and "openapi.json" in body["message"]


async def test_unknown_routes_need_authentication_too(api):
    code, _ = await api("GET", "nothing", headers={"Authorization": ""})
    assert code == 403


async def test_unsupported_method_is_a_json_405(api):
    code, body = await api("PUT", "sessions", body={})
    assert code == 405 and body["reason"] == "method_not_allowed"


async def test_openapi_document_is_served_with_the_base_url(api, jp_base_url):
    code, doc = await api("GET", "openapi.json")
    assert code == 200 and doc["openapi"].startswith("3.")
    assert doc["servers"] == [{"url": jp_base_url + "api/mas"}]
    assert "/sessions/{sid}/workers/{wid}/send" in doc["paths"]


async def test_manager_is_configured_from_the_server_config(mas_app, tmp_path, jp_root_dir):
    manager = mas_app.manager
    assert manager.tmux_socket == str(tmp_path / "tmux.sock")
    assert manager.root_dir == str(jp_root_dir)
