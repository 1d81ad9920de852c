"""A private asyncio event loop in a daemon thread: where the client's I/O runs.

Cells are synchronous and a kernel's own loop is already running while they execute, so the
client never runs its coroutines on the caller's loop: sync calls block on a future of this
loop, async calls await one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self, name: str = "mas-client") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            # Stopped: end what is left (event feeds, consoles) and release the loop.
            tasks = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                gather = asyncio.gather(*tasks, return_exceptions=True)
                self.loop.run_until_complete(asyncio.wait_for(gather, 5))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    @property
    def here(self) -> bool:
        """Whether the caller runs on this loop's thread."""
        return threading.current_thread() is self.thread

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Schedule a coroutine on the loop; a concurrent future of its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop and wait for it (Ctrl-C cancels it)."""
        if self.here:
            close = getattr(coro, "close", None)
            if close:
                close()
            raise RuntimeError(
                "a synchronous mas_jupyter call was made from an event or console callback; "
                "use the async variant (await client.a...) there"
            )
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    async def arun(self, coro: Awaitable[T]) -> T:
        """Await a coroutine on the loop from any other loop (or directly when already here)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Call fn(*args) on the loop's thread; False when the loop is already closed."""
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # closed: whatever it held was released with it
            return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop, cancel what still runs on it, close it (waits for the thread)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.here:
            self.thread.join(timeout)
