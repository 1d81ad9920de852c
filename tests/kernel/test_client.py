"""The client against a real server: every call, errors, the active session, events, consoles."""

from __future__ import annotations

import asyncio
import math
import os
import pathlib
import re
import socket
import traceback

import pytest
from kernel_support import SHELL_ARGV, Proxy, demo_idle, git_repo

import mas_jupyter
from mas_jupyter.kernel import (
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    MASClient,
    MASClientError,
    NoActiveSession,
    NotFound,
)
from mas_jupyter.kernel.loop import LoopThread
from mas_jupyter.kernel.outputs import Reply, Screen, Transcript
from mas_jupyter.kernel.records import Session, Worker
from mas_jupyter.kernel.render import markdown_html
from mas_jupyter.kernel.transport import HTTPTransport
from tests.conftest import run_git


def test_a_transcript_shows_a_run_of_output_as_one_block():
    """The engine records output as it reads it, a few KiB at a time: `%mas log` showed one
    `--- output` block per read, an escape cut in two between blocks."""
    records = [
        {"type": "input", "text": "count"},
        {"type": "output", "data": "1\r\n2\x1b[3"},
        {"type": "output", "data": "1mred\x1b[0m\r\n"},
        {"type": "output", "data": "3\r\n"},
        {"type": "activity", "state": "idle"},
        {"type": "output", "data": "> "},
    ]
    shown = Transcript(None, {"records": records, "next_offset": None, "total": 6})
    assert repr(shown) == (
        "--- you\ncount\n--- output\n1\n2red\n3\n--- activity: idle\n--- output\n>"
    )
    assert shown._repr_html_().count("<pre") == 3


def test_session_lifecycle_calls(client, server):
    s = client.create_session("churn", agent="demo", task="T-1", terminal=True)
    assert isinstance(s, Session)
    assert (s.name, s.kind, s.status, s.task) == ("churn", "quick", "active", "T-1")
    assert sorted(w.name for w in s.workers) == ["demo", "terminal"]
    assert client.session("churn").id == s.id
    assert client.session(s.id).name == "churn"
    assert [x.name for x in client.sessions()] == ["churn"]
    assert [x.name for x in client.sessions(task="T-1")] == ["churn"]
    assert client.sessions(task="other") == []
    assert client.sessions(status="paused") == []
    assert [x.name for x in client.sessions(kind="quick")] == ["churn"]

    s = client.rename("churn-2", session="churn")
    assert s.name == "churn-2"
    assert client.set_task("T-2", session="churn-2").task == "T-2"
    assert client.set_task(None, session="churn-2").task is None

    paused = client.pause("churn-2")
    assert paused.status == "paused"
    assert all(w.status == "exited" for w in paused.workers)
    resumed = client.resume("churn-2")
    assert resumed.status == "active"
    demo_idle(client, "churn-2")

    info = client.connect_info("churn-2")
    assert info["session"] == "churn-2"
    assert {w["name"] for w in info["workers"]} == {"demo", "terminal"}

    log = client.activities("churn-2")
    kinds = [e["type"] for e in log]
    assert kinds[0] == "created" and "paused" in kinds and "resumed" in kinds
    assert len(client.activities("churn-2", limit=2)) == 2
    assert all(e["seq"] > log[2]["seq"] for e in client.activities("churn-2", since=log[2]["seq"]))

    stopped = client.stop("churn-2")
    assert stopped.status == "stopped"
    assert isinstance(stopped.data.get("warnings"), list)
    assert client.delete("churn-2", purge=True) is None
    with pytest.raises(NotFound):
        client.session("churn-2")


