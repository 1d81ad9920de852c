"""The widgets' models follow events from a real server; the console relays a real worker."""

from __future__ import annotations

import json
import time

import pytest
from kernel_support import SHELL_ARGV, demo_idle, execute, finish, text_of

import mas_jupyter
from mas_jupyter.core import queries
from mas_jupyter.kernel.widgets import ActivityBadge, SessionList, WorkerConsole


class RecordingConsole(WorkerConsole):
    """A console whose messages to the views are recorded (there is no front end here)."""

    def send(self, content, buffers=None):
        self.__dict__.setdefault("sent", []).append(content)

    def output(self) -> str:
        return "".join(
            m.get("data", "") for m in self.__dict__.get("sent", []) if m["type"] == "stdout"
        )


def connected_console(client, session, until):
    """A recording console on a new session's terminal, once connected."""
    client.create_session(session, terminal=True)
    console = RecordingConsole("terminal", session=session, client=client)
    until(lambda: console.status == "connected", what="connected")
    return console


def drawn(panel, condition):
    """`condition()` on a fully drawn list: never in the middle of a redraw."""
    with panel.lock:
        return condition()


def shown(panel, until):
    """A wait for `condition` on the fully drawn list: seen(condition, what, **kw)."""

    def seen(condition, what, **kw):
        until(lambda: drawn(panel, condition), what=what, **kw)

    return seen


@pytest.fixture
def panel(client):
    widget = SessionList(client=client)
    yield widget
    widget.close()


def test_session_list_follows_events(client, panel, until):
    seen = shown(panel, until)
    assert panel.sessions == {} and "no sessions yet" in panel.body.children[0].value
    client.create_session("a1", agent="demo", task="T-9")
    client.create_session("a2", agent="demo", task="T-9")
    client.create_session("solo", terminal=True)
    seen(lambda: len(panel.sessions) == 3, what="three sessions in the list")
    seen(lambda: "2 sessions" in panel.group_headers["T-9"].value, what="the task group")
    a1 = client.session("a1").id
    seen(lambda: "idle" in panel.rows[a1].info.value, what="a1 idle")
    with panel.lock:
        assert "no task" in panel.group_headers[""].value
        assert "3 sessions · 3 workers" in panel.header.value

    client.send("/ask", session="a1")  # the demo agent asks a yes/no question and waits
    seen(lambda: "data-waiting='true'" in panel.rows[a1].info.value, what="a1 waiting")
    with panel.lock:
        assert "1 waiting" in panel.group_headers["T-9"].value
        assert "1 waiting for you" in panel.header.value
    client.input("y\r", session="a1")
    seen(lambda: "data-waiting='false'" in panel.rows[a1].info.value, what="a1 answered")

    client.send("/sleep 1", session="a2", wait=False)
    a2 = client.session("a2").id
    seen(lambda: "busy" in panel.rows[a2].info.value, what="a2 busy")
    seen(lambda: "idle" in panel.rows[a2].info.value, what="a2 idle again", timeout=20)

    client.delete("solo", purge=True)
    seen(lambda: len(panel.sessions) == 2, what="solo gone")
    with panel.lock:
        assert "" not in panel.group_headers or "solo" not in panel.text()


def test_session_list_buttons(client, panel, until):
    seen = shown(panel, until)
    client.create_session("b", agent="demo")
    seen(lambda: len(panel.sessions) == 1, what="the session")
    sid = client.session("b").id
    row = panel.rows[sid]
    demo_idle(client, "b")
    row.buttons["pause"].click()
    seen(lambda: panel.sessions[sid]["status"] == "paused", what="paused")
    with panel.lock:
        assert row.buttons["pause"].disabled and not row.buttons["resume"].disabled
    row.buttons["resume"].click()
    seen(lambda: panel.sessions[sid]["status"] == "active", what="resumed")
    demo_idle(client, "b")
    client.send("/sleep 30", session="b", wait=False)
    seen(lambda: "busy" in row.info.value, what="busy")
    row.buttons["stop"].click()
    assert "was not stopped" in panel.message.value and "--force" in panel.message.value
    seen(lambda: not row.buttons["console"].disabled, what="a running worker")
    row.buttons["console"].click()
    close, console = panel.console_box.children
    assert isinstance(console, WorkerConsole) and console.title.startswith("demo")
    close.click()
    assert panel.console_box.children == ()


