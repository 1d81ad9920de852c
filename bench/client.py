"""Async clients of a running server: REST calls, console WebSockets, and a raw stalled socket.

A `Console` speaks terminado's protocol, so the same code drives a mas worker's channel and a
Jupyter terminal: the comparisons measure the servers, not two different clients.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable

import orjson
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from .server import JupyterServer

PROMPT = "$ "


class Api:
    """REST calls to one server (many may be in flight)."""

    def __init__(self, server: JupyterServer, max_clients: int = 64) -> None:
        self.server = server
        self.http = AsyncHTTPClient(force_instance=True, max_clients=max_clients)
        self.consoles: list[Console] = []

    def close(self) -> None:
        """Close the HTTP client and every console opened through it."""
        for console in self.consoles:
            console.close()
        self.consoles.clear()
        self.http.close()

    async def call(
        self, method: str, path: str, body: object = None, raw: bytes | None = None, timeout=120
    ) -> tuple[int, object]:
        """(status, parsed body); never raises on an error status."""
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if data is None and method in ("POST", "PATCH", "PUT"):
            data = b""
        req = HTTPRequest(
            self.server.url + path,
            method=method,
            body=data,
            headers=self.server.headers(),
            request_timeout=timeout,
            allow_nonstandard_methods=True,
        )
        try:
            resp = await self.http.fetch(req)
        except HTTPClientError as err:
            if err.response is None:
                raise
            resp = err.response
        if not resp.body:
            return resp.code, None
        try:
            return resp.code, json.loads(resp.body)
        except ValueError:
            return resp.code, resp.body.decode(errors="replace")

    async def mas(self, method: str, path: str, body: object = None, **kw) -> tuple[int, object]:
        """Call /api/mas/<path>."""
        return await self.call(method, "/api/mas/" + path, body, **kw)

    async def ok(self, method: str, path: str, body: object = None, status=(200, 201, 204)):
        """Call /api/mas/<path> and fail unless it succeeded; returns the body."""
        code, data = await self.mas(method, path, body)
        if code not in status:
            raise RuntimeError(f"{method} {path} -> {code}: {data}")
        return data

    async def timed_get(self, path: str) -> float:
        """Seconds until one GET's whole body has arrived (it must answer 200 with JSON).

        The body is parsed after the clock stops: decoding a large listing is the client's
        cost (~2 ms for 450 KB in Python here, with garbage-collection spikes), not the
        server's, and a browser's JSON.parse is several times faster.
        """
        req = HTTPRequest(self.server.url + path, headers=self.server.headers())
        t0 = time.perf_counter()
        resp = await self.http.fetch(req, raise_error=False)
        elapsed = time.perf_counter() - t0
        if resp.code != 200:
            raise RuntimeError(f"GET {path} -> {resp.code}: {resp.body[:200]!r}")
        json.loads(resp.body)
        return elapsed

    # consoles

    async def connect(self, path: str, timeout: float = 30) -> Console:
        """Open a console WebSocket (a path under the server, e.g. api/mas/.../channel)."""
        req = HTTPRequest(
            f"{self.server.ws_url}/{path}",
            headers={"Authorization": f"token {self.server.token}"},
            request_timeout=timeout,
        )
        conn = await websocket_connect(req, max_message_size=256 * 1024 * 1024)
        console = Console(conn)
        self.consoles.append(console)
        return console

    async def mas_shell(self, session: str, name: str = "sh", **spec) -> tuple[dict, Console]:
        """Start a terminal worker in a session and open its console at the prompt."""
        worker = await self.ok(
            "POST", f"sessions/{session}/workers", {"name": name, "kind": "terminal", **spec}
        )
        console = await self.connect(f"api/mas/{worker['channel']}")
        await console.read_until(PROMPT, 30)
        return worker, console

    async def jupyter_terminal(self) -> tuple[str, Console]:
        """Start a Jupyter terminal and open its console at the prompt."""
        code, data = await self.call("POST", "/api/terminals", {})
        if code != 200:
            raise RuntimeError(f"POST /api/terminals -> {code}: {data}")
        name = data["name"]
        console = await self.connect(f"terminals/websocket/{name}")
        await console.read_until(PROMPT, 30)
        return name, console


class Console:
    """A terminado-protocol client: ["stdin", text] out, ["stdout", text] and others in."""

    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn
        self.received = 0  # characters of stdout so far
        self.closed: tuple[int | None, str | None] | None = None
        self.messages: list[list] = []  # every non-stdout message, in order
        self._tail = ""

    def send(self, text: str) -> None:
        """Type text."""
        self.conn.write_message(json.dumps(["stdin", text]))

    def resize(self, rows: int, cols: int) -> None:
        self.conn.write_message(json.dumps(["set_size", rows, cols]))

    async def next(self, timeout: float) -> list | None:
        """The next message (None once the socket closed)."""
        raw = await asyncio.wait_for(self.conn.read_message(), timeout)
        if raw is None:
            self.closed = (self.conn.close_code, self.conn.close_reason)
            return None
        msg = orjson.loads(raw)  # the json module costs ~2 ms per MB: the client's largest cost
        if isinstance(msg, list) and msg and msg[0] == "stdout":
            self.received += len(msg[1])
        else:
            self.messages.append(msg)
        return msg

    async def read_until(self, marker: str, timeout: float, keep: bool = False) -> str:
        """Read until marker shows in the output (across frames); returns output when keep."""
        deadline = time.monotonic() + timeout
        kept: list[str] = []
        # What came after the last marker found is not consumed yet: look there first.
        tail, self._tail = self._tail, ""
        at = tail.find(marker)
        if at >= 0:
            self._tail = tail[at + len(marker) :]
            return tail[: at + len(marker)] if keep else ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{marker!r} not seen in {timeout:.0f} s (tail {tail[-200:]!r})")
            msg = await self.next(remaining)
            if msg is None:
                raise ConnectionError(f"closed before {marker!r}: {self.closed}")
            if msg[0] != "stdout":
                continue
            text = msg[1]
            if keep:
                kept.append(text)
            window = tail + text
            at = window.find(marker)
            if at >= 0:
                self._tail = window[at + len(marker) :][-4096:]
                return "".join(kept)
            tail = window[-len(marker) :]

    async def drain(self, seconds: float) -> None:
        """Read and drop whatever arrives for a while."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                if await self.next(remaining) is None:
                    return
            except asyncio.TimeoutError:
                return

    async def wait_closed(self, timeout: float) -> tuple[int | None, str | None]:
        """Read until the server closes the socket; returns (code, reason)."""
        deadline = time.monotonic() + timeout
        while self.closed is None:
            await self.next(max(0.01, deadline - time.monotonic()))
        return self.closed

    def close(self) -> None:
        self.conn.close()