def test_worker_calls(client, server, until):
    client.create_session("w", agent="demo")
    demo_idle(client, "w")
    sh = client.add_worker("sh", kind="terminal", session="w", cols=100, rows=30)
    assert isinstance(sh, Worker) and (sh.kind, sh.backend, sh.cols) == ("terminal", "shell", 100)
    assert [w.name for w in client.workers("w")] == ["demo", "sh"]
    assert client.worker("sh", session="w").id == sh.id

    reply = client.send("hello there", worker="demo", session="w")
    assert isinstance(reply, Reply)
    assert reply.text == "reply: hello there (2 words, 1 lines)"
    assert not reply.timed_out and reply.activity == "idle"

    sent = client.send("again", worker="demo", session="w", wait=False)
    assert sent.text is None and "not waiting" in repr(sent)
    demo_idle(client, "w")

    client.input("echo mas-$((6*7))\r", worker="sh", session="w")
    until(lambda: "mas-42" in str(client.screen("sh", "w")), what="the shell's echo")
    screen = client.screen("sh", "w")
    assert isinstance(screen, Screen) and screen.cols == 100
    assert "mas-42" in client.output(worker="sh", session="w").text
    assert len(client.output(tail=10, worker="sh", session="w").data["data"]) <= 10

    records = client.transcript(worker="demo", session="w")
    assert any(r["type"] == "input" and r["text"] == "hello there" for r in records)
    assert len(client.transcript(0, 1, worker="demo", session="w")) == 1

    resized = client.resize(90, 20, worker="sh", session="w")
    assert (resized.cols, resized.rows) == (90, 20)
    restarted = client.restart(worker="demo", session="w")
    assert restarted.status in ("starting", "running")
    demo_idle(client, "w")

    assert client.delete_worker("sh", session="w") is None
    assert [w.name for w in client.workers("w")] == ["demo"]


def test_stop_refused_with_errors_then_forced(client, server):
    client.create_session("busy", agent="demo")
    demo_idle(client, "busy")
    client.send("/sleep 30", session="busy", wait=False)
    with pytest.raises(Conflict) as info:
        client.stop("busy")
    assert info.value.status == 409 and info.value.reason == "stop_refused"
    assert info.value.errors and "demo" in info.value.errors[0]
    assert "was not stopped" in str(info.value)
    assert client.stop("busy", force=True).status == "stopped"


def test_worktree_and_dir_sessions(client, server):
    git_repo(server.root / "repo")
    wt = client.create_session("feat", "worktree", repo="repo", branch="mas/feat", base="HEAD")
    assert (wt.kind, wt.branch, wt.base) == ("worktree", "mas/feat", "HEAD")
    (server.root / "shared").mkdir()
    d = client.create_session("shared", "dir", path="shared")
    assert d.kind == "dir" and d.workspace.endswith("shared")
    assert any("shared" in w for w in client.stop("shared").data["warnings"])


@pytest.fixture(params=["http", "in-process"])
def any_client(request, tmp_path):
    """(a client, its root): the test server's client, then an in-process engine's."""
    if request.param == "http":
        yield request.getfixturevalue("client"), request.getfixturevalue("server").root
        return
    # A plain bash, as the server's: the machine's startup files can be slow or hang (one
    # here waited for a stale `pyenv rehash` lock, and `exit` typed into it did nothing).
    config = {"backends": {"shell": {"argv": SHELL_ARGV}}, "tmux_socket": str(tmp_path / "tmux")}
    local = mas_jupyter.connect(local=True, root_dir=str(tmp_path), config=config)
    yield local, tmp_path
    local.close()


def test_a_refusals_traceback_is_the_callers_line_not_the_clients_machinery(any_client):
    """A refused call showed 7 frames of the client's machinery in a notebook (the loop's
    hand-off, concurrent.futures, the transport: 58 lines in IPython for a name in use); the
    refusal is the server's answer, so its traceback ends at the call: this test's line and
    the one wrapper that makes the call synchronous (for an `a...` call, the client's call)."""
    client, _ = any_client
    client.create_session("tb-dup")
    with pytest.raises(Conflict, match="already exists") as info:
        client.create_session("tb-dup")
    files = [pathlib.Path(f.filename).name for f in traceback.extract_tb(info.tb)]
    assert files == ["test_client.py", "records.py"], files
    with pytest.raises(Conflict) as info:
        asyncio.run(client.acreate_session("tb-dup"))
    files = [pathlib.Path(f.filename).name for f in traceback.extract_tb(info.tb)]
    assert files[-2:] == ["client.py", "client.py"] and "loop.py" not in files, files
    client.delete("tb-dup", purge=True)


