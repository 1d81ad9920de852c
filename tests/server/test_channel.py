"""The worker console WebSocket: terminado's protocol, replay, fan-out, slow clients, limits."""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest

from mas_jupyter.core import queries


class Console:
    """A test client of a worker's channel that collects what it receives."""

    def __init__(self, ws):
        self.ws = ws
        self.messages: list = []

    @property
    def text(self) -> str:
        return "".join(m[1] for m in self.messages if m[0] == "stdout")

    async def read(self, timeout: float = 15.0):
        msg = await asyncio.wait_for(self.ws.read_message(), timeout)
        if msg is None:
            return None
        parsed = json.loads(msg)
        self.messages.append(parsed)
        return parsed

    async def read_until(self, predicate, timeout: float = 15.0, what: str = "a message"):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            left = deadline - loop.time()
            assert left > 0, f"timed out waiting for {what}; got {self.messages[-3:]}"
            msg = await self.read(left)
            assert msg is not None or predicate(self), f"closed before {what}"
            if msg is None:
                break

    async def send(self, *msg):
        await self.ws.write_message(json.dumps(list(msg)))

    async def closed(self, timeout: float = 15.0) -> int | None:
        """Read to the end; the close code."""
        while await self.read(timeout) is not None:
            pass
        return self.ws.close_code


@pytest.fixture
def console(jp_ws_fetch):
    opened = []

    async def connect(sid="s", wid="sh") -> Console:
        ws = await jp_ws_fetch("api", "mas", "sessions", sid, "workers", wid, "channel")
        c = Console(ws)
        opened.append(c)
        assert await c.read() == ["setup", {}]
        return c

    yield connect
    for c in opened:
        c.ws.close()


async def test_round_trip_with_a_real_shell(shell_session, console):
    await shell_session()
    c = await console()
    await c.send("stdin", "echo hi-$((6*7))\r")
    await c.read_until(lambda c: "hi-42\r\n" in c.text, what="the echo")


async def test_reconnect_replays_recent_output_first(shell_session, console, api, until):
    await shell_session()
    first = await console()
    await first.send("stdin", "echo before-$((1+1))\r")
    await first.read_until(lambda c: "before-2\r\n" in c.text, what="output")
    first.ws.close()
    second = await console()
    await second.read()  # the replay comes first, in one message
    assert second.messages[1][0] == "stdout" and "before-2\r\n" in second.messages[1][1]
    await second.send("stdin", "echo after-$((2+2))\r")
    await second.read_until(lambda c: "after-4\r\n" in c.text, what="live output")
    assert second.text.count("before-2\r\n") == 1  # no gap, no duplicate


async def test_a_replay_asks_the_terminal_nothing(shell_session, console, api, until):
    """The queries a program made long ago were replayed to every new console, whose
    terminal (xterm.js, the CLI's) answered them into the worker: `1;2c` after the next
    prompt, `\x1b[>0;276;0c` at the start of an agent's next message."""
    await shell_session()
    live = await console()
    queries = r"\033[c\033[>c\033[6n\033[>q\033]11;?\007\033[?2004$p"
    await live.send("stdin", f"printf 'asked-%s{queries}-done\\n' $((6*7))\r")
    await live.read_until(lambda c: "asked-42" in c.text and "-done" in c.text, what="output")
    assert "\x1b[c\x1b[>c\x1b[6n" in live.text  # live, the program waits for the answers
    replayed = await console()
    await replayed.read()
    replay = replayed.messages[1][1]
    assert "asked-42-done" in replay, replay  # the text around them stays
    for query in ("\x1b[c", "\x1b[>c", "\x1b[6n", "\x1b[>q", "\x1b]11;?", "\x1b[?2004$p"):
        assert query not in replay, (query, replay)
    await api("POST", "sessions", "s", "workers", "sh", "input", body={"data": "exit\r"})

    async def exited():
        return (await api("GET", "sessions", "s", "workers", "sh"))[1]["status"] == "exited"

    await until(exited, what="the exit")
    ended = await console()  # an exited worker's console replays its output, the same way
    while len(ended.messages) < 2 or ended.messages[-1][0] == "stdout":
        if await ended.read() is None:
            break
    shown = "".join(m[1] for m in ended.messages if m[0] == "stdout")
    assert "asked-42-done" in shown and "\x1b[6n" not in shown, shown


