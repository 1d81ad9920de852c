"""`SessionList`: a live table of sessions and their workers, grouped by task.

It reads the sessions once, then follows the event stream (the events carry the full
session and worker records), re-reading everything after a reconnection. Activity shows as
colored states; a session with a waiting agent is highlighted. Buttons pause, resume, stop,
and open a console on the session's agent below the list.
"""

from __future__ import annotations

import threading
from typing import Any

import ipywidgets

from ..errors import MASClientError
from ..render import ACTIVITY_COLORS, activity_html, esc, status_html
from .cell import follow_events

WAITING_BACKGROUND = "#fff3e0"


def _state(worker: dict) -> str:
    return "exited" if worker.get("status") == "exited" else worker.get("activity") or "unknown"


class _Row:
    """The widgets of one session's row."""

    def __init__(self, panel: SessionList, sid: str) -> None:
        self.info = ipywidgets.HTML(layout=ipywidgets.Layout(flex="1 1 auto"))
        self.buttons = {}
        for action, icon in (
            ("pause", "pause"),
            ("resume", "play"),
            ("stop", "stop"),
            ("console", "terminal"),
        ):
            button = ipywidgets.Button(
                description=action,
                icon=icon,
                tooltip=f"{action} this session",
                layout=ipywidgets.Layout(width="auto"),
            )
            button.on_click(lambda _b, a=action: panel._act(sid, a))
            self.buttons[action] = button
        self.box = ipywidgets.HBox(
            [self.info, *self.buttons.values()],
            layout=ipywidgets.Layout(align_items="center", border_bottom="1px solid #eee"),
        )

    def show(self, session: dict) -> None:
        workers = session.get("workers") or []
        waiting = any(_state(w) == "waiting" for w in workers)
        parts = []
        for w in workers:
            icon = esc(w.get("persona_icon") or "")
            parts.append(f"{icon}{esc(w['name'])} {activity_html(_state(w))}")
        background = f"background:{WAITING_BACKGROUND};" if waiting else ""
        shown = " &nbsp; ".join(parts) or "<i>no workers</i>"
        self.info.value = (
            f"<div class='mas-session-row' data-waiting='{str(waiting).lower()}' "
            f"style='{background}padding:2px 6px'>"
            f"<b>{esc(session['name'])}</b> <small>{esc(session['kind'])}</small> "
            f"{status_html(session['status'])} &nbsp; {shown}"
            "</div>"
        )
        status = session["status"]
        running = any(w.get("status") in ("starting", "running") for w in workers)
        self.buttons["pause"].disabled = status != "active"
        self.buttons["resume"].disabled = status == "active"
        self.buttons["stop"].disabled = status == "stopped"
        self.buttons["console"].disabled = not running


