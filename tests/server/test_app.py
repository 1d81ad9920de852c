"""The extension app: recovery before the first request, shutdown, activity for idle culling."""

from __future__ import annotations

import logging
import os

import pytest
from tornado.httpclient import HTTPClientError

from mas_jupyter.core.manager import MASManager


@pytest.fixture
def crashed_state(jp_root_dir, tmp_path, jp_asyncio_loop):
    """A previous server left a session half-deleted and one half-created."""
    manager = MASManager(root_dir=str(jp_root_dir), tmux_socket=str(tmp_path / "tmux.sock"))
    manager.start()
    run = jp_asyncio_loop.run_until_complete
    kept = run(manager.create_session({"name": "kept"}))
    doomed = run(manager.create_session({"name": "doomed"}))
    manager.store.update_session(doomed["id"], row_state="deleting")
    run(manager.shutdown())
    return kept, doomed


async def test_recovery_finishes_before_the_first_request(crashed_state, api):
    kept, doomed = crashed_state
    code, listed = await api("GET", "sessions")
    assert code == 200 and [s["name"] for s in listed] == ["kept"]
    assert (await api("GET", "sessions", "doomed"))[0] == 404
    assert os.path.isdir(kept["workspace"])


async def test_stopping_the_server_ends_pty_workers(api, mas_app, until):
    await api("POST", "sessions", body={"name": "s"})
    _, w = await api("POST", "sessions", "s", "workers", body={"name": "sh", "kind": "terminal"})
    assert os.path.exists(f"/proc/{w['pid']}")
    await mas_app.stop_extension()
    await until(lambda: not _alive(w["pid"]), what="the shell to end")
    await mas_app.stop_extension()  # twice is harmless (the server's cleanup calls it again)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_running_workers_count_as_server_activity(api, mas_app, jp_serverapp):
    assert mas_app.current_activity() is None
    before = jp_serverapp.web_app.last_activity()
    await api("POST", "sessions", body={"name": "s"})
    await api("POST", "sessions", "s", "workers", body={"name": "sh", "kind": "terminal"})
    assert [w["name"] for w in mas_app.current_activity()] == ["sh"]
    assert jp_serverapp.extension_manager.any_activity()
    assert jp_serverapp.web_app.settings["last_activity_times"]["mas_jupyter"] >= before
    await api("DELETE", "sessions", "s")
    assert mas_app.current_activity() is None


@pytest.fixture
def blocked_root(mas_config, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way\n")
    mas_config["MASManager"] = {"sessions_root": str(blocker / "sessions")}
    return blocker


async def test_an_unusable_sessions_root_serves_no_api_and_says_what_to_change(
    blocked_root, jp_fetch, mas_app
):
    assert "c.MASManager.sessions_root" in mas_app.start_error
    assert str(blocked_root) in mas_app.start_error
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "mas", "sessions")
    assert info.value.code == 404
    assert (await jp_fetch("api", "status")).code == 200  # the rest of Jupyter runs
    assert blocked_root.read_text() == "in the way\n"
    assert mas_app.current_activity() is None
    await mas_app.stop_extension()


@pytest.fixture
def extension_log(monkeypatch):
    """What the extension app logs while the server starts (its logger does not propagate,
    and the app sets its handlers itself, so the records are taken where they are handled)."""
    records: list[logging.LogRecord] = []
    handle = logging.Logger.callHandlers

    def call_handlers(logger, record):
        if record.name == "MASExtensionApp":
            records.append(record)
        handle(logger, record)

    monkeypatch.setattr(logging.Logger, "callHandlers", call_handlers)
    return records


async def test_an_unusable_sessions_root_is_logged_once_with_its_advice_once(
    blocked_root, extension_log, mas_app
):
    # The engine's own message already says which option to set: the log line must not say
    # it (or the path) again.
    lines = [r.getMessage() for r in extension_log if "not serving /api/mas" in r.getMessage()]
    assert len(lines) == 1
    (line,) = lines
    root = str(blocked_root / "sessions")
    assert line == (
        f"mas_jupyter is not serving /api/mas: cannot use the sessions root {root}: "
        "Not a directory; set c.MASManager.sessions_root to a folder this server can write, "
        "then restart the server."
    )
    assert line.count("c.MASManager.sessions_root") == 1
    assert line.count(root) == 1
    assert line.count("restart") == 1
    assert line == mas_app.start_error
    await mas_app.stop_extension()


def test_a_cause_without_advice_gets_the_advice_once():
    from mas_jupyter.server.app import _start_error

    line = _start_error("/srv/agents", FileExistsError(17, "File exists"))
    assert line == (
        "mas_jupyter is not serving /api/mas: it could not open its state in /srv/agents: "
        "[Errno 17] File exists. Fix that, or set c.MASManager.sessions_root (and "
        "c.MASManager.db_path) to a folder this server can write, then restart the server."
    )


@pytest.fixture
def bad_backends(mas_config):
    """The server's configuration has two invalid backend entries and one valid one."""
    mas_config["MASManager"] = {
        "backends": {
            "catbot": {"argv": ["cat"], "patterns": {"idle": ["(unclosed"]}},
            "strbot": {"argv": "python3"},
            "okbot": {"argv": ["cat"]},
        }
    }


async def test_an_invalid_configured_backend_is_unavailable_and_the_rest_works(
    bad_backends, extension_log, api
):
    code, backends = await api("GET", "backends")
    assert code == 200
    listed = {b["name"]: b for b in backends}
    assert listed["demo"]["available"] is True and listed["okbot"]["available"] is True
    assert listed["catbot"]["available"] is False
    assert listed["catbot"]["reason"].startswith(
        "invalid configuration (c.MASManager.backends['catbot']): "
        "patterns.idle has an invalid regex '(unclosed': "
    )
    assert listed["strbot"]["available"] is False
    assert listed["strbot"]["reason"] == (
        "invalid configuration (c.MASManager.backends['strbot']): "
        "argv must be a non-empty list of strings"
    )
    demo = {"backend": "demo", "env": {"MAS_DEMO_DELAY": "0.05"}}
    code, s = await api("POST", "sessions", body={"name": "x", "workers": [demo]})
    assert code == 201, s
    assert [w["backend"] for w in s["workers"]] == ["demo"]
    code, body = await api(
        "POST", "sessions", body={"name": "y", "workers": [{"backend": "catbot"}]}
    )
    assert code == 409 and body["reason"] == "unavailable"
    assert body["message"].startswith(
        "backend 'catbot' is unavailable: invalid configuration (c.MASManager.backends['catbot'])"
    )
    code, body = await api("POST", "sessions", "x", "workers", body={"backend": "strbot"})
    assert code == 409 and "c.MASManager.backends['strbot']" in body["message"]
    assert (await api("GET", "sessions", "y"))[0] == 404
    # The server log warned once, at start-up, however often the entries were listed or used
    # (each refused request is logged by itself, as every refused request is).
    lines = [
        r.getMessage()
        for r in extension_log
        if r.levelname == "WARNING" and "c.MASManager.backends" in r.getMessage()
    ]
    assert lines == [
        f"mas_jupyter: backend 'catbot' is unavailable: {listed['catbot']['reason']}",
        f"mas_jupyter: backend 'strbot' is unavailable: {listed['strbot']['reason']}",
    ]
