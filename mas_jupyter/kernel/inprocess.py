"""The engine run inside this process, when no Jupyter server is there to talk to.

A `MASManager` lives on the client's private event loop (a daemon thread), so it works in
plain IPython, in VS Code notebooks, and in a kernel whose own loop is busy running cells.
Every call runs on that loop and its answer goes through JSON, exactly as over HTTP.
"""

from __future__ import annotations

import atexit
import inspect
import json
import os
from collections.abc import Callable
from typing import Any

from ..core.errors import MASError
from ..core.manager import MASManager
from .errors import ConnectionFailed, error_from
from .loop import LoopThread

SHUTDOWN_TIMEOUT = 15.0


class LocalTransport:
    """Calls a `MASManager` in this process (on the client's loop)."""

    kind = "local"

    def __init__(self, loop: LoopThread, root_dir: str | None = None, config: dict | None = None):
        self.loop = loop
        self.root_dir = os.path.abspath(root_dir or os.getcwd())
        self.config = dict(config or {})
        self.manager: MASManager | None = None
        loop.run(self._start())
        atexit.register(self.shutdown)

    def __repr__(self) -> str:
        return f"LocalTransport(root_dir={self.root_dir!r})"

    @property
    def url(self) -> str:
        """Where the engine is: this process."""
        return f"in-process ({self.root_dir})"

    shown_url = url  # nothing to hide: no credentials

    async def _start(self) -> None:
        manager = MASManager(root_dir=self.root_dir, **self.config)
        try:  # the sessions root in use by another process, say
            manager.start()
            await manager.recover()
        except MASError as e:
            raise error_from(e.status, e.to_dict()) from None
        self.manager = manager

    def _engine(self) -> MASManager:
        if self.manager is None:
            raise ConnectionFailed(
                "the in-process engine was closed (client.close()); mas_jupyter.connect() "
                "starts a new one"
            )
        return self.manager

    async def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """Call the engine method `op`; its answer as the HTTP API would give it."""
        try:
            result = getattr(self._engine(), op)(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except MASError as e:
            raise error_from(e.status, e.to_dict()) from None
        if op == "delete_session":
            return result["rescue_ref"]  # the REST API's X-MAS-Rescue-Ref header
        if op in ("delete_worker", "write_input"):
            return None  # the REST API answers these with no body
        return json.loads(json.dumps(result))

    def attach(self, key: str, wkey: str, listener: Callable[[str, Any], None]):
        """Recent output and a live subscription to one worker's console (on the loop)."""
        try:
            return self._engine().attach(key, wkey, listener)
        except MASError as e:
            raise error_from(e.status, e.to_dict()) from None

    def subscribe(self, listener: Callable[[dict], None]) -> Callable[[], None]:
        """Subscribe to the engine's events (called on the loop)."""
        return self._engine().events.subscribe(listener)

    def shutdown(self) -> None:
        """Stop the in-process workers (they are this process's children) and close the store."""
        manager, self.manager = self.manager, None
        if manager is None:
            return
        try:
            self.loop.run(manager.shutdown(), timeout=SHUTDOWN_TIMEOUT)
        except Exception:  # at interpreter exit there is nobody left to tell
            pass

    def close(self) -> None:
        """Same as shutdown."""
        self.shutdown()