class SessionList(ipywidgets.VBox):
    """The live session list: `SessionList()` on the default client, or `client=`."""

    def __init__(self, client: Any = None, task: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if client is None:
            from .. import connect

            client = connect()
        self.client = client
        self.task = task
        self.sessions: dict[str, dict] = {}
        self.rows: dict[str, _Row] = {}
        self.group_headers: dict[str, ipywidgets.HTML] = {}
        self.header = ipywidgets.HTML()
        self.message = ipywidgets.HTML()
        self.body = ipywidgets.VBox()
        self.console_box = ipywidgets.VBox()
        self.children = [self.header, self.body, self.message, self.console_box]
        self.lock = threading.RLock()  # held while the list changes or is redrawn
        self.updates = 0  # how many times the list was redrawn (tests wait on it)
        self.subscription: Any = None
        self.reload()
        self.subscription = follow_events(self, client, self._on_event, self.reload)

    # state

    def reload(self) -> None:
        """Re-read every session (at start and after the event stream reconnects)."""
        try:
            table = self.client.sessions(task=self.task)
        except MASClientError as e:
            self._say(f"could not read the sessions: {e.message}")
            return
        with self.lock:
            self.sessions = {s.id: s.data for s in table}
            self._draw()

    def _on_event(self, event: dict) -> None:
        kind, sid = event.get("type"), event.get("session_id")
        with self.lock:
            if kind in ("session-created", "session-updated", "session-stopped"):
                session = event.get("session") or {}
                if self.task is None or session.get("task") == self.task:
                    self.sessions[sid] = session
                else:
                    self.sessions.pop(sid, None)
            elif kind == "session-deleted":
                self.sessions.pop(sid, None)
            elif sid in self.sessions and kind in (
                "worker-created",
                "worker-exited",
                "activity-changed",
                "worker-deleted",
            ):
                session = self.sessions[sid]
                workers = [w for w in session.get("workers") or [] if w["id"] != event["worker_id"]]
                if kind != "worker-deleted" and isinstance(event.get("worker"), dict):
                    old = {w["id"]: i for i, w in enumerate(session.get("workers") or [])}
                    worker = event["worker"]
                    index = old.get(worker["id"], len(workers))
                    workers.insert(index, worker)
                session["workers"] = workers
            else:
                return
            self._draw()

    # drawing

    def _draw(self) -> None:
        groups: dict[str, list[dict]] = {}
        for session in self.sessions.values():
            groups.setdefault(session.get("task") or "", []).append(session)
        children: list[ipywidgets.Widget] = []
        waiting_total = workers_total = 0
        for task in sorted(groups, key=lambda t: (t == "", t)):
            sessions = groups[task]
            waiting = sum(
                1 for s in sessions for w in s.get("workers") or [] if _state(w) == "waiting"
            )
            workers = sum(len(s.get("workers") or []) for s in sessions)
            waiting_total += waiting
            workers_total += workers
            header = self.group_headers.setdefault(task, ipywidgets.HTML())
            label = f"task <b>{esc(task)}</b>" if task else "<b>no task</b>"
            alert = (
                f" · <span style='color:{ACTIVITY_COLORS['waiting']};font-weight:bold'>"
                f"{waiting} waiting</span>"
                if waiting
                else ""
            )
            header.value = (
                f"<div class='mas-task-group' style='margin-top:6px'>{label} · "
                f"{len(sessions)} session{'s' if len(sessions) != 1 else ''} · "
                f"{workers} worker{'s' if workers != 1 else ''}{alert}</div>"
            )
            children.append(header)
            for session in sessions:
                row = self.rows.get(session["id"])
                if row is None:
                    row = self.rows[session["id"]] = _Row(self, session["id"])
                row.show(session)
                children.append(row.box)
        for sid in list(self.rows):
            if sid not in self.sessions:
                self.rows.pop(sid).box.close()
        alert = (
            f" · <span style='color:{ACTIVITY_COLORS['waiting']};font-weight:bold'>"
            f"{waiting_total} waiting for you</span>"
            if waiting_total
            else ""
        )
        self.header.value = (
            f"<div class='mas-sessions-header'><b>mas sessions</b> · {len(self.sessions)} "
            f"session{'s' if len(self.sessions) != 1 else ''} · {workers_total} "
            f"worker{'s' if workers_total != 1 else ''}{alert}</div>"
        )
        if not self.sessions:
            children = [ipywidgets.HTML("<i>no sessions yet: %mas new --agent demo</i>")]
        self.body.children = children
        self.updates += 1

    def text(self) -> str:
        """The list as plain text (what the widget shows)."""
        with self.lock:
            lines = []
            for s in self.sessions.values():
                workers = ", ".join(f"{w['name']}:{_state(w)}" for w in s.get("workers") or [])
                lines.append(f"{s['name']} [{s['status']}] task={s.get('task') or '-'} {workers}")
            return "\n".join(lines) or "no sessions"

    def __repr__(self) -> str:
        return f"SessionList\n{self.text()}"

    # actions

    def _say(self, text: str) -> None:
        self.message.value = f"<div class='mas-message' style='color:#b71c1c'>{esc(text)}</div>"

    def _act(self, sid: str, action: str) -> None:
        self.message.value = ""
        try:
            if action == "console":
                self._open_console(sid)
            elif action == "stop":
                self.client.stop(sid)
            else:
                getattr(self.client, action)(sid)
        except MASClientError as e:
            extra = " ".join(e.errors)
            hint = " (stop it with %mas stop --force)" if action == "stop" and e.errors else ""
            self._say(f"{action}: {e.message} {extra if extra not in e.message else ''}{hint}")

    def _open_console(self, sid: str) -> None:
        from .console import WorkerConsole

        session = self.sessions.get(sid) or {}
        running = [
            w for w in session.get("workers") or [] if w.get("status") in ("starting", "running")
        ]
        agents = [w for w in running if w.get("kind") == "agent"]
        if not running:
            self._say("console: the session has no running worker")
            return
        worker = (agents or running)[0]
        for old in self.console_box.children:
            old.close()
        console = WorkerConsole(worker["id"], session=sid, client=self.client)
        close = ipywidgets.Button(description="close console", icon="times")
        close.on_click(lambda _b: self._close_console())
        self.console_box.children = [close, console]

    def _close_console(self) -> None:
        for child in self.console_box.children:
            child.close()
        self.console_box.children = []

    def close(self) -> None:
        """Stop following events and close every widget of the list."""
        if self.subscription is not None:
            self.subscription.close()
        self._close_console()
        for row in self.rows.values():
            row.box.close()
        super().close()