def test_session_list_rereads_after_a_reconnection(client, panel, until):
    before = panel.updates
    client._feed.drop_connection()
    until(lambda: panel.updates > before, what="a reload after reconnecting")
    client.create_session("after")
    until(
        lambda: drawn(panel, lambda: any(s["name"] == "after" for s in panel.sessions.values())),
        what="new event",
    )


def test_activity_badge(client, until):
    client.create_session("badge", agent="demo", persona="qa")
    demo_idle(client, "badge")
    badge = ActivityBadge("demo", session="badge", client=client)
    try:
        # The persona's first message may keep it busy a moment longer.
        until(lambda: badge.state == "idle" and "idle" in badge.value, what="idle", timeout=20)
        assert "demo" in badge.value
        assert badge.data.get("persona_icon")  # the persona's icon is shown
        client.send("/sleep 1", session="badge", wait=False)
        until(lambda: badge.state == "busy" and "busy" in badge.value, what="busy shown")
        until(lambda: badge.state == "idle", what="idle", timeout=20)
        client.pause("badge")
        until(lambda: badge.state == "exited", what="exited on pause")
    finally:
        badge.close()


def test_console_relays_a_worker(client, until):
    console = connected_console(client, "c", until)
    try:
        console._from_view(console, {"type": "stdin", "data": "echo relay-$((3*3))\r"}, [])
        until(lambda: "relay-9" in console.output(), what="the echo")
        # Keystrokes the kernel handled out of order are written in the view's order.
        for seq, data in ((1, "cho ord"), (2, "er-ok\r"), (0, "e")):
            console._from_view(
                console, {"type": "stdin", "data": data, "view": "v", "seq": seq}, []
            )
        until(lambda: "order-ok" in console.output(), what="the keystrokes in order")
        console._from_view(console, {"type": "stdin", "data": "printf 'q\\033[6n-%s\\n' x\r"}, [])
        until(lambda: "q\x1b[6n-x" in console.output(), what="a query, live")
        console._from_view(console, {"type": "hello"}, [])  # a new view: it gets the replay
        replay = [m for m in console.sent if m["type"] == "replay"][-1]
        assert "relay-9" in replay["data"]
        assert "q-x" in replay["data"]  # not asked again: its answer would be typed
        console._from_view(console, {"type": "resize", "cols": 88, "rows": 20}, [])
        until(lambda: client.worker("terminal", session="c").cols == 88, what="the resize")
        console._from_view(console, {"type": "stdin", "data": "exit\r"}, [])
        until(lambda: console.status == "exited (0)", what="the exit")
        assert console.activity == "exited"
    finally:
        console.close()


def test_a_console_shown_twice_answers_a_query_once(client, until, monkeypatch):
    """Both views of a widget shown in two places answer a query they show; the program read
    the second answer as typed input."""
    monkeypatch.setattr(queries, "ANSWER_SECONDS", 60.0)  # however slow the machine is
    console = connected_console(client, "q2", until)
    try:
        program = (
            'printf \'ask\\033[c\'; read -rs -d c x; echo "1<$x>"; read -rs -d c y; echo "2<$y>"'
        )
        console.write(program + "\r")
        until(lambda: "ask\x1b[c" in console.output(), what="the query, live")

        def view(name, seq, data):
            message = {"type": "stdin", "data": data, "view": name, "seq": seq}
            console._from_view(console, message, [])

        view("v1", 0, "\x1b[?1;2c")
        until(lambda: "1<\x1b[?1;2>" in console.output(), what="the answer read")
        view("v2", 0, "\x1b[?1;2c")  # the other view's answer: dropped
        view("v2", 1, "typed-c")  # what it types still goes through
        until(lambda: "\n2<" in console.output(), what="the second read")
        assert "2<typed->" in console.output()
    finally:
        console.close()


def test_console_reconnects_after_a_dropped_connection(client, until):
    console = connected_console(client, "rc", until)
    try:
        console.write("echo before-$((6*7))\r")
        until(lambda: "before-42" in console.output(), what="the first echo")
        first = console.channel._ws
        resets = sum(m["type"] == "reset" for m in console.sent)
        statuses = []
        console.observe(lambda change: statuses.append(change["new"]), names="status")
        client._loop.call_soon(first.close)  # the connection drops; the worker runs on
        until(lambda: console.channel._ws is not first and console.status == "connected",
              what="reconnected")  # fmt: skip
        until(lambda: sum(m["type"] == "reset" for m in console.sent) > resets, what="replay")
        until(lambda: "before-42" in console.buffer, what="the history replayed")
        assert statuses[:2] == ["reconnecting", "connected"]  # the bar said so meanwhile
        console.write("echo after-$((6*8))\r")
        until(lambda: "after-48" in console.output(), what="typing after the reconnect")
    finally:
        console.close()
    assert console.channel.closed.is_set() and console.status == "closed"