async def test_one_console_answers_a_live_query(shell_session, console, monkeypatch):
    """Every open console's terminal answers a query it shows: with two tabs, the program
    read two answers, the second as typed input. The first to answer now answers alone."""
    monkeypatch.setattr(queries, "ANSWER_SECONDS", 60.0)  # however slow the machine is
    await shell_session()
    a, b = await console(), await console()
    program = 'printf \'ask\\033[c\'; read -rs -d c x; echo "1<$x>"; read -rs -d c y; echo "2<$y>"'
    await a.send("stdin", program + "\r")
    for c in (a, b):
        await c.read_until(lambda c: "ask\x1b[c" in c.text, what="the query, live")
    await b.send("stdin", "\x1b[?1;2c")  # b answers first
    await a.read_until(lambda c: "1<\x1b[?1;2>" in c.text, what="the answer read")
    await a.send("stdin", "\x1b[?1;2c")  # a's answer is the second one: dropped
    await a.send("stdin", "typed-c")  # what a types still goes through, after it
    await a.read_until(lambda c: "\n2<" in c.text, what="the second read")
    assert "2<typed->" in a.text, a.text[-200:]


async def test_two_clients_on_one_worker_see_the_same_stream(shell_session, console):
    await shell_session()
    a, b = await console(), await console()
    await a.send("stdin", "echo from-a-$((3*3))\r")
    await b.read_until(lambda c: "from-a-9\r\n" in c.text, what="a's command on b")
    await b.send("stdin", "echo from-b-$((4*4))\r")
    await a.read_until(lambda c: "from-b-16\r\n" in c.text, what="b's command on a")


async def test_set_size_resizes_the_terminal(shell_session, console, api, until):
    await shell_session()
    c = await console()
    await c.send("set_size", 33, 111, 600, 800)  # JupyterLab adds pixel sizes

    async def resized():
        w = (await api("GET", "sessions", "s", "workers", "sh"))[1]
        return (w["cols"], w["rows"]) == (111, 33)

    await until(resized, what="the new size")
    await c.send("stdin", "stty size\r")
    await c.read_until(lambda c: "33 111" in c.text, what="stty size")
    # A view smaller or larger than a terminal may be gets the nearest size; before, the
    # worker kept its old size (a small panel showed the top of a taller terminal).
    await c.send("set_size", 0, 0)  # a hidden view: nothing changes
    await c.send("set_size", 3, 8)
    await c.send("stdin", "stty size\r")
    await c.read_until(lambda c: "\r5 10\r\n" in c.text, what="the smallest size")
    await c.send("set_size", 9999, 99999)
    await c.send("stdin", "stty size\r")
    await c.read_until(lambda c: "\r500 1000\r\n" in c.text, what="the largest size")


async def test_activity_and_exit_messages_with_the_demo_agent(demo_session, console):
    await demo_session()
    c = await console("s", "bot")
    await c.send("stdin", "/sleep 1\r")
    await c.read_until(lambda c: ["activity", "busy"] in c.messages, what="busy")
    await c.read_until(
        lambda c: (
            c.messages.index(["activity", "busy"]) < len(c.messages) - 1
            and ["activity", "idle"] in c.messages[c.messages.index(["activity", "busy"]) :]
        ),
        what="idle after busy",
    )
    await c.send("stdin", "/crash\r")
    await c.read_until(lambda c: c.messages[-1][0] == "exit", what="exit")
    assert c.messages[-1] == ["exit", 3, "crashed"]
    assert "Traceback" in c.text  # the crash's output came before its exit
    assert await c.closed() == 1000
    assert c.ws.close_reason == "worker exited: crashed"


