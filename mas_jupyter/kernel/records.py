"""Sessions and workers as the client returns them (and their tables and catalogs), each
printable and rendered richly (and safely) in a notebook; replies, screens and logs are in
`outputs`.

Every record keeps the JSON the API gave (`.data`) and reads its fields as attributes. Methods
of `Session` and `Worker` are the client's calls with the record filled in; each has an async
twin named with an `a` in front (`worker.send` / `await worker.asend`).
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import MASClientError
from .render import (
    activity_html,
    esc,
    status_html,
    table_html,
    table_text,
)

if TYPE_CHECKING:
    from .client import MASClient
    from .outputs import ActivityLog, Output, Reply, Screen, Transcript


def aio(fn: Callable) -> Callable:
    """Mark `async def aname` as having a synchronous twin `name` (made by `synced`)."""
    fn._mas_async = True  # type: ignore[attr-defined]
    return fn


def synced(cls: type) -> type:
    """Give every `@aio` coroutine method `aname` a blocking twin `name` on the client's loop."""
    for attr, fn in list(vars(cls).items()):
        if not getattr(fn, "_mas_async", False):
            continue

        def make(fn: Callable, name: str) -> Callable:
            @functools.wraps(fn)
            def sync(self: Any, *args: Any, **kwargs: Any) -> Any:
                try:
                    return self._client._loop.run(fn(self, *args, **kwargs))
                except MASClientError as e:  # a refusal: no frames of the loop's hand-off
                    raise e.with_traceback(None)  # noqa: B904 (the same error, not a new one)

            sync.__name__ = name
            sync.__qualname__ = f"{cls.__name__}.{name}"
            return sync

        setattr(cls, attr[1:], make(fn, attr[1:]))
    return cls


class Record:
    """A JSON object from the API with attribute access."""

    def __init__(self, client: MASClient | None, data: dict) -> None:
        self._client = client
        self.data = data

    def __getattr__(self, name: str) -> Any:
        data = self.__dict__.get("data")
        if data is not None and name in data:
            return data[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.data == self.data  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]


def _worker_state(w: dict) -> str:
    return "exited" if w.get("status") == "exited" else (w.get("activity") or "unknown")


@synced
class Worker(Record):
    """A process in a session (an agent or a terminal)."""

    @property
    def session_key(self) -> str:
        """The id of the session this worker belongs to."""
        return self.data["session_id"]

    @property
    def state(self) -> str:
        """The activity, or 'exited'."""
        return _worker_state(self.data)

    def __repr__(self) -> str:
        persona = f" persona={self.data.get('persona')}" if self.data.get("persona") else ""
        exit_info = ""
        if self.data.get("status") == "exited":
            exit_info = f" exit_code={self.data.get('exit_code')}"
        return (
            f"<Worker {self.name} {self.kind}/{self.backend}{persona} {self.status} "
            f"{self.data.get('activity', 'unknown')}{exit_info}>"
        )

    def _repr_html_(self) -> str:
        icon = esc(self.data.get("persona_icon") or "")
        return (
            f"<span class='mas-worker'>{icon} <b>{esc(self.name)}</b> "
            f"<code>{esc(self.kind)}/{esc(self.backend)}</code> {esc(self.status)} "
            f"{activity_html(self.state)}</span>"
        )

    def _key(self) -> tuple[str, str]:
        return self.data["session_id"], self.data["id"]

    @aio
    async def arefresh(self) -> Worker:
        """This worker as it is now."""
        sid, wid = self._key()
        return await self._client.aworker(wid, session=sid)

    @aio
    async def asend(self, text: str, wait: bool = True, timeout: float | None = None) -> Reply:
        """Send a message; with wait, the agent's reply once it is idle or waiting again."""
        sid, wid = self._key()
        return await self._client.asend(text, worker=wid, session=sid, wait=wait, timeout=timeout)

    @aio
    async def ainput(self, data: str) -> None:
        """Type raw keystrokes (e.g. "y\\r", "\\x03" for Ctrl-C)."""
        sid, wid = self._key()
        return await self._client.ainput(data, worker=wid, session=sid)

    @aio
    async def ascreen(self) -> Screen:
        """The rendered terminal screen."""
        sid, wid = self._key()
        return await self._client.ascreen(worker=wid, session=sid)

    @aio
    async def aoutput(self, tail: int | None = None) -> Output:
        """Recent raw output (the last `tail` bytes)."""
        sid, wid = self._key()
        return await self._client.aoutput(tail=tail, worker=wid, session=sid)

    @aio
    async def atranscript(self, offset: int = 0, limit: int = 500) -> Transcript:
        """A page of the transcript (input, output, activity, exit records)."""
        sid, wid = self._key()
        return await self._client.atranscript(offset, limit, worker=wid, session=sid)

    @aio
    async def arestart(self) -> Worker:
        """Restart; an agent continues its conversation."""
        sid, wid = self._key()
        return await self._client.arestart(worker=wid, session=sid)

    @aio
    async def aresize(self, cols: int, rows: int) -> Worker:
        """Set the terminal size."""
        sid, wid = self._key()
        return await self._client.aresize(cols, rows, worker=wid, session=sid)

    @aio
    async def adelete(self) -> None:
        """Kill the worker and remove it."""
        sid, wid = self._key()
        return await self._client.adelete_worker(wid, session=sid)

    def console(self, **kwargs: Any) -> Any:
        """An interactive terminal widget attached to this worker."""
        from .widgets.console import WorkerConsole

        return WorkerConsole(self, client=self._client, **kwargs)

    def badge(self) -> Any:
        """A live activity badge widget."""
        from .widgets.badge import ActivityBadge

        return ActivityBadge(self, client=self._client)


