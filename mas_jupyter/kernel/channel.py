"""A connection to one worker's console: terminado's protocol over the channel WebSocket.

`on_message(kind, payload)` receives `setup`, `stdout` (text), `activity` (a state), `exit`
(the code), `disconnect` and finally `closed` (the connection ended); it is called on the
client's loop thread, so it must be quick and must not make synchronous client calls.
In-process, the same messages come from the engine's attach().
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import MASClientError

if TYPE_CHECKING:
    from .client import MASClient

Handler = Callable[[str, Any], None]


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

    async def open(self) -> Channel:
        """Connect; the recent output arrives first (after `setup`), then live output."""
        transport = self.client._transport
        if transport.kind == "local":

            def listener(kind: str, payload: Any) -> None:
                self._deliver(kind, payload)
                if kind in ("exit", "disconnect"):
                    self._closed()

            replay, self._detach = transport.attach(self.session_id, self.worker_id, listener)
            self._deliver("setup", {})
            if replay:
                self._deliver("stdout", replay)
            return self
        path = f"sessions/{self.session_id}/workers/{self.worker_id}/channel"
        self._ws = await transport.websocket(path)
        self._task = asyncio.ensure_future(self._read())
        return self

    def _deliver(self, kind: str, payload: Any) -> None:
        try:
            self.on_message(kind, payload)
        except Exception:  # a handler bug must not kill the connection
            logging.getLogger(__name__).exception("mas console: on_message failed")

    def _closed(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self._deliver("closed", None)

    async def _read(self) -> None:
        try:
            while True:
                message = await self._ws.read_message()
                if message is None:
                    break
                try:
                    msg = json.loads(message)
                except ValueError:
                    continue
                if isinstance(msg, list) and msg and isinstance(msg[0], str):
                    self._deliver(msg[0], msg[1] if len(msg) > 1 else None)
        finally:
            self._ws.close()  # also when the server closed it: releases the connection
            self._closed()

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
            self.client._loop.call_soon(self._send_local, "write_input", data)

    def resize(self, rows: int, cols: int) -> None:
        """Set the worker's terminal size (thread-safe)."""
        if self.closed.is_set():
            return
        if self._ws is not None:
            self.client._loop.call_soon(self._ws_write, ["set_size", rows, cols])
        else:
            self.client._loop.call_soon(self._send_local, "resize_worker", cols, rows)

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
            if self.client._loop.call_soon(self._ws.close) and not self.client._loop.here:
                self.closed.wait(timeout)

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