async def test_a_console_is_told_the_activity_when_it_connects(demo_session, console, api, until):
    """Activity came only when it changed: a console opened on an agent waiting for its
    user showed `unknown` (no amber tab) until the agent next did something."""
    await demo_session()
    await api("POST", "sessions", "s", "workers", "bot", "input", body={"data": "/ask\r"})

    async def waiting():
        return (await api("GET", "sessions", "s", "workers", "bot"))[1]["activity"] == "waiting"

    await until(waiting, what="the question")
    c = await console("s", "bot")
    await c.read_until(lambda c: ["activity", "waiting"] in c.messages, what="the activity")
    assert [m[0] for m in c.messages[:3]] == ["setup", "stdout", "activity"], c.messages[:3]


async def test_exited_worker_console_shows_its_output_then_exit(demo_session, console, api, until):
    await demo_session()
    await api("POST", "sessions", "s", "workers", "bot", "input", body={"data": "/exit\r"})

    async def exited():
        return (await api("GET", "sessions", "s", "workers", "bot"))[1]["status"] == "exited"

    await until(exited, what="exit")
    c = await console("s", "bot")
    await c.read_until(lambda c: c.messages[-1][0] == "exit", what="exit")
    assert c.messages[-1] == ["exit", 0, "exited"]
    assert await c.closed() == 1000
    assert c.ws.close_reason == "worker exited"


async def test_a_late_console_is_told_the_signal_that_ended_the_worker(
    shell_session, console, api, until
):
    await shell_session()
    await api("POST", "sessions", "s", "workers", "sh", "input", body={"data": "kill -9 $$\r"})

    async def exited():
        return (await api("GET", "sessions", "s", "workers", "sh"))[1]["status"] == "exited"

    await until(exited, what="exit")
    c = await console()
    await c.read_until(lambda c: c.messages[-1][0] == "exit", what="exit")
    assert c.messages[-1] == ["exit", -9, "crashed"]  # as live consoles were told; before, null


async def test_a_console_opened_after_a_pause_shows_what_the_worker_printed(
    shell_session, console, api, until
):
    await shell_session()
    await api("POST", "sessions", "s", "workers", "sh", "input", body={"data": "echo a$((6*7))b\r"})

    async def printed():
        return "a42b" in (await api("GET", "sessions", "s", "workers", "sh", "output"))[1]["data"]

    await until(printed, what="the output")
    assert (await api("POST", "sessions", "s", "pause"))[0] == 200
    # Before, the paused worker's recent output was dropped with it: "" and no replay.
    _, out = await api("GET", "sessions", "s", "workers", "sh", "output")
    assert "a42b" in out["data"]
    c = await console()
    await c.read_until(lambda c: c.messages[-1][0] == "exit", what="exit")
    assert "a42b" in c.text
    assert c.messages[-1] == ["exit", -1, "paused"]  # a pause ends the shell with SIGHUP
    assert await c.closed() == 1000
    assert c.ws.close_reason == "worker exited: paused"  # not a crash: resume to go on
    # Started again, it is a new process: its console shows the new process's output.
    assert (await api("POST", "sessions", "s", "resume"))[0] == 200
    fresh = await console()
    await fresh.send("stdin", "echo c$((6*8))d\r")
    await fresh.read_until(lambda c: "c48d" in c.text, what="the new shell's output")
    assert "a42b" not in fresh.text


async def test_a_console_is_told_its_worker_was_restarted_and_can_follow_it(
    shell_session, console, api
):
    await shell_session()
    c = await console()
    await c.send("stdin", "echo old-$((6*7))\r")
    await c.read_until(lambda c: "old-42" in c.text, what="the old shell's output")
    status, worker = await api("POST", "sessions", "s", "workers", "sh", "restart")
    assert status == 200 and worker["status"] == "running"
    await c.read_until(lambda c: c.messages[-1][0] == "exit", what="exit")
    assert c.messages[-1] == ["exit", -1, "restarted"]  # SIGHUP, for a restart:
    assert await c.closed() == 1000
    assert c.ws.close_reason == "worker exited: restarted"  # not a crash
    again = await console()  # so the client connects again, to the new process
    await again.send("stdin", "echo new-$((6*8))\r")
    await again.read_until(lambda c: "new-48" in c.text, what="the new shell's output")