async def echo_rtts(
    console: Console, count: int, timeout: float = 30, max_seconds: float | None = None
) -> list[float]:
    """Seconds from each single keystroke to its echo, over `count` keystrokes.

    Typed as a shell comment ('#' first) so nothing runs; a new line every 60 keys keeps
    readline's line short. With max_seconds, stops early (fewer samples) once that has passed.
    """
    stop_at = None if max_seconds is None else time.monotonic() + max_seconds
    letters = "abcdefghijklmnopqrstuvwxyz"
    rtts: list[float] = []
    column = 0
    while len(rtts) < count:
        if column == 0:
            console.send("#")
            await console.read_until("#", timeout)
        ch = letters[len(rtts) % len(letters)]
        t0 = time.perf_counter()
        console.send(ch)
        await console.read_until(ch, timeout)
        rtts.append(time.perf_counter() - t0)
        column += 1
        if stop_at is not None and time.monotonic() > stop_at:
            break
        if column == 60:
            console.send("\r")
            await console.read_until(PROMPT, timeout)
            column = 0
    if column:
        console.send("\r")
        await console.read_until(PROMPT, timeout)
    return rtts


class LatencyProbe:
    """Times one call over and over in the background (e.g. GET /api/status)."""

    def __init__(self, call: Callable[[], Awaitable[float]], every: float = 0.05) -> None:
        self.call = call
        self.every = every
        self.samples: list[float] = []
        self._task: asyncio.Task | None = None

    def start(self) -> LatencyProbe:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        while True:
            self.samples.append(await self.call())
            await asyncio.sleep(self.every)

    async def stop(self) -> list[float]:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        return self.samples


class LoopLag:
    """How late the event loop wakes a timer (wall clock: the loop's blocks, and the OS's
    preemption of the process), and the longest turn of the loop in CPU time of its thread
    (from one `select` to the next: the loop's own work only)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.max_lag = 0.0
        self.max_busy = 0.0
        self.samples: list[float] = []
        self._task: asyncio.Task | None = None
        self._selector = None

    def start(self) -> LoopLag:
        selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        inner = selector.select
        woke = [time.thread_time()]

        def select(timeout=None):
            self.max_busy = max(self.max_busy, time.thread_time() - woke[0])
            try:
                return inner(timeout)
            finally:
                woke[0] = time.thread_time()

        selector.select = select  # shadows the method on this instance until stop()
        self._selector = selector
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.interval)
            lag = loop.time() - t0 - self.interval
            self.samples.append(lag)
            self.max_lag = max(self.max_lag, lag)

    async def stop(self) -> float:
        if self._selector is not None:
            del self._selector.select
            self._selector = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        return self.max_lag


def raw_websocket(server: JupyterServer, path: str, rcvbuf: int = 4096) -> socket.socket:
    """A WebSocket opened by hand that then never reads: a client that stalls (or vanishes).

    The receive buffer is made small before connecting so the server's writes back up at once.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /{path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: token {server.token}\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("the server closed the connection during the handshake")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status + b" ":
        sock.close()
        raise ConnectionError(f"upgrade refused: {status!r}")
    return sock


def vanish(sock: socket.socket) -> None:
    """Drop a connection without a close handshake (RST), as a crashed client does."""
    import struct

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
