"""The engine's in-process event bus: the server, the kernel client and tests subscribe."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .models import iso, now

SESSION_EVENTS = ("session-created", "session-updated", "session-stopped", "session-deleted")
WORKER_EVENTS = ("worker-created", "worker-exited", "worker-deleted", "activity-changed")
EVENT_TYPES = SESSION_EVENTS + WORKER_EVENTS

Listener = Callable[[dict], None]
log = logging.getLogger(__name__)


class EventBus:
    """Delivers each event, synchronously and in order, to every subscriber."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call listener(event) for every event from now on; returns the unsubscribe function."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def emit(
        self, type: str, session_id: str, worker_id: str | None = None, **data: object
    ) -> dict:
        """Build an event and hand it to every subscriber; a failing subscriber is logged only."""
        assert type in EVENT_TYPES, type
        event = {"type": type, "session_id": session_id, "worker_id": worker_id, "time": iso(now())}
        event.update(data)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a subscriber's bug must not break the engine
                log.exception("event listener failed for %s", type)
        return event