def test_a_forced_purge_returns_where_the_worktrees_changes_went(any_client):
    client, root = any_client
    repo = git_repo(root / "rescue-repo")
    workspace = client.create_session("feat", "worktree", repo="rescue-repo").workspace
    pathlib.Path(workspace, "a.txt").write_text("changed\n")
    pathlib.Path(workspace, "new.txt").write_text("new\n")
    with pytest.raises(Conflict, match="uncommitted"):
        client.delete("feat", purge=True)
    ref = client.delete("feat", purge=True, force=True)
    assert ref.startswith("refs/mas/rescue/feat-") and not os.path.exists(workspace)
    changed = run_git("show", "--format=", "--name-only", ref, cwd=str(repo)).split()
    assert changed == ["a.txt", "new.txt"]
    # Nothing to save: None, as for every other delete.
    client.create_session("clean", "worktree", repo="rescue-repo")
    assert client.delete("clean", purge=True, force=True) is None


def test_a_timeout_is_a_number_of_seconds_more_than_0(client, server):
    client.create_session("tmo", agent="demo")
    client.wait_ready(session="tmo")
    for value in (math.nan, math.inf, -math.inf, -5, 0, True, "10"):
        message = re.escape(f"timeout must be a number of seconds more than 0, not {value!r}")
        with pytest.raises(ValueError, match=message):
            client.send("hi", session="tmo", timeout=value)
        with pytest.raises(ValueError, match=message):
            client.wait_ready(session="tmo", timeout=value)
        with pytest.raises(ValueError, match=message):
            client.events(timeout=value)
    assert not any(r["type"] == "input" for r in client.transcript(session="tmo"))
    assert client.send("hi", session="tmo", timeout=30).text == "reply: hi (1 words, 1 lines)"


def test_catalogs(client, server):
    backends = client.backends()
    assert {"demo", "shell", "claude"} <= set(backends.names())
    assert "demo" in repr(backends) and "<table" in backends._repr_html_()
    assert {"pm", "qa", "specialist"} <= set(client.personas().names())
    assert "default" in client.templates().names()


def test_errors_carry_the_server_message(client, server):
    with pytest.raises(NotFound) as info:
        client.session("nope")
    assert (info.value.status, info.value.reason) == (404, "not_found")
    assert "nope" in info.value.message
    client.create_session("dup")
    with pytest.raises(Conflict, match="already exists"):
        client.create_session("dup")
    with pytest.raises(InvalidRequest):
        client.create_session("bad name with spaces")
    with pytest.raises(NotFound, match="no backend"):
        client.add_worker(backend="nosuch", kind="agent", session="dup")
    with pytest.raises(InvalidRequest):
        client.send("   ", session="dup", worker="x")


def _waited_send(c: MASClient) -> None:
    """A send that waits for its reply: it goes on a connection of its own (fetch_closing)."""
    c._loop.run(c._transport.call("send_message", "s", "w", "hi", wait=True, timeout=1))


def test_wrong_token_and_unreachable_server(server):
    loop = LoopThread("t")
    try:
        bad = MASClient(HTTPTransport(server.url, "wrong"), loop)
        # A state change with a refused token meets the XSRF check: still "check the token".
        for call in (bad.sessions, lambda: bad.create_session("x"), lambda: _waited_send(bad)):
            with pytest.raises(MASClientError) as info:
                call()
            assert info.value.status in (401, 403) and "token" in info.value.message
        gone = MASClient(HTTPTransport("http://127.0.0.1:9/", "x"), loop)
        for call in (gone.sessions, lambda: _waited_send(gone)):
            with pytest.raises(ConnectionFailed, match="cannot reach"):
                call()
        # A URL with credentials or a token in it is shown without them.
        secret = MASClient(HTTPTransport("http://me:pw@127.0.0.1:9/?token=tk", "x"), loop)
        with pytest.raises(ConnectionFailed) as info:
            secret.sessions()
        assert "http://127.0.0.1:9/" in info.value.message
        assert "pw" not in info.value.message and "tk" not in info.value.message
        assert "pw" not in repr(secret) and "tk" not in repr(secret._transport)
        # ... and so is a server that refuses the token.
        host = server.url.split("://", 1)[1]
        refused = MASClient(HTTPTransport(f"http://me:pw@{host}", "wrong"), loop)
        for call in (refused.sessions, lambda: _waited_send(refused)):
            with pytest.raises(MASClientError) as info:
                call()
            assert info.value.status in (401, 403) and "check the token" in info.value.message
            assert "pw" not in info.value.message
            assert server.url in info.value.message
        # A page (here Jupyter's start page: the query swallows the API's path) is not taken
        # for an answer of the API.
        page = MASClient(HTTPTransport(f"{server.url}?next=", server.token), loop)
        for call in (page.sessions, lambda: _waited_send(page)):
            with pytest.raises(ConnectionFailed, match="does not serve /api/mas"):
                call()
        page.close()
        refused.close()
        secret.close()
        bad.close()
        gone.close()
    finally:
        loop.stop()


