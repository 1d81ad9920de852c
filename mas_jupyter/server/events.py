"""Engine events out of the server: the /api/mas/events WebSocket and jupyter_events.

Every engine event is sent as one JSON object to each events WebSocket client, and emitted
through the server's EventLogger with a registered, versioned schema (so it also appears on
/api/events/subscribe).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

from jupyter_server.auth.decorator import ws_authenticated

from .channel import CLOSE_SHUTDOWN, CLOSE_TOO_SLOW, WHOLE, ClientQueue, MASWebSocket

SCHEMA_DIR = os.path.join(os.path.dirname(__file__), "event_schemas")
SCHEMA_BASE = "https://events.mas-jupyter.org/mas_jupyter"
# Event type -> the jupyter_events schema it is emitted with.
SCHEMA_IDS = {
    "session-created": f"{SCHEMA_BASE}/session/v1",
    "session-updated": f"{SCHEMA_BASE}/session/v1",
    "session-stopped": f"{SCHEMA_BASE}/session/v1",
    "session-deleted": f"{SCHEMA_BASE}/session/v1",
    "worker-created": f"{SCHEMA_BASE}/worker/v1",
    "worker-exited": f"{SCHEMA_BASE}/worker/v1",
    "worker-deleted": f"{SCHEMA_BASE}/worker/v1",
    "activity-changed": f"{SCHEMA_BASE}/activity/v1",
}


def schema_paths() -> list[str]:
    """The YAML files of every event schema."""
    paths = []
    for topic in sorted(os.listdir(SCHEMA_DIR)):
        folder = os.path.join(SCHEMA_DIR, topic)
        if os.path.isdir(folder):
            paths.extend(os.path.join(folder, f) for f in sorted(os.listdir(folder)))
    return [p for p in paths if p.endswith(".yaml")]


def register_schemas(event_logger: object) -> None:
    """Register the schemas with the server's EventLogger."""
    for path in schema_paths():
        event_logger.register_event_schema(pathlib.Path(path))  # type: ignore[attr-defined]


def forwarder(event_logger: object) -> Callable[[dict], None]:
    """A bus listener that emits each engine event through jupyter_events."""

    def forward(event: dict) -> None:
        schema_id = SCHEMA_IDS[event["type"]]
        event_logger.emit(schema_id=schema_id, data=event)  # type: ignore[attr-defined]

    return forward


class EventsHandler(MASWebSocket):
    """WS /api/mas/events: every engine event as one JSON object."""

    auth_action = "read"
    queue: ClientQueue | None = None
    _unsubscribe: Callable[[], None] | None = None

    @property
    def max_message_size(self) -> int:  # type: ignore[override]
        """Clients have nothing to send here."""
        return 4096

    @ws_authenticated
    async def get(self) -> None:
        """Authorize, then upgrade."""
        await self.pre_get()
        if not self.mas_app.recovered:
            await self.mas_app.ready()
        await super().get()

    def open(self) -> None:  # type: ignore[override]
        """Subscribe to the engine's events."""
        super().open()
        app = self.mas_app
        self.queue = ClientQueue(
            self, app.client_queue_chars, self._too_slow, app.client_stall_seconds, self._too_slow
        )
        self._unsubscribe = self.manager.events.subscribe(self._on_event)
        self.mas_app.sockets.add(self)

    def _on_event(self, event: dict) -> None:
        if self.queue is not None:
            self.queue.put(WHOLE, event)

    def _too_slow(self) -> None:
        self._end(CLOSE_TOO_SLOW, "client too slow: reconnect and re-read the state")

    def on_message(self, message: str | bytes) -> None:
        """Nothing to do: the stream is one way."""

    def _end(self, code: int, reason: str) -> None:
        self.on_close()
        self.close(code, reason)

    def on_close(self) -> None:
        """Unsubscribe and free the queue."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.queue is not None:
            self.queue.close()
            self.queue = None
        self.mas_app.sockets.discard(self)

    def shutdown(self) -> None:
        """The server is stopping."""
        self._end(CLOSE_SHUTDOWN, "server shutting down")


default_handlers = [(r"/api/mas/events", EventsHandler)]
