"""The event subscription: WS /api/mas/events (or the in-process bus), reconnecting.

One feed per client runs on the client's loop and hands every event to each subscription's
own queue; the first subscription opens its connection and the last one to close closes it.
A subscription is read as an iterator (`client.events()`) or calls a callback in
its own thread (`client.subscribe(cb)`), so callbacks may make synchronous client calls.
After every (re)connection, callbacks' `on_connect` is called: events may have been missed,
so that is the moment to re-read the state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ConnectionFailed, MASClientError

if TYPE_CHECKING:
    from .client import MASClient

log = logging.getLogger(__name__)
CONNECTED = {"type": "connected"}  # a marker between subscriptions and the feed, not an event
QUEUE_MAX = 10_000
CONNECT_TIMEOUT = 15.0
BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)


class _Run:
    """One period of the feed, from its first subscriber to the last one leaving.

    Each period has its own connection, state and task, so a period that is ending (closing
    its WebSocket) never touches the next one's.
    """

    def __init__(self) -> None:
        self.connected = threading.Event()
        self.error: MASClientError | None = None
        self.failures = 0  # connection attempts that failed (`changed` tells of each)
        self.changed = threading.Condition()
        self.stopping = False
        self.ws: Any = None
        self.task: concurrent.futures.Future | None = None
        self.unsubscribe: Callable[[], None] | None = None


class Feed:
    """The one connection to the event stream of a client, open while anyone is subscribed:
    the first subscriber opens it, the last one to leave closes it."""

    def __init__(self, client: MASClient) -> None:
        self.client = client
        self.queues: list[queue.Queue] = []
        self.lock = threading.Lock()
        self.run: _Run | None = None

    def add(self) -> queue.Queue:
        """A new subscriber queue; starts the feed and waits for it to be connected."""
        q: queue.Queue = queue.Queue(QUEUE_MAX)
        with self.lock:
            self.queues.append(q)
            run = self.run
            if run is None:
                run = self.run = _Run()
                run.task = self.client._loop.submit(self._run(run))
        # Until connected, or until an attempt begun from now on fails: a server that cannot
        # be reached is said at once (it took the whole timeout, 15 s), not after retries.
        with run.changed:
            failures = run.failures
            run.changed.wait_for(
                lambda: run.connected.is_set() or run.failures > failures, CONNECT_TIMEOUT
            )
        if not run.connected.is_set():
            self.remove(q)  # else, once connected, events would pile up in it unread
            raise run.error or ConnectionFailed("could not connect to the event stream")
        return q

    def remove(self, q: queue.Queue) -> None:
        """Forget a subscriber queue; the last one to go closes the connection."""
        with self.lock:
            if q in self.queues:
                self.queues.remove(q)
            if self.queues or self.run is None:
                return
            run, self.run = self.run, None
        self._stop(run)

    def _dispatch(self, run: _Run, event: dict) -> None:
        with self.lock:
            if run is not self.run:
                return  # a period that is ending: the next one's subscribers get theirs
            queues = list(self.queues)
        for q in queues:
            try:
                q.put_nowait(event)
            except queue.Full:  # a subscriber that reads nothing loses events, not memory
                log.warning("mas events: a subscriber is not reading; event dropped")

    async def _run(self, run: _Run) -> None:
        transport = self.client._transport
        if transport.kind == "local":
            run.unsubscribe = transport.subscribe(lambda event: self._dispatch(run, event))
            if run.stopping:  # ended before it started: `_end` ran already and found nothing
                self._end(run)
                return
            with run.changed:  # `add` waits on this condition, not on the event
                run.connected.set()
                run.changed.notify_all()
            self._dispatch(run, CONNECTED)
            return
        attempt = 0
        while not run.stopping:
            try:
                run.ws = await transport.websocket("events")
            except MASClientError as e:
                run.error = e
                run.connected.clear()
                with run.changed:
                    run.failures += 1
                    run.changed.notify_all()
                await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                attempt += 1
                continue
            attempt = 0
            run.error = None
            try:
                if run.stopping:  # the last subscriber left while this connected
                    return
                with run.changed:
                    run.connected.set()
                    run.changed.notify_all()
                self._dispatch(run, CONNECTED)
                await self._read(run, run.ws)
            finally:
                run.connected.clear()
                run.ws.close()  # also when the server closed it: releases the connection
                run.ws = None

    async def _read(self, run: _Run, ws: Any) -> None:
        while True:
            message = await ws.read_message()
            if message is None:
                return
            try:
                event = json.loads(message)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._dispatch(run, event)

    def _stop(self, run: _Run) -> None:
        """End a period without waiting: the rest is done on the client's loop."""
        run.stopping = True
        self.client._loop.call_soon(self._end, run)

    @staticmethod
    def _end(run: _Run) -> None:
        # On the client's loop, like everything that sets `ws` and `unsubscribe`.
        if run.unsubscribe is not None:
            run.unsubscribe()
            run.unsubscribe = None
        if run.ws is not None:
            run.ws.close()  # the read loop then ends and the task with it
        elif run.task is not None:
            run.task.cancel()  # connecting or waiting to retry: nothing to close

    def drop_connection(self) -> None:
        """Close the current WebSocket (the feed reconnects): for tests and after a sleep."""
        run = self.run
        ws = run.ws if run is not None else None
        if ws is not None:
            self.client._loop.call_soon(ws.close)

    def close(self, timeout: float = 3.0) -> None:
        """Stop the feed; the WebSocket is closed cleanly (bounded) before this returns."""
        with self.lock:
            self.queues.clear()
            run, self.run = self.run, None
        if run is None:
            return
        self._stop(run)
        if self.client._loop.here or run.task is None:
            return
        try:
            run.task.result(timeout)  # ends once the close handshake is done
        except BaseException:  # timed out, cancelled or failed: stop it anyway
            run.task.cancel()