def test_a_waited_send_without_an_answer_times_out_with_the_usual_message():
    # A server that takes the connection and never answers (a listening socket nobody
    # accepts on): the waited send's own connection says so as every other call does.
    silent = socket.create_server(("127.0.0.1", 0))
    loop = LoopThread("t")
    try:
        transport = HTTPTransport(f"http://127.0.0.1:{silent.getsockname()[1]}/", "x")
        path = "sessions/s/workers/w/send"
        with pytest.raises(ConnectionFailed, match=f"did not answer POST {path} within 0.3 s"):
            loop.run(transport.exchange("POST", path, body={}, timeout=0.3, closing=True))
    finally:
        loop.stop()
        silent.close()


@pytest.mark.parametrize("closing", [False, True])
def test_a_server_that_closes_before_answering_is_a_lost_connection(closing):
    """A server that reads the request and closes (it stopped meanwhile): a `jupyter mas
    delete` showed tornado's traceback (HTTPStreamClosedError: Stream closed)."""
    server = socket.create_server(("127.0.0.1", 0))
    loop = LoopThread("t")

    async def take_and_close() -> None:
        peer, _ = await asyncio.get_running_loop().sock_accept(server)
        with peer:
            await asyncio.get_running_loop().sock_recv(peer, 65536)

    try:
        server.setblocking(False)
        transport = HTTPTransport(f"http://127.0.0.1:{server.getsockname()[1]}/", "x")
        closer = loop.submit(take_and_close())
        lost = "lost the connection to the Jupyter server at .* before it answered DELETE "
        with pytest.raises(ConnectionFailed, match=lost):
            loop.run(transport.exchange("DELETE", "sessions/s", timeout=10, closing=closing))
        closer.result(10)
    finally:
        loop.stop()
        server.close()


def test_a_server_without_the_extension_is_one_clear_message(server_without_mas, client):
    # Jupyter answers /api/mas with its HTML 404 page: the client says what that means, in one
    # line, for REST calls and WebSockets alike, and never shows the page or the token.
    plain = server_without_mas
    expected = (
        f"the Jupyter server at {plain.url} does not serve /api/mas: is the mas_jupyter "
        "extension enabled? (`jupyter server extension list`; if it is, the server's log says "
        "why in a line 'mas_jupyter is not serving /api/mas: ...')"
    )
    loop = LoopThread("t")
    c = MASClient(HTTPTransport(plain.url, plain.token), loop)
    try:
        calls = (c.sessions, lambda: c.session("x"), lambda: c.create_session("x"))
        for call in (*calls, lambda: _waited_send(c)):
            with pytest.raises(ConnectionFailed) as info:
                call()
            assert info.value.message == expected
            assert info.value.status == 404
        with pytest.raises(ConnectionFailed) as info:
            loop.run(c._transport.websocket("sessions/x/workers/y/channel"))
        assert info.value.message == expected
        assert "<" not in expected and plain.token not in expected
    finally:
        c.close()
        loop.stop()
    # mas_jupyter's own 404s (JSON with message and reason) stay as they were.
    with pytest.raises(NotFound) as info:
        client.session("nope")
    assert info.value.message == "no session with id or name 'nope'"
    assert (info.value.status, info.value.reason) == (404, "not_found")
    with pytest.raises(NotFound) as info:
        client._loop.run(client._transport.websocket("sessions/nope/workers/y/channel"))
    assert info.value.message == "no session with id or name 'nope'"


