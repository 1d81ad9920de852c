"""A connection to one worker's console: terminado's protocol over the channel WebSocket.

`on_message(kind, payload)` receives `setup`, `stdout` (text), `activity` (a state), `exit`
(the code; why is then in `exit_reason`), `disconnect` and finally `closed` (payload: why, or
None when the worker exited, was deleted or the channel was closed); it is called on the
client's loop thread, so it must be quick and must not make synchronous client calls.
In-process, the same messages come from the engine's attach().

When the connection drops while the worker runs on (the server restarted, a network blip, or
the server dropped a client that stopped reading), the channel connects again by itself:
`reconnecting` (payload: seconds until the next try), waiting `RECONNECT_FIRST_SECONDS`, then
twice as long each time up to `RECONNECT_MAX_SECONDS`. The server then sends `setup` and the
recent output again, so a console rebuilds its screen from them. It stops trying when the
worker no longer exists, when the server refuses the connection (`closed` says why), or when
the channel is closed. What is written while reconnecting is not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.errors import MASError
from .errors import ConnectionFailed, MASClientError, NotFound

if TYPE_CHECKING:
    from .client import MASClient

Handler = Callable[[str, Any], None]

RECONNECT_FIRST_SECONDS = 0.25
RECONNECT_MAX_SECONDS = 10.0


class Channel:
    """One console client of a worker: output in through `on_message`, keystrokes out."""

    def __init__(self, client: MASClient, session_id: str, worker_id: str, on_message: Handler):
        self.client = client
        self.session_id = session_id
        self.worker_id = worker_id
        self.on_message = on_message
        self.closed = threading.Event()
        self._ws: Any = None
        self._detach: Callable[[], None] | None = None
        self._task: Any = None
        self._closing = asyncio.Event()  # set by close(), on the loop: no reconnecting after
        self._ended = False  # the worker exited or was deleted: nothing to reconnect to
        # Why the worker ended, once `exit` came: its exit_reason ("exited", "crashed",
        # "restarted", "paused", ...): a restart's exit is no crash.
        self.exit_reason: str | None = None

    async def open(self) -> Channel:
        """Connect; the recent output arrives first (after `setup`), then live output."""
        transport = self.client._transport
        if transport.kind == "local":

            def listener(kind: str, payload: Any) -> None:
                if self.closed.is_set():
                    return
                if kind == "exit":  # the engine records why before it tells its consoles
                    with contextlib.suppress(MASError):
                        worker = transport.manager.get_worker(self.session_id, self.worker_id)
                        self.exit_reason = worker["exit_reason"]
                self._deliver(kind, payload)
                if kind in ("exit", "disconnect"):
                    # Ended: a restart's stop of the exited process says nothing more here.
                    if self._detach is not None:
                        detach, self._detach = self._detach, None
                        detach()
                    self._closed()

            replay, self._detach = transport.attach(self.session_id, self.worker_id, listener)
            self._deliver("setup", {})
            if replay:
                self._deliver("stdout", replay)
            with contextlib.suppress(MASError):  # and the activity now, as the server says it
                worker = transport.manager.get_worker(self.session_id, self.worker_id)
                if worker["activity"] != "exited":
                    self._deliver("activity", worker["activity"])
            return self
        self._ws = await transport.websocket(self._path)
        self._task = asyncio.ensure_future(self._read())
        return self

    @property
    def _path(self) -> str:
        return f"sessions/{self.session_id}/workers/{self.worker_id}/channel"

    def _deliver(self, kind: str, payload: Any) -> None:
        try:
            self.on_message(kind, payload)
        except Exception:  # a handler bug must not kill the connection
            logging.getLogger(__name__).exception("mas console: on_message failed")

    def _closed(self, why: str | None = None) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self._deliver("closed", why)

    async def _read(self) -> None:
        why = None
        try:
            while True:
                await self._read_connection()
                if self._ended or self._closing.is_set():
                    break
                why = await self._connect_again()
                if why is not None or self._closing.is_set():
                    break
        finally:
            self._closed(why)

    async def _read_connection(self) -> None:
        try:
            while True:
                message = await self._ws.read_message()
                if message is None:
                    return
                try:
                    msg = json.loads(message)
                except ValueError:
                    continue
                if isinstance(msg, list) and msg and isinstance(msg[0], str):
                    if msg[0] in ("exit", "disconnect"):
                        self._ended = True
                    if msg[0] == "exit" and len(msg) > 2 and isinstance(msg[2], str):
                        self.exit_reason = msg[2]
                    self._deliver(msg[0], msg[1] if len(msg) > 1 else None)
        finally:
            self._ws.close()  # also when the server closed it: releases the connection

    async def _connect_again(self) -> str | None:
        """Connect again after a dropped connection; None once connected (or closed while
        trying), else why it stopped trying."""
        delay = RECONNECT_FIRST_SECONDS
        while True:
            self._deliver("reconnecting", delay)
            try:
                await asyncio.wait_for(self._closing.wait(), delay)
                return None  # closed while waiting
            except asyncio.TimeoutError:
                pass
            try:
                ws = await self.client._transport.websocket(self._path)
            except NotFound:
                return "the worker no longer exists"
            except ConnectionFailed:
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                continue
            except MASClientError as e:
                return e.message
            if self._closing.is_set():
                ws.close()
                return None
            self._ws = ws
            return None

    def _send_local(self, op: str, *args: Any) -> None:
        manager = self.client._transport.manager
        try:
            getattr(manager, op)(self.session_id, self.worker_id, *args)
        except Exception as e:  # typed errors of the engine: tell the console, keep going
            self._deliver("error", getattr(e, "message", str(e)))

    def write(self, data: str) -> None:
        """Type `data` into the worker (thread-safe)."""
        if self.closed.is_set():
            raise MASClientError("the console is closed", reason="closed")
        if self._ws is not None:
            self.client._loop.call_soon(self._ws_write, ["stdin", data])
        else:
            self.client._loop.call_soon(self._send_local, "write_input", data, self)

    def resize(self, rows: int, cols: int) -> None:
        """Set the worker's terminal size (thread-safe)."""
        if self.closed.is_set():
            return
        if self._ws is not None:
            self.client._loop.call_soon(self._ws_write, ["set_size", rows, cols])
        else:
            self.client._loop.call_soon(self._send_local, "fit_worker", cols, rows)

    def _ws_write(self, msg: list) -> None:
        if self._ws is not None and not self.closed.is_set():
            try:
                self._ws.write_message(json.dumps(msg))
            except Exception:  # closed meanwhile: the reader reports it
                pass

    def close(self, timeout: float = 3.0) -> None:
        """Disconnect (the worker keeps running); waits (bounded) for a clean close."""
        if self._detach is not None:
            detach, self._detach = self._detach, None
            self.client._loop.call_soon(detach)
            self._closed()
        if self._ws is not None and not self.closed.is_set():
            if self.client._loop.call_soon(self._stop) and not self.client._loop.here:
                self.closed.wait(timeout)

    def _stop(self) -> None:
        self._closing.set()
        self._ws.close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