@pytest.fixture(params=["server", "in-process"])
def any_client(request, tmp_path):
    """The server's client, or an engine in this process (its consoles are attached directly)."""
    if request.param == "server":
        yield request.getfixturevalue("client")
        return
    config = {"backends": {"shell": {"argv": SHELL_ARGV}}, "tmux_socket": str(tmp_path / "t")}
    local = mas_jupyter.connect(local=True, root_dir=str(tmp_path), config=config)
    yield local
    local.close()


def test_a_console_waiting_for_a_restart_ends_quietly_with_its_client(server, until, monkeypatch):
    """A console follows its exited worker from a thread of its own; closing the client then
    cancelled that thread's call (or met a closed loop), and the thread printed a traceback
    (`CancelledError` in mas-console-follow) into whatever cell ran next."""
    from mas_jupyter.kernel import MASClient
    from mas_jupyter.kernel.loop import LoopThread
    from mas_jupyter.kernel.transport import HTTPTransport

    failures = []
    monkeypatch.setattr("threading.excepthook", failures.append)
    client = MASClient(HTTPTransport(server.url, server.token), LoopThread("closing-client"))
    console = connected_console(client, "closing", until)
    console.write("exit\r")
    until(lambda: console._following is not None, what="waiting for a restart")
    client.close()
    client._loop.stop()
    console._check()  # what its event feed's next connection (or a retry) would do now
    console._follow()
    assert failures == []
    console.close()


def test_console_follows_its_worker_through_restarts(any_client, until):
    client = any_client
    console = connected_console(client, "fr", until)
    statuses = []
    console.observe(lambda change: statuses.append(change["new"]), names="status")
    try:
        console.write("exit\r")
        until(lambda: console.status == "exited (0)", what="the exit")
        until(lambda: console._following is not None, what="waiting for a restart")
        first = console.channel
        client.restart("terminal", session="fr")  # the worker had exited: it starts again
        until(lambda: console.channel is not first and console.status == "connected",
              what="connected to the restarted worker")  # fmt: skip
        console.write("echo back-$((5*5))\r")
        until(lambda: "back-25" in console.output(), what="typing into the new process")
        second = console.channel
        client.restart("terminal", session="fr")  # while it runs: exit, then a new process
        until(lambda: console.channel is not second and console.status == "connected",
              what="connected after a restart of a running worker")  # fmt: skip
        console.write("echo again-$((5*6))\r")
        until(lambda: "again-30" in console.output(), what="typing after the second restart")
        # Exited by `exit`, then by the restart; nothing else in between (no "disconnected").
        assert statuses[:3] == ["exited (0)", "connecting", "connected"], statuses
        # A restart's end says so (before: "exited (-1)", as for a crash).
        assert statuses[3:] == ["restarted", "connecting", "connected"], statuses
        third = console.channel
        client.pause("fr")  # its processes stop: the console waits for the resume
        until(lambda: console._following is not None, what="waiting while paused")
        client.resume("fr")
        until(lambda: console.channel is not third and console.status == "connected",
              what="connected after the resume")  # fmt: skip
        console.write("echo resumed-$((5*7))\r")
        until(lambda: "resumed-35" in console.output(), what="typing after the resume")
    finally:
        console.close()
    assert console._following is None and console.status == "closed"


def test_console_waits_again_when_the_server_cannot_be_reached_as_it_reconnects(
    client, until, monkeypatch
):
    from mas_jupyter.kernel.errors import ConnectionFailed

    console = connected_console(client, "fu", until)
    statuses = []
    console.observe(lambda change: statuses.append(change["new"]), names="status")
    try:
        console.write("exit\r")
        until(lambda: console._following is not None, what="waiting for a restart")
        real, refused = client._transport.websocket, []

        async def unreachable_once(path):  # the server goes away just as the worker runs
            if path.endswith("/channel") and not refused:
                refused.append(path)
                raise ConnectionFailed("cannot reach the server (test)")
            return await real(path)

        monkeypatch.setattr(client._transport, "websocket", unreachable_once)
        first = console.channel
        client.restart("terminal", session="fu")
        until(lambda: console.channel is not first and console.status == "connected",
              what="connected once the server answers again")  # fmt: skip
        assert refused and "reconnecting" in statuses, statuses
        assert not any(s.startswith("closed") for s in statuses), statuses
        console.write("echo back-$((6*7))\r")
        until(lambda: "back-42" in console.output(), what="typing into the restarted worker")
    finally:
        console.close()