@synced
class Session(Record):
    """A unit of work with its own workspace, and its workers."""

    @property
    def workers(self) -> list[Worker]:
        """The workers, as of when this record was read."""
        return [Worker(self._client, w) for w in self.data.get("workers") or []]

    def __repr__(self) -> str:
        task = f" task={self.data.get('task')!r}" if self.data.get("task") else ""
        workers = ", ".join(f"{w['name']}({_worker_state(w)})" for w in self.data["workers"])
        return (
            f"<Session {self.name} {self.kind} {self.status}{task} "
            f"workers=[{workers}] workspace={self.data.get('workspace_path') or self.workspace}>"
        )

    def _repr_html_(self) -> str:
        task = f" · task <i>{esc(self.task)}</i>" if self.data.get("task") else ""
        head = (
            f"<div><b>{esc(self.name)}</b> · {esc(self.kind)} · {status_html(self.status)}{task}"
            f" · <code>{esc(self.data.get('workspace_path') or self.workspace)}</code></div>"
        )
        rows = [
            [
                esc(w.get("persona_icon") or ""),
                esc(w["name"]),
                esc(w["kind"]),
                esc(w["backend"]),
                esc(w["status"]),
                activity_html(_worker_state(w)),
            ]
            for w in self.data.get("workers") or []
        ]
        headers = ["", "worker", "kind", "backend", "status", "activity"]
        return head + (table_html(headers, rows, raw=True) if rows else "<div>no workers</div>")

    def worker(self, name: str | None = None) -> Worker:
        """One of its workers (by name or id; the default worker when none is given)."""
        return self._client.worker(name, session=self.id)

    def use(self, worker: str | None = None) -> Any:
        """Make this the active session (and `worker` the active worker)."""
        return self._client.use(self.id, worker)

    @aio
    async def arefresh(self) -> Session:
        """This session as it is now."""
        return await self._client.asession(self.id)

    @aio
    async def arename(self, name: str) -> Session:
        """Give the session a new name."""
        return await self._client.arename(name, session=self.id)

    @aio
    async def aset_task(self, task: str | None) -> Session:
        """Set (or clear, with None) the task label."""
        return await self._client.aset_task(task, session=self.id)

    @aio
    async def apause(self) -> Session:
        """Stop the processes, keeping the workspace; resume() continues."""
        return await self._client.apause(self.id)

    @aio
    async def aresume(self) -> Session:
        """Make it active again; agents continue their conversation."""
        return await self._client.aresume(self.id)

    @aio
    async def astop(self, force: bool = False) -> Session:
        """End it; refused (Conflict with .errors) on busy agents or worktree changes."""
        return await self._client.astop(self.id, force=force)

    @aio
    async def adelete(self, purge: bool = False, force: bool = False) -> str | None:
        """Forget it; purge also removes the workspace. The rescue ref, as client.delete."""
        return await self._client.adelete(self.id, purge=purge, force=force)

    @aio
    async def alist_workers(self) -> list[Worker]:
        """Its workers as they are now."""
        return await self._client.aworkers(self.id)

    @aio
    async def aadd_worker(self, name: str | None = None, **spec: Any) -> Worker:
        """Start a worker here (kind, backend, persona, runtime, cols, rows, env)."""
        return await self._client.aadd_worker(name, session=self.id, **spec)

    @aio
    async def aactivities(self, limit: int | None = None, since: int | None = None) -> ActivityLog:
        """The activity log."""
        return await self._client.aactivities(self.id, limit=limit, since=since)

    @aio
    async def aconnect_info(self) -> dict:
        """Workspace, console channels and tmux attach commands."""
        return await self._client.aconnect_info(self.id)