async def test_a_console_opened_while_its_worker_is_being_killed_for_a_delete_is_told_it_is_gone(
    shell_session, console, mas_app, held_stops
):
    # Between a delete's start and its process's end, the worker is still listed "running"
    # but no longer attachable: before, such a console was told ["exit", null] and 1000.
    await shell_session()
    entered, release = held_stops
    deleting = asyncio.ensure_future(mas_app.manager.delete_worker("s", "sh"))
    try:
        await asyncio.wait_for(entered.wait(), 15)
        c = await console()
        await c.read_until(lambda c: len(c.messages) > 1, what="the end")
        assert c.messages == [["setup", {}], ["disconnect", 1]]
        assert await c.closed() == 4004
    finally:
        release.set()
        await asyncio.wait_for(deleting, 15)


@pytest.fixture
def small_ring(mas_config):
    mas_config["MASManager"] = {"output_buffer_bytes": 4096}


async def test_recent_output_never_starts_with_half_a_character(
    small_ring, shell_session, api, until
):
    await shell_session()
    # 3-byte characters through a 4096-byte ring: one of three paddings cuts one in two.
    for pad in ("", "x", "xx"):
        command = f"printf '\\342\\202\\254%.0s' $(seq 1 2000); echo {pad}end{len(pad)}\r"
        await api("POST", "sessions", "s", "workers", "sh", "input", body={"data": command})

        async def printed(pad=pad):
            # The output's marker follows the last character; the command's echo has it too,
            # after "echo ", and waiting for that read the ring while the output streamed.
            _, out = await api("GET", "sessions", "s", "workers", "sh", "output")
            return f"\u20ac{pad}end{len(pad)}" in out["data"]

        await until(printed, what="the output")
        _, out = await api("GET", "sessions", "s", "workers", "sh", "output")
        assert out["data"][0] == "\u20ac" and "\ufffd" not in out["data"], out["data"][:20]
        assert out["end"] - out["start"] == len(out["data"].encode())


async def test_deleting_the_worker_disconnects_its_consoles(shell_session, console, api):
    await shell_session()
    c = await console()
    other = await console()
    assert (await api("DELETE", "sessions", "s", "workers", "sh"))[0] == 204
    # Told it is gone, not that it exited (before: ["exit", -1] and 1000, as for a crash).
    for each in (c, other):
        await each.read_until(lambda c: c.messages[-1][0] in ("exit", "disconnect"), what="end")
        assert each.messages[-1] == ["disconnect", 1]
        assert await each.closed() == 4004


async def test_a_console_opened_as_its_worker_is_deleted_is_told_it_is_gone(
    shell_session, jp_ws_fetch, mas_app, monkeypatch
):
    # The worker is found before the upgrade and deleted before the console opens: before,
    # the console was told ["exit", null] and 1000, as if the worker had exited.
    from tornado.websocket import WebSocketHandler

    await shell_session()
    upgrade = WebSocketHandler.get

    async def delete_then_upgrade(self, *args, **kwargs):
        await mas_app.manager.delete_worker("s", "sh")
        return await upgrade(self, *args, **kwargs)

    monkeypatch.setattr(WebSocketHandler, "get", delete_then_upgrade)
    c = Console(await jp_ws_fetch("api", "mas", "sessions", "s", "workers", "sh", "channel"))
    await c.read_until(lambda c: c.messages[-1:] and c.messages[-1][0] != "setup", what="end")
    assert c.messages == [["setup", {}], ["disconnect", 1]]
    assert await c.closed() == 4004


async def test_deleting_the_session_disconnects_its_consoles(shell_session, console, api):
    await shell_session()
    c = await console()
    assert (await api("DELETE", "sessions", "s"))[0] == 204
    await c.read_until(lambda c: c.messages[-1][0] in ("exit", "disconnect"), what="the end")
    assert c.messages[-1] == ["disconnect", 1]
    assert await c.closed() == 4004