def test_console_of_an_exited_worker_closes_when_it_is_deleted(client, until):
    console = connected_console(client, "fd", until)
    try:
        console.write("exit\r")
        until(lambda: console._following is not None, what="waiting for a restart")
        client.delete_worker("terminal", session="fd")
        until(lambda: console.status == "closed (the worker no longer exists)",
              what="the console says the worker is gone")  # fmt: skip
        assert console._following is None
    finally:
        console.close()


def test_console_closed_while_waiting_for_a_restart_stays_closed(client, until):
    console = connected_console(client, "fc", until)
    console.write("exit\r")
    until(lambda: console._following is not None, what="waiting for a restart")
    first = console.channel
    console.close()
    assert console._following is None and console.status == "closed"
    with client.events() as events:
        client.restart("terminal", session="fc")
        assert events.wait_for(lambda e: e["type"] == "session-updated", 10) is not None
    assert console.channel is first and console.status == "closed"


def _comm_messages(kc, predicate, timeout=30.0):
    """iopub messages until one matches predicate (returned last); bounded."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no matching message; last: {[m['msg_type'] for m in seen[-10:]]}"
        msg = kc.get_iopub_msg(timeout=left)
        seen.append(msg)
        if predicate(msg):
            return seen


def _custom(msg, comm_id):
    content = msg["content"]
    if msg["msg_type"] != "comm_msg" or content.get("comm_id") != comm_id:
        return None
    data = content.get("data") or {}
    return data.get("content") if data.get("method") == "custom" else None


def test_console_in_a_real_kernel(server_env, monkeypatch, kernel, client):
    client.create_session("k", terminal=True)
    code = (
        f"import mas_jupyter\n"
        f"c = mas_jupyter.connect({server_env.url!r}, {server_env.token!r})\n"
        "from mas_jupyter.kernel.widgets import WorkerConsole\n"
        "w = WorkerConsole('terminal', session='k')\n"
        "print(w.model_id)\n"
        "display(w)\n"
    )
    status, messages = execute(kernel, code)
    assert status == "ok", text_of(messages)
    model_id = text_of(messages).split()[0]
    shown = [m for m in messages if m["msg_type"] == "display_data"]
    view = shown[0]["content"]["data"]["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == model_id

    def to_kernel(content):
        msg = kernel.session.msg(
            "comm_msg", {"comm_id": model_id, "data": {"method": "custom", "content": content}}
        )
        kernel.shell_channel.send(msg)

    to_kernel({"type": "hello"})
    _comm_messages(kernel, lambda m: (_custom(m, model_id) or {}).get("type") == "replay")
    to_kernel({"type": "stdin", "data": "echo kernel-$((5*5))\r"})
    _comm_messages(
        kernel,
        lambda m: "kernel-25" in json.dumps(_custom(m, model_id) or {}),
    )
    to_kernel({"type": "resize", "cols": 77, "rows": 22})
    deadline = time.monotonic() + 15
    while client.worker("terminal", session="k").cols != 77:
        assert time.monotonic() < deadline, "the resize did not reach the worker"
        time.sleep(0.02)
    status, messages = execute(kernel, "w.close(); c.close()")
    assert status == "ok", text_of(messages)


def _plain(widget) -> str:
    """The text/plain a front end gets for the widget (anywidget's bundle is a pair)."""
    bundle = widget._repr_mimebundle_()
    return (bundle[0] if isinstance(bundle, tuple) else bundle)["text/plain"]


def test_the_widgets_text_says_what_they_show(client, until):
    """Where widgets do not render (a terminal, nbconvert to text, a front end without
    ipywidgets), a badge showed its HTML (`ActivityBadge(value='<span class=...')`) and a
    console `<...WorkerConsole object at 0x...>`: both say the worker and its state."""
    client.create_session("texts", agent="demo", persona="qa")
    demo_idle(client, "texts")
    badge = ActivityBadge("demo", session="texts", client=client)
    console = RecordingConsole("demo", session="texts", client=client)
    try:
        until(lambda: badge.state == "idle", what="idle", timeout=20)
        icon = badge.data["persona_icon"]
        assert repr(badge) == f"<ActivityBadge {icon} demo idle>"
        assert _plain(badge) == repr(badge)
        until(lambda: console.status == "connected", what="connected")
        until(lambda: console.activity == "idle", what="idle shown", timeout=20)
        assert repr(console) == "<WorkerConsole demo · demo: connected, idle>"
        assert _plain(console) == repr(console)
        console.close()
        assert repr(console) == "<WorkerConsole demo · demo: closed>"
        client.pause("texts")
        until(lambda: badge.state == "exited", what="exited on pause")
        assert repr(badge) == f"<ActivityBadge {icon} demo exited>"
    finally:
        badge.close()
        console.close()


def _run_cell(kernel, code: str, cell: str) -> tuple[str, list[dict]]:
    """Run code as the front end runs cell `cell` (JupyterLab names it in the metadata)."""
    msg = kernel.session.msg(
        "execute_request",
        {"code": code, "silent": False, "store_history": True, "user_expressions": {},
         "allow_stdin": False, "stop_on_error": True},
        metadata={"cellId": cell},
    )  # fmt: skip
    kernel.shell_channel.send(msg)
    return finish(kernel, msg["header"]["msg_id"])


def test_a_cell_run_again_closes_the_widgets_its_last_run_made(server_env, kernel, client):
    """Each run of a `%mas sessions` cell left a live list behind (the front end had replaced
    its view): its event thread, updating a view nobody sees, for as long as the kernel ran."""
    client.create_session("cells")
    connect = f"mas_jupyter.connect({server_env.url!r}, {server_env.token!r})"
    setup = f"import mas_jupyter, threading\n{connect}\n%load_ext mas_jupyter"
    assert _run_cell(kernel, setup, "setup")[0] == "ok"
    threads = "print(sum(t.name == 'mas-events' for t in threading.enumerate()))"

    def following() -> int:
        status, messages = _run_cell(kernel, threads, "count")
        assert status == "ok", text_of(messages)
        return int(text_of(messages).split()[-1])

    def shown_models(messages: list[dict]) -> list[str]:
        key = "application/vnd.jupyter.widget-view+json"
        return [
            m["content"]["data"][key]["model_id"]
            for m in messages
            if m["msg_type"] == "display_data" and key in m["content"]["data"]
        ]

    status, first = _run_cell(kernel, "%mas sessions", "list")
    assert status == "ok", text_of(first)
    assert following() == 1
    closed = []
    for _ in range(3):
        status, again = _run_cell(kernel, "%mas sessions", "list")
        assert status == "ok", text_of(again)
        closed += [m["content"]["comm_id"] for m in again if m["msg_type"] == "comm_close"]
    assert following() == 1  # was 4
    assert shown_models(first)[0] in closed  # the front end is told the widget is gone
    # Another cell's list stays, and so do two lists made by one run.
    two = (
        "from mas_jupyter.kernel.widgets import SessionList\ndisplay(SessionList(), SessionList())"
    )
    assert _run_cell(kernel, two, "two")[0] == "ok"
    assert following() == 3
    assert _run_cell(kernel, "1 + 1", "list")[0] == "ok"  # made no widget: closes nothing
    assert following() == 3


@pytest.mark.parametrize("widget", ["list", "badge"])
def test_a_widget_says_at_once_that_the_server_cannot_be_reached(monkeypatch, widget):
    """With the server down, `%mas sessions` waited out the event stream's 15 s connect
    timeout (retrying meanwhile) and then said nothing of what to do."""
    import threading

    from mas_jupyter.kernel import MASClient, events
    from mas_jupyter.kernel.errors import ConnectionFailed
    from mas_jupyter.kernel.loop import LoopThread
    from mas_jupyter.kernel.records import Worker
    from mas_jupyter.kernel.transport import HTTPTransport

    monkeypatch.setattr(events, "CONNECT_TIMEOUT", 600.0)  # only a failed attempt ends it
    down = MASClient(HTTPTransport("http://127.0.0.1:1/", "tok"), LoopThread("down"))
    outcome: list[BaseException] = []

    def make() -> None:
        try:
            if widget == "list":
                SessionList(client=down)
            else:
                record = Worker(down, {"id": "w" * 36, "session_id": "s" * 36, "name": "w"})
                ActivityBadge(record, client=down)
        except BaseException as e:  # what the user sees
            outcome.append(e)

    thread = threading.Thread(target=make, daemon=True)
    thread.start()
    thread.join(30)
    try:
        assert not thread.is_alive(), "still waiting for the event stream"
        [error] = outcome
        assert isinstance(error, ConnectionFailed) and "is it running?" in error.message, error
    finally:
        down.close()
        down._loop.stop()