def test_active_session_and_nested_use(client, server):
    client.create_session("a", agent="demo")
    client.create_session("b", agent="demo")
    with pytest.raises(NoActiveSession, match="mas.use"):
        client.workers()
    client.use("a")
    assert client.active_session == "a"
    with client.use("b") as s:
        assert s.name == "b" and client.active_session == "b"
        with client.use("a", "demo"):
            assert (client.active_session, client.active_worker) == ("a", "demo")
        assert client.active_session == "b" and client.active_worker is None
    assert client.active_session == "a"
    assert [w.name for w in client.workers()] == ["demo"]
    demo_idle(client, "a")
    assert client.send("hi").text.startswith("reply: hi")
    client.use()
    assert client.active_session is None
    with pytest.raises(NotFound):
        client.use("missing")


def test_async_variants(client, server):
    async def main():
        s = await client.acreate_session("as", agent="demo")
        with client.use("as"):
            with client.events(timeout=15) as events:
                events.wait_for(lambda e: e.get("activity") == "idle", 15)
                reply, table = await asyncio.gather(client.asend("one two"), client.asessions())
        worker = s.workers[0]
        screen = await worker.ascreen()
        return reply, table, screen

    reply, table, screen = asyncio.run(main())
    assert reply.text == "reply: one two (2 words, 1 lines)"
    assert [s.name for s in table] == ["as"]
    assert "demo>" in str(screen)


@pytest.mark.parametrize(
    "text",
    [
        # A fence opened with an info string closed the escaping's idea of a fence: the
        # line after it was raw HTML to CommonMark.
        "```\nfoo\n```python\nx\n```\n<img src=x onerror=alert(1)>\nend\n",
        "``` a`b\n<img src=x onerror=alert(1)>\n```\n",
        "````\n```\n````\n<img src=x onerror=alert(1)>\n",
        "<script>alert(1)</script>",
        "[click](javascript:alert(1))",
    ],
)
def test_a_reply_carries_no_markup_of_the_agents(text):
    shown = markdown_html(text)
    assert "<img" not in shown and "<script" not in shown and "href=" not in shown


def test_a_reply_shows_its_markdown_and_its_code_as_written():
    shown = markdown_html("## Plan\n\n- filter with `df[df.x < 3 & df.y > 1]`\n")
    assert "<h2>Plan</h2>" in shown and "<li>" in shown
    # Escaped once: it showed as `&lt;` and `&amp;`.
    assert "<code>df[df.x &lt; 3 &amp; df.y &gt; 1]</code>" in shown


def test_records_print_and_escape(client, server):
    s = client.create_session("esc", agent="demo", task="<b>x</b>")
    assert "<b>x</b>" not in s._repr_html_() and "&lt;b&gt;x" in s._repr_html_()
    assert repr(s).startswith("<Session esc quick active")
    demo_idle(client, "esc")
    reply = client.send("<script>alert(1)</script>", session="esc")
    shown = reply._repr_html_()
    assert "<script>" not in shown and "&lt;script&gt;" in shown
    screen_html = client.screen(session="esc")._repr_html_()
    assert "<script>" not in screen_html
    assert "<script>" not in client.transcript(session="esc")._repr_html_()
    assert "esc" in repr(client.sessions()) and "<table" in client.sessions()._repr_html_()
    assert "demo" in repr(client.workers("esc"))
    assert "created" in repr(client.activities("esc"))


def test_event_iterator_and_callback_with_reconnect(client, server, until):
    seen = []
    connects = []
    sub = client.subscribe(seen.append, on_connect=lambda: connects.append(1))
    until(lambda: connects, what="the first connection")
    with client.events(timeout=15) as events:
        client.create_session("ev", agent="demo")
        created = events.wait_for(lambda e: e["type"] == "session-created", 15)
        assert created["session"]["name"] == "ev"
        assert events.wait_for(lambda e: e["type"] == "worker-created", 15)
        assert events.wait_for(lambda e: e.get("activity") == "idle", 15)
    until(lambda: any(e["type"] == "session-created" for e in seen), what="the callback")
    # The connection drops: the feed reconnects and tells the subscriber to re-read.
    client._feed.drop_connection()
    until(lambda: len(connects) >= 2, what="the reconnection")
    client.pause("ev")
    until(
        lambda: any(
            e["type"] == "session-updated" and e["session"]["status"] == "paused" for e in seen
        ),
        what="an event after the reconnection",
    )
    sub.close()


