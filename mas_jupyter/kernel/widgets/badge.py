"""`ActivityBadge`: one worker's activity as a colored label, kept live from events."""

from __future__ import annotations

from typing import Any

import ipywidgets

from ..render import activity_html, esc
from .cell import follow_events


class ActivityBadge(ipywidgets.HTML):
    """A worker's name, persona icon and activity (busy, idle, waiting...), updated live."""

    def __init__(self, worker: Any = None, session: Any = None, client: Any = None) -> None:
        if client is None:
            from .. import connect

            client = connect()
        record = (
            client.worker(worker, session=session)
            if isinstance(worker, str) or (worker is None)
            else worker
        )
        super().__init__()
        self.client = client
        self.worker_id = record.id
        self.data = dict(record.data)
        self._show()
        self.subscription: Any = None
        self.subscription = follow_events(self, client, self._on_event, self._reload)

    @property
    def state(self) -> str:
        """The activity shown (or 'exited')."""
        if self.data.get("status") == "exited":
            return "exited"
        return self.data.get("activity") or "unknown"

    def __repr__(self) -> str:
        # The text a front end without widgets shows (ipywidgets' would be the HTML).
        icon = self.data.get("persona_icon")
        return f"<ActivityBadge {f'{icon} ' if icon else ''}{self.data.get('name')} {self.state}>"

    def _show(self) -> None:
        icon = esc(self.data.get("persona_icon") or "")
        self.value = (
            f"<span class='mas-badge'>{icon} <b>{esc(self.data.get('name'))}</b> "
            f"{activity_html(self.state)}</span>"
        )

    def _on_event(self, event: dict) -> None:
        if event.get("worker_id") != self.worker_id:
            return
        if event["type"] == "worker-deleted":
            self.data["status"] = "exited"
        elif isinstance(event.get("worker"), dict):
            self.data.update(event["worker"])
        if event["type"] == "activity-changed":
            self.data["activity"] = event.get("activity")
        self._show()

    def _reload(self) -> None:
        try:
            fresh = self.client.worker(self.worker_id, session=self.data["session_id"])
        except Exception:  # gone meanwhile: keep the last known state
            return
        self.data.update(fresh.data)
        self._show()

    def close(self) -> None:
        """Stop following events and close the widget."""
        if self.subscription is not None:
            self.subscription.close()
        super().close()