class EventStream:
    """An iterator over events (dicts with `type`, `session_id`, `worker_id`, `time`, ...).

    `for event in client.events(timeout=10)` (or `async for event in client.aevents(...)`)
    ends when no event came for `timeout` seconds (never, by default). Use it as a context
    manager, or call close(), to unsubscribe.
    """

    def __init__(self, feed: Feed, timeout: float | None = None) -> None:
        self.feed = feed
        self.timeout = timeout
        self.queue: queue.Queue | None = feed.add()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> dict:
        event = self.get(self.timeout)
        if event is None:
            raise StopIteration
        return event

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> dict:
        # The queue is a thread queue: wait for it in short slices off the loop, so a closed
        # stream or a cancelled task never leaves a thread blocked for good.
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while self.queue is not None:
            left = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            if left <= 0:
                break
            event = await asyncio.to_thread(self.get, left)
            if event is not None:
                return event
        raise StopAsyncIteration

    def get(self, timeout: float | None = None) -> dict | None:
        """The next event, or None when none came within `timeout` seconds."""
        if self.queue is None:
            return None
        while True:
            try:
                event = self.queue.get(timeout=timeout)
            except queue.Empty:
                return None
            if event is not CONNECTED:
                return event

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float) -> dict | None:
        """The first event for which predicate(event) is true, or None after `timeout` s."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            event = self.get(left)
            if event is not None and predicate(event):
                return event
        return None

    def close(self) -> None:
        """Unsubscribe."""
        if self.queue is not None:
            self.feed.remove(self.queue)
            self.queue = None

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscription:
    """Calls `callback(event)` for every event, in a thread of its own, until closed."""

    def __init__(
        self,
        feed: Feed,
        callback: Callable[[dict], None],
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self.feed = feed
        self.callback = callback
        self.on_connect = on_connect
        self.queue: queue.Queue = feed.add()
        self._stop = object()
        self.thread = threading.Thread(target=self._main, name="mas-events", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        while True:
            event = self.queue.get()
            if event is self._stop:
                return
            try:
                if event is CONNECTED:
                    if self.on_connect is not None:
                        self.on_connect()
                else:
                    self.callback(event)
            except Exception:  # one bad callback must not end the subscription
                log.exception("mas events: the callback failed")

    def close(self) -> None:
        """Unsubscribe and end the thread."""
        self.feed.remove(self.queue)
        self.queue.put(self._stop)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