@pytest.fixture
def small_limits(mas_config):
    mas_config["MASManager"] = {"max_input_bytes": 1000}


async def test_oversized_input_closes_the_console(small_limits, shell_session, console):
    await shell_session()
    c = await console()
    await c.send("stdin", "x" * 2000)  # over max_input_bytes, under the frame limit
    assert await c.closed() == 1009
    c = await console()
    await c.ws.write_message(json.dumps(["stdin", "y" * 20_000]))  # over the frame limit
    assert await c.closed() == 1009


@pytest.mark.parametrize(
    "raw", ["not json", '{"stdin": "x"}', "[]", '["stdin"]', '["stdin", 5]', '["set_size", "a", 2]']
)
async def test_malformed_messages_close_the_console(shell_session, console, raw):
    await shell_session()
    c = await console()
    await c.ws.write_message(raw)
    assert await c.closed() == 1003


async def test_unknown_message_types_are_ignored(shell_session, console):
    await shell_session()
    c = await console()
    await c.send("ping", 1)
    await c.send("stdin", "echo still-$((5*5))\r")
    await c.read_until(lambda c: "still-25\r\n" in c.text, what="output after an unknown message")


@pytest.fixture
def stall_limits(mas_config):
    mas_config["MASManager"] = {"output_buffer_bytes": 64 * 1024}
    mas_config["MASExtensionApp"] = {"client_queue_chars": 128 * 1024, "client_stall_seconds": 2}


async def test_a_stalled_client_is_dropped_while_another_keeps_receiving(
    stall_limits, shell_session, console, mas_app
):
    session, _ = await shell_session()
    stop = pathlib.Path(session["workspace"], "stop-flood")
    stalled = await console()  # never reads again: its TCP buffers fill, then its queue
    reader = await console()
    received, tail = 0, ""

    async def pump():
        # Read one message without keeping it (the stream is large).
        nonlocal received, tail
        raw = await asyncio.wait_for(reader.ws.read_message(), 30)
        assert raw is not None, f"the reader was closed: {reader.ws.close_code}"
        kind, data = json.loads(raw)[:2]
        if kind == "stdout":
            received += len(data)
            tail = (tail + data)[-400:]

    # Print without end until the stalled client is dropped; the reader keeps reading. The
    # flood ends when a file appears (a ^C to the loop races with bash between iterations).
    await reader.send(
        "stdin",
        "while [ ! -e stop-flood ]; do yes x | head -c 1000000; done; echo flood-$((7*6))-done\r",
    )
    deadline = asyncio.get_running_loop().time() + 60
    while len(mas_app.sockets) > 1:
        assert asyncio.get_running_loop().time() < deadline, "the stalled client was kept"
        await pump()
    assert received > 100_000  # it may have skipped ahead when it fell behind, never stopped
    [kept] = mas_app.sockets
    assert kept.queue.chars <= kept.queue.max_chars
    stop.touch()
    deadline = asyncio.get_running_loop().time() + 60
    while "flood-42-done" not in tail:
        assert asyncio.get_running_loop().time() < deadline, f"the flood went on: {tail[-80:]!r}"
        await pump()
    assert reader.ws.close_code is None
    stalled.ws.close()


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536, 300_000])
def test_the_bytes_counted_per_frame_are_the_bytes_on_the_wire(length):
    # What a stalled client has taken is judged from the bytes sent: count a frame as tornado
    # writes it (a server's frame: unmasked, no compression).
    from tornado.websocket import WebSocketProtocol13

    from mas_jupyter.server.channel import _header_size

    written = []
    protocol = WebSocketProtocol13.__new__(WebSocketProtocol13)
    protocol.mask_outgoing, protocol._wire_bytes_out = False, 0
    protocol.stream = type("Stream", (), {"write": lambda self, frame: written.append(frame)})()
    protocol._write_frame(True, 0x1, b"x" * length)
    assert len(written[0]) == length + _header_size(length)
