"""The worker console WebSocket: terminado's protocol plus activity and exit messages.

Each client has its own bounded send queue drained by one writer task that awaits tornado's
write future, so a slow client never makes the server buffer without bound and never slows
the others. When a console's queue passes its bound, a client that is still reading is
resynchronised (its queue is replaced by ["setup", {}] and the recent output, as on a
reconnect: it skips ahead), and a client whose last frame has not been taken for
`client_stall_seconds` is dropped (it can reconnect and replay). A frame that the kernel's
socket buffers take at once leaves no write pending (and costs no step of the writer task);
a client that stops reading such frames is found by a timer: the bytes it took from the
socket's send queue (`TIOCOUTQ`) in `client_stall_seconds` are fewer than `MIN_PROGRESS`.
Consecutive output chunks are sent as one frame, so a fast stream costs few frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import struct
import termios
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from ..core.errors import MASError, NotFoundError, TooLargeError
from ..core.queries import without_queries
from ..core.worker import exit_status
from .base import REASONS, MASMixin

# Close codes (RFC 6455 and the 4000-4999 private range).
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003
CLOSE_TOO_BIG = 1009
CLOSE_SHUTDOWN = 1001
CLOSE_TOO_SLOW = 4008
CLOSE_GONE = 4004
FRAME_CHARS = 64 * 1024  # the largest stdout frame: bounds how long one write holds the loop
MIN_PROGRESS = 32 * 1024  # bytes a client must take per stall period while any are unsent
CLOSE = "close"  # a queue item that closes the socket once everything before it is sent
WHOLE = "whole"  # a queue item whose payload is the whole message (an event, a last word)


class MASWebSocket(MASMixin, WebSocketMixin, WebSocketHandler, JupyterHandler):
    """A WebSocket of mas_jupyter: origin checked, authenticated and authorized before upgrade."""

    auth_action = "read"

    def set_default_headers(self) -> None:
        """No HTML headers (CSP etc.) on a WebSocket upgrade."""

    async def pre_get(self) -> None:
        """Check the origin, then authorize `auth_action` on "mas", before any other work."""
        headers = self.request.headers
        origin = headers.get("Origin", headers.get("Sec-Websocket-Origin"))
        if origin is not None and not self.check_origin(origin):
            raise web.HTTPError(403, "cross-origin WebSocket refused")
        user = self.current_user
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, user, self.auth_action, self.auth_resource)
        )
        if not allowed:
            raise web.HTTPError(403, "not authorized to %s on resource: mas", self.auth_action)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Refusals before the upgrade are JSON like the REST API's."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json")
        if isinstance(exc, MASError):
            self.set_status(exc.status)
            self.finish(json.dumps(exc.to_dict()))
        else:
            reason = REASONS.get(status_code, "error")  # the words of the REST API
            self.finish(json.dumps({"message": self._reason, "reason": reason}))

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[no-untyped-def]
        """Expected refusals (unknown worker) without a traceback."""
        if isinstance(value, MASError) and value.status < 500:
            self.log.info("websocket %s refused: %s", self.request.path, value.message)
            return
        super().log_exception(typ, value, tb)


class ClientQueue:
    """A bounded queue of outgoing messages for one client, drained by one writer task.

    A message put while nothing is queued or being written goes out at once, from the caller
    (a keystroke's echo does not wait for the writer task's turn on the loop); what arrives
    while a frame is in flight is queued and coalesced into the next frame.
    """

    def __init__(
        self,
        socket: WebSocketHandler,
        max_chars: int,
        on_overflow: Callable[[], None],
        stall_seconds: float,
        on_stall: Callable[[], None],
        unsent: Callable[[], int] = lambda: 0,
    ) -> None:
        self.socket = socket
        self.max_chars = max_chars
        self.on_overflow = on_overflow
        self.stall_seconds = stall_seconds
        self.on_stall = on_stall
        self.unsent = unsent
        self.items: deque[tuple[str, Any]] = deque()
        self.chars = 0
        self.inflight: asyncio.Future | None = None
        self.write_started: float | None = None
        self.sent = 0  # bytes of the frames written so far
        self.check: asyncio.TimerHandle | None = None  # the next look at what the client took
        self.closed = False
        self.wake = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    def stalled_for(self) -> float:
        """Seconds the frame being written has waited for the client (0 when none is)."""
        if self.write_started is None:
            return 0.0
        return asyncio.get_running_loop().time() - self.write_started

    def clear(self) -> None:
        """Forget what is queued (the frame being written still goes)."""
        self.items.clear()
        self.chars = 0

    def put(self, kind: str, payload: Any) -> None:
        """Send or queue a message; never blocks; calls on_overflow once the bound is passed."""
        if self.closed:
            return
        if self.inflight is None and not self.items and kind != CLOSE:
            self._start(_frame(kind, payload))
            return
        self.items.append((kind, payload))
        self.chars += _size(payload)
        self.wake.set()
        if self.chars > self.max_chars:
            self.on_overflow()

    def close(self) -> None:
        """Stop writing and free what is queued."""
        self.closed = True
        self.items.clear()
        self.chars = 0
        self.task.cancel()
        # On Python 3.11 a cancel that meets a write finishing inside wait_for can be lost:
        # the writer then finds `closed` when it wakes, rather than waiting for ever.
        self.wake.set()
        if self.check is not None:
            self.check.cancel()
            self.check = None

    def _start(self, frame: bytes) -> None:
        try:
            future = self.socket.write_message(frame)
        except WebSocketClosedError:
            self.closed = True
            return
        self.sent += len(frame) + _header_size(len(frame))
        if future.done():  # all in the kernel's buffers already: watch the client take it
            self._watch()
            return
        future.add_done_callback(_consume)
        self.inflight = future
        self.write_started = asyncio.get_running_loop().time()
        self.wake.set()

    def _watch(self) -> None:
        if self.check is None and not self.closed:
            self.check = asyncio.get_running_loop().call_later(
                self.stall_seconds, self._check, self.unsent(), self.sent
            )

    def _check(self, unsent: int, sent: int) -> None:
        """Drop the client if it took less than `MIN_PROGRESS` bytes since the last look.

        A client that reads nothing still lets a few KiB through as its kernel compacts its
        receive buffer, hence a minimum rather than any progress at all.
        """
        self.check = None
        if self.closed or self.inflight is not None:
            return  # a pending write is watched by the writer task, which looks again after it
        now = self.unsent()
        if now <= 0:
            return
        if unsent + (self.sent - sent) - now < MIN_PROGRESS:
            self.on_stall()
            return
        self._watch()

    def _next_frame(self) -> bytes:
        kind, payload = self.items.popleft()
        self.chars -= _size(payload)
        if kind != "stdout":
            return _frame(kind, payload)
        parts, size = [payload], len(payload)
        while self.items and self.items[0][0] == "stdout" and size < FRAME_CHARS:
            more = self.items.popleft()[1]
            self.chars -= len(more)
            parts.append(more)
            size += len(more)
        return _frame("stdout", "".join(parts))

    async def _run(self) -> None:
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                if self.closed:
                    return
                while True:
                    if self.inflight is not None:
                        try:
                            await asyncio.wait_for(
                                asyncio.shield(self.inflight), self.stall_seconds
                            )
                        except asyncio.TimeoutError:
                            if self.items:  # more to send and the client takes nothing
                                self.on_stall()
                                return
                            # Nothing queued behind it (e.g. after skipping ahead): a slow
                            # client gets longer, but one that reads nothing is still dropped.
                            try:
                                await asyncio.wait_for(
                                    asyncio.shield(self.inflight), 9 * self.stall_seconds
                                )
                            except asyncio.TimeoutError:
                                self.on_stall()
                                return
                        self.inflight = self.write_started = None
                        self._watch()
                    if not self.items or self.closed:
                        break
                    if self.items[0][0] == CLOSE:
                        code, reason = self.items.popleft()[1]
                        self.closed = True
                        self.socket.close(code, reason)
                        return
                    self._start(self._next_frame())
        except (WebSocketClosedError, asyncio.CancelledError):
            pass


def _frame(kind: str, payload: Any) -> bytes:
    # orjson: output is escaped at ~8x the speed of the json module (docs/performance.md).
    # tornado sends bytes as a text frame unless told it is binary.
    return orjson.dumps(payload if kind == WHOLE else [kind, payload])


def _header_size(length: int) -> int:
    """Bytes of the header of a server's WebSocket frame of `length` bytes (RFC 6455 5.2:
    unmasked, no extensions)."""
    return 2 if length < 126 else 4 if length < 65536 else 10


def _consume(future: asyncio.Future) -> None:
    # A write that failed because the client went away is expected: retrieve it, log nothing.
    if not future.cancelled():
        future.exception()


def _size(payload: Any) -> int:
    # Output counts by its length; other messages (small dicts, codes) by a fixed estimate.
    return len(payload) if isinstance(payload, str) else 256


class ChannelHandler(MASWebSocket):
    """WS /api/mas/sessions/{sid}/workers/{wid}/channel: one client of a worker's console."""

    auth_action = "write"  # a console can type into the worker
    queue: ClientQueue | None = None
    _detach: Callable[[], None] | None = None
    _unsubscribe: Callable[[], None] | None = None

    @property
    def max_message_size(self) -> int:  # type: ignore[override]
        """The largest client frame: the input limit, JSON-escaped, plus a little framing."""
        return self.manager.max_input_bytes * 6 + 1024

    @ws_authenticated
    async def get(self, sid: str, wid: str) -> None:
        """Authorize, find the worker (404 before the upgrade), then upgrade."""
        await self.pre_get()
        if not self.mas_app.recovered:
            await self.mas_app.ready()
        worker = self.manager.get_worker(sid, wid)
        self.session_id, self.worker_id = worker["session_id"], worker["id"]
        await super().get(sid, wid)

    def open(self, sid: str, wid: str) -> None:  # type: ignore[override]
        """Send setup and the recent output, then live messages, with no gap between them."""
        super().open()
        # The bound leaves room for a whole replay, so a resync never overflows at once.
        bound = max(self.mas_app.client_queue_chars, 2 * self.manager.output_buffer_bytes)
        stall = self.mas_app.client_stall_seconds
        self.queue = ClientQueue(
            self, bound, self._overflow, stall, self._stalled, unsent=self._unsent
        )
        self.queue.put("setup", {})
        self.mas_app.sockets.add(self)
        replay = self._attach()
        if replay is None:
            return
        self._put_replay(replay)
        self._unsubscribe = self.manager.events.subscribe(self._on_event)

    def _put_replay(self, replay: str) -> None:
        """The recent output, then the activity now: a console shows it from the start, not
        once it next changes (a worker waiting for an answer read `unknown` until then)."""
        assert self.queue is not None
        if replay:
            self.queue.put("stdout", replay)
        with contextlib.suppress(MASError):
            activity = self.manager.get_worker(self.session_id, self.worker_id)["activity"]
            if activity != "exited":
                self.queue.put("activity", activity)

    def _attach(self) -> str | None:
        """Subscribe to the worker; its recent output, or None with the last messages queued:
        gone if the engine does not find it (deleted, or its delete has begun), else exited."""
        try:
            replay, self._detach = self.manager.attach(
                self.session_id, self.worker_id, self._on_worker
            )
        except NotFoundError:
            self._finish_gone()
            return None
        except MASError:
            # Not running (it exited meanwhile): show what it left, then say it exited.
            self._finish_exited()
            return None
        return replay

    def _finish_exited(self) -> None:
        try:
            output = self.manager.get_output(self.session_id, self.worker_id)["data"]
            replay = without_queries(output)
            worker = self.manager.get_worker(self.session_id, self.worker_id)
            code = exit_status(worker["exit_code"], worker["exit_signal"])  # as live clients
        except NotFoundError:
            self._finish_gone()
            return
        except MASError:
            replay, code, worker = "", None, {}
        if self.queue is None:
            return
        if replay:
            self.queue.put("stdout", replay)
        self._finish_exit(code, worker.get("exit_reason"))

    def _finish_gone(self) -> None:
        self._finish(["disconnect", 1], CLOSE_GONE, "worker deleted")

    def _on_worker(self, kind: str, payload: Any) -> None:
        # Called on the event loop for every output burst: queue only, never block.
        if self.queue is None:
            return
        if kind == "exit":  # the worker's exit_reason is recorded before consoles are told
            try:
                reason = self.manager.get_worker(self.session_id, self.worker_id)["exit_reason"]
            except MASError:
                reason = None
            self._finish_exit(payload, reason)
        elif kind == "disconnect":  # deleted: said before its process is ended
            self._finish(["disconnect", payload], CLOSE_GONE, "worker deleted")
        else:
            self.queue.put(kind, payload)

    def _on_event(self, event: dict) -> None:
        gone = event["type"] == "session-deleted" and event["session_id"] == self.session_id
        gone = gone or (event["type"] == "worker-deleted" and event["worker_id"] == self.worker_id)
        if gone and self.queue is not None:
            self._finish_gone()

    def _finish_exit(self, code: int | None, reason: str | None) -> None:
        """["exit", code, reason]: why as the worker's exit_reason (a restart is no crash)."""
        words = "worker exited" if reason in (None, "exited") else f"worker exited: {reason}"
        self._finish(["exit", code, reason], CLOSE_NORMAL, words)

    def _finish(self, message: list, close_code: int, reason: str) -> None:
        """Send a last message after what is queued, then close: the client need not reconnect."""
        self._release()
        if self.queue is not None:
            self.queue.put(WHOLE, message)
            self.queue.put(CLOSE, (close_code, reason))

    def _stalled(self) -> None:
        self.log.warning("dropping a stalled console client of worker %s", self.worker_id)
        self._end(CLOSE_TOO_SLOW, "client stalled: reconnect to replay the recent output")

    def _unsent(self) -> int:
        """Bytes in the kernel's send queue of this socket, not yet taken by the client."""
        try:
            fd = self.ws_connection.stream.socket.fileno()  # type: ignore[union-attr]
            raw = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")
        except (AttributeError, OSError, ValueError):
            return 0  # closed or closing
        return struct.unpack("i", raw)[0]

    def _overflow(self) -> None:
        assert self.queue is not None
        if self._detach is None:
            return  # finishing: only the last messages are still queued, no more output comes
        if self.queue.stalled_for() > self.queue.stall_seconds:
            self._stalled()
            return
        # Behind but reading: skip ahead to the recent output, as a reconnect would.
        self.queue.clear()
        if self._detach is not None:
            self._detach()
            self._detach = None
        replay = self._attach()
        if replay is None:
            return
        self.queue.put("setup", {})
        self._put_replay(replay)

    async def on_message(self, message: str | bytes) -> None:  # type: ignore[override]
        """["stdin", data] types into the worker; ["set_size", rows, cols, ...] resizes it."""
        try:
            msg = json.loads(message)
            if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
                raise ValueError("a message is a JSON array starting with its type")
            if msg[0] == "stdin":
                if len(msg) < 2 or not isinstance(msg[1], str):
                    raise ValueError('stdin takes ["stdin", text]')
                result = self.manager.write_input(
                    self.session_id, self.worker_id, msg[1], console=self
                )
                if hasattr(result, "__await__"):
                    await result
            elif msg[0] == "set_size":
                rows, cols = msg[1], msg[2]
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rows, cols)):
                    raise ValueError('set_size takes ["set_size", rows, cols]')
                self.manager.fit_worker(self.session_id, self.worker_id, cols, rows)
        except TooLargeError as e:
            self._end(CLOSE_TOO_BIG, e.message)
        except MASError as e:
            self.log.info("console message refused: %s", e.message)
        except (ValueError, IndexError, TypeError, RecursionError) as e:
            # RecursionError: JSON nested deeper than the parser goes is bad input too.
            self._end(CLOSE_UNSUPPORTED, f"bad message: {e}"[:120])
        else:
            self.mas_app.touch()

    def _release(self) -> None:
        if self._detach is not None:
            self._detach()
            self._detach = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _end(self, code: int, reason: str) -> None:
        self._release()
        if self.queue is not None:
            self.queue.close()
        self.mas_app.sockets.discard(self)
        self.close(code, reason[:120])

    def on_close(self) -> None:
        """Unsubscribe from the worker and free the queue."""
        self._release()
        if self.queue is not None:
            self.queue.close()
            self.queue = None
        self.mas_app.sockets.discard(self)

    def shutdown(self) -> None:
        """The server is stopping: tell the client and close."""
        self._end(CLOSE_SHUTDOWN, "server shutting down")