def deleted_text(session: Session, purged: bool, rescue_ref: str | None) -> str:
    """What deleting `session` did, to follow "deleted NAME": what the purge removed (a dir
    session's folder is the user's: only its transcripts go), and where a forced purge saved a
    worktree's uncommitted changes, with the git commands that show them and get them back."""
    text = ""
    if purged and session.kind == "dir":
        text = f" and its transcripts; its folder {session.workspace} is kept (it is yours)"
    elif purged:
        text = " and its workspace"
    if rescue_ref:
        git = f"git -C {shlex.quote(session.repo)}"
        text += (
            f"\nits uncommitted changes are saved on {rescue_ref}: `{git} show {rescue_ref}` "
            f"shows them, `{git} branch NAME {rescue_ref}` keeps them on branch NAME (your "
            "checkout is left as it is)"
        )
    return text


class SessionTable(list):
    """A list of sessions that prints as a table."""

    def _rows(self) -> list[list[str]]:
        return [
            [
                s.name,
                s.kind,
                s.status,
                s.data.get("task") or "",
                ", ".join(f"{w['name']}:{_worker_state(w)}" for w in s.data["workers"]),
            ]
            for s in self
        ]

    def __repr__(self) -> str:
        if not self:
            return "no sessions"
        return table_text(["session", "kind", "status", "task", "workers"], self._rows())

    def _repr_html_(self) -> str:
        if not self:
            return "<i>no sessions</i>"
        rows = []
        for s in self:
            workers = " ".join(
                esc(w.get("persona_icon") or "")
                + f"{esc(w['name'])} {activity_html(_worker_state(w))}"
                for w in s.data["workers"]
            )
            rows.append(
                [esc(s.name), esc(s.kind), status_html(s.status), esc(s.data.get("task")), workers]
            )
        return table_html(["session", "kind", "status", "task", "workers"], rows, raw=True)


class WorkerTable(list):
    """A list of workers that prints as a table."""

    def __repr__(self) -> str:
        if not self:
            return "no workers"
        rows = [[w.name, w.kind, w.backend, w.persona or "", w.status, w.state] for w in self]
        return table_text(["worker", "kind", "backend", "persona", "status", "activity"], rows)

    def _repr_html_(self) -> str:
        if not self:
            return "<i>no workers</i>"
        rows = [
            [
                esc(w.data.get("persona_icon") or ""),
                esc(w.name),
                esc(w.kind),
                esc(w.backend),
                esc(w.status),
                activity_html(w.state),
            ]
            for w in self
        ]
        return table_html(["", "worker", "kind", "backend", "status", "activity"], rows, raw=True)


class Catalog(list):
    """Backends, personas or templates: dicts that print as a table of `columns`."""

    def __init__(self, items: list[dict], columns: list[str]) -> None:
        super().__init__(items)
        self.columns = columns

    def _cell(self, item: dict, column: str) -> str:
        value = item.get(column)
        if isinstance(value, list):
            return " ".join(map(str, value))
        return "" if value is None else str(value)

    def names(self) -> list[str]:
        """The names of the items."""
        return [item["name"] for item in self]

    def __repr__(self) -> str:
        return table_text(self.columns, [[self._cell(i, c) for c in self.columns] for i in self])

    def _repr_html_(self) -> str:
        return table_html(self.columns, [[self._cell(i, c) for c in self.columns] for i in self])