def _server_holds(port: int) -> bool:
    """Whether a TCP connection from this local port is still established (/proc/net/tcp:
    state 01), as the server's side sees it."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                fields = row.split()
                if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def test_the_event_feed_closes_its_websocket_when_the_last_subscriber_leaves(client, server, until):
    first = client.events(timeout=15)
    second = client.subscribe(lambda event: None)
    port = client._feed.run.ws.protocol.stream.socket.getsockname()[1]
    assert _server_holds(port)
    first.close()
    assert client._feed.run is not None and _server_holds(port)  # one subscriber is left
    second.close()
    until(lambda: not _server_holds(port), what="the feed's WebSocket to close")
    assert client._feed.run is None
    # The next subscriber opens a connection of its own and sees each event once.
    with client.events(timeout=15) as events:
        assert client._feed.run.ws.protocol.stream.socket.getsockname()[1] != port
        client.create_session("feed-again", terminal=True)
        seen = []
        events.wait_for(lambda e: seen.append(e) or e["type"] == "worker-created", 15)
        created = [e for e in seen if e["type"] == "session-created"]
        assert [e["session"]["name"] for e in created] == ["feed-again"]


def test_console_channel(client, server, until):
    client.create_session("con", terminal=True)
    out = []
    done = []

    def on_message(kind, payload):
        out.append((kind, payload))
        if kind == "closed":
            done.append(True)

    channel = client.channel(on_message, worker="terminal", session="con")
    until(lambda: out and out[0][0] == "setup", what="setup")
    channel.resize(30, 100)
    channel.write("echo chan-$((2+3))\r")
    until(lambda: "chan-5" in "".join(p for k, p in out if k == "stdout"), what="echo")
    until(lambda: client.worker("terminal", "con").cols == 100, what="the resize")
    channel.write("exit\r")
    until(lambda: done, what="the channel to close")
    assert ("exit", 0) in out


def test_a_console_channel_says_why_its_worker_ended(any_client, until):
    client, _ = any_client
    client.create_session("why", terminal=True)
    for end, reason in (("restart", "restarted"), ("exit", "exited")):
        out = []
        channel = client.channel(
            lambda kind, payload, out=out: out.append((kind, payload)),
            worker="terminal",
            session="why",
        )
        until(lambda out=out: out and out[0][0] == "setup", what="setup")
        if end == "restart":
            client.restart("terminal", session="why")
        else:
            channel.write("exit\r")
        until(lambda out=out: out and out[-1][0] == "closed", what="the end")
        assert [k for k, _ in out[-2:]] == ["exit", "closed"]
        # Before, a restart's end looked like a crash: ["exit", -1] and nothing more.
        assert channel.exit_reason == reason, out[-2:]


def test_an_interrupted_send_is_never_typed(server, until):
    # A send that waits for a busy agent's turn, cancelled (the kernel's stop button on
    # `%mas send`, Ctrl-C on client.send): the client closes its connection, so the server
    # drops the message. Before, the HTTP request lived on and the text was typed later.
    with Proxy(server.url) as proxy:
        c = MASClient(HTTPTransport(proxy.url, server.token), LoopThread("test-interrupted"))
        try:
            c.create_session("turns", agent="demo")
            demo_idle(c, "turns")
            c.send("/sleep 30", session="turns", wait=False)
            until(lambda: c.worker("demo", session="turns").activity == "busy", what="busy")
            pending = c._loop.submit(c.asend("never typed", session="turns"))
            until(lambda: b"never typed" in proxy.upstream, what="the send reached the server")
            pending.cancel()  # what LoopThread.run does on KeyboardInterrupt
            c.input("\x03", session="turns")  # the sleep ends: the agent is free
            assert c.send("after", session="turns").text == "reply: after (1 words, 1 lines)"
            assert "never typed" not in c.output(session="turns").text
        finally:
            c.close()


def test_a_console_channel_retries_with_backoff_until_closed(server, until):
    # The server is unreachable after a drop: tries 0.25 s, then twice as long each time.
    # Closing the channel stops them; the worker was never touched.
    with Proxy(server.url) as proxy:
        c = MASClient(HTTPTransport(proxy.url, server.token), LoopThread("test-proxied"))
        try:
            c.create_session("retry", terminal=True)
            out = []
            channel = c.channel(lambda k, p: out.append((k, p)), worker="terminal", session="retry")
            until(lambda: ("setup", {}) in out, what="setup")
            proxy.cut(hold=True)
            until(lambda: sum(k == "reconnecting" for k, _ in out) >= 3, what="three tries")
            delays = [p for k, p in out if k == "reconnecting"]
            assert delays[:3] == [0.25, 0.5, 1.0]
            assert not channel.closed.is_set()
            channel.close()
            assert channel.closed.is_set() and out[-1] == ("closed", None)
            tries = proxy.accepted
            proxy.restore()
            assert c.worker("terminal", session="retry").status == "running"
            assert proxy.accepted == tries + 1  # that call only: no try after the close
        finally:
            c.close()


def test_wait_ready_before_the_first_message(client, server):
    s = client.create_session("ready", agent="demo", env={"MAS_DEMO_DELAY": "0.1"})
    worker = client.wait_ready(session=s.name)
    assert worker.activity == "idle"
    # Sent once the prompt is up, the reply is only the answer (no start-up banner).
    assert client.send("clean", session="ready").text == "reply: clean (1 words, 1 lines)"
    client.send("/sleep 30", session="ready", wait=False)
    with pytest.raises(MASClientError, match="not ready within"):
        client.wait_ready(session="ready", timeout=0.5)
    client.input("\x03", session="ready")  # Ctrl-C ends the sleep
    client.wait_ready(session="ready")
    client.send("/crash", session="ready", wait=False)
    with pytest.raises(Conflict, match="exited"):
        client.wait_ready(session="ready", timeout=15)
    # Paused under it: says so, not "exited (code None)".
    client.restart(session="ready")
    client.wait_ready(session="ready")
    client.pause("ready")
    with pytest.raises(Conflict) as raised:
        client.wait_ready(session="ready", timeout=15)
    assert raised.value.message == (
        "worker 'demo' was stopped before it was ready: its session was paused"
    )


def test_env_and_persona_need_an_agent(client, server):
    with pytest.raises(ValueError, match="need agent="):
        client.create_session("x", env={"A": "1"})


def test_a_subscription_that_could_not_connect_leaves_nothing_behind(monkeypatch, until):
    # The failed subscriber's queue must not be filled later (it would fill up unread and
    # log a warning per event), and nothing goes on trying for it.
    from mas_jupyter.kernel import events

    monkeypatch.setattr(events, "CONNECT_TIMEOUT", 0.5)
    runs, real_run = [], events._Run
    monkeypatch.setattr(events, "_Run", lambda: runs.append(real_run()) or runs[-1])
    loop = LoopThread("t")
    gone = MASClient(HTTPTransport("http://127.0.0.1:9/", "x"), loop)
    try:
        with pytest.raises(ConnectionFailed, match="cannot reach"):
            gone.events()
        assert gone._feed.queues == [] and gone._feed.run is None
        # It was the only subscriber: the feed stops trying to connect.
        until(lambda: runs[0].task.done(), what="the feed to stop trying")
    finally:
        gone.close()
        loop.stop()


def test_subscribing_to_an_in_process_engine_does_not_wait_out_the_timeout(any_client, monkeypatch):
    """The in-process feed set `connected` without waking the subscriber, which then waited
    the whole connection timeout: 15 s for `%mas new`, `SessionList()`, every `events()`
    after the first (QA)."""
    import threading

    from mas_jupyter.kernel import events

    monkeypatch.setattr(events, "CONNECT_TIMEOUT", 300.0)  # what a stall would wait
    client, _ = any_client

    def subscribe_thrice():
        for _ in range(3):
            with client.events(timeout=1):
                pass

    thread = threading.Thread(target=subscribe_thrice, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "a subscription waited for the connection timeout"
