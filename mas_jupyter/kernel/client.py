"""The Python client of mas_jupyter: the whole HTTP/WebSocket API (or the in-process engine)
as calls that return printable records.

    import mas_jupyter as mas
    client = mas.connect()
    s = client.create_session("churn", agent="demo")
    with client.use("churn"):
        print(client.send("summarise data.csv"))

Every call has a blocking form for cells and an async twin named with an `a` in front
(`client.sessions()` / `await client.asessions()`). Calls that act on a session or worker take
it as `session=` / `worker=` (a name, an id or a record); left out, the active ones are used
(`client.use(...)`). Errors raise `MASClientError` subclasses carrying the server's message.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

from ..core.models import ENDED_FOR_IT
from .channel import Channel, Handler
from .errors import Conflict, MASClientError, NoActiveSession
from .events import EventStream, Feed, Subscription
from .loop import LoopThread
from .outputs import ActivityLog, Output, Reply, Screen, Transcript
from .records import Catalog, Session, SessionTable, Worker, WorkerTable, aio, synced
from .render import no_workers_text

SessionRef = str | Session | None
WorkerRef = str | Worker | None
SECONDS = "a number of seconds more than 0"


def is_seconds(value: object) -> bool:
    """Whether `value` is a number of seconds: finite and more than 0 (`nan` and `inf` are
    floats, not times; a bool is not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and value > 0


def _check_timeout(value: object, optional: bool = False) -> None:
    """A ValueError naming `value` unless it is a number of seconds (or None, if optional)."""
    if not (is_seconds(value) or (optional and value is None)):
        raise ValueError(f"timeout must be {SECONDS}, not {value!r}")


def _key(ref: object) -> str | None:
    if isinstance(ref, (Session, Worker)):
        return ref.id
    return ref  # type: ignore[return-value]


class Use:
    """The active session and worker were set; as a context manager, restored on exit."""

    def __init__(self, client: MASClient, previous: tuple[str | None, str | None]) -> None:
        self.client = client
        self.previous = previous

    def __enter__(self) -> Session | None:
        name = self.client.active_session
        return self.client.session(name) if name else None

    def __exit__(self, *exc: object) -> None:
        self.client._active = self.previous

    def __repr__(self) -> str:
        session, worker = self.client._active
        if session is None:
            return "no active session"
        return f"active session: {session}" + (f", worker: {worker}" if worker else "")


@synced
class MASClient:
    """A connection to mas_jupyter: over HTTP to a Jupyter server, or to an in-process engine."""

    def __init__(self, transport: Any, loop: LoopThread, how: str = "explicit") -> None:
        self._transport = transport
        self._loop = loop
        self.how = how
        self._active: tuple[str | None, str | None] = (None, None)
        self._feed: Feed | None = None
        self._lock = threading.Lock()
        self.closed = False  # by close(): mas_jupyter.connect() makes a new default client

    @property
    def _client(self) -> MASClient:
        return self

    @property
    def url(self) -> str:
        """The server's URL, or "in-process (<root>)"."""
        return self._transport.url

    @property
    def in_process(self) -> bool:
        """Whether the engine runs in this process (no Jupyter server was found)."""
        return self._transport.kind == "local"

    def __repr__(self) -> str:
        where = self._transport.shown_url
        active = f", active session {self._active[0]!r}" if self._active[0] else ""
        return f"<MASClient {where} (found by: {self.how}){active}>"

    async def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._loop.arun(self._transport.call(op, *args, **kwargs))
        except MASClientError as e:  # the server's answer: its traceback starts at this call
            raise e.with_traceback(None)  # noqa: B904 (the same error, not a new one)

    # the active session and worker

    @property
    def active_session(self) -> str | None:
        """The active session's name or id, if one was set with use()."""
        return self._active[0]

    @property
    def active_worker(self) -> str | None:
        """The active worker's name or id, if one was set with use()."""
        return self._active[1]

    def use(self, session: SessionRef = None, worker: WorkerRef = None) -> Use:
        """Make a session (and worker) active; `with client.use(...):` restores on exit.

        Without arguments, clears them. The session is checked to exist first.
        """
        previous = self._active
        if session is None:
            self._active = (None, None)
        else:
            record = self.session(session)
            wkey = None
            if worker is not None:
                wkey = self.worker(worker, session=record.id).name
            self._active = (record.name, wkey)
        return Use(self, previous)

    def _sid(self, session: SessionRef) -> str:
        key = _key(session) or self._active[0]
        if not key:
            raise NoActiveSession(
                "no session given and none is active: pass session=..., or make one active "
                "with mas.use(NAME) (magics: %mas use NAME)",
                missing="session",
            )
        return key

    async def _ids(self, worker: WorkerRef, session: SessionRef) -> tuple[str, str]:
        if isinstance(worker, Worker) and session is None:
            return worker.session_key, worker.id
        sid = self._sid(session)
        wkey = _key(worker)
        if wkey:
            return sid, wkey
        if self._active[1] and (session is None or _key(session) == self._active[0]):
            return sid, self._active[1]
        workers = await self._call("list_workers", sid)
        if not workers:
            raise NoActiveSession(
                no_workers_text(sid, f"add_worker(backend='demo', session={sid!r})"),
                missing="worker",
                session=sid,
            )
        agents = [w for w in workers if w["kind"] == "agent"]
        return sid, (agents or workers)[0]["name"]

    # sessions

    @aio
    async def asessions(
        self, status: str | None = None, kind: str | None = None, task: str | None = None
    ) -> SessionTable:
        """Sessions with their workers, oldest first; filter by status, kind and task."""
        data = await self._call("list_sessions", status=status, kind=kind, task=task)
        return SessionTable(Session(self, s) for s in data)

    @aio
    async def asession(self, session: SessionRef = None) -> Session:
        """One session by name or id (the active one by default)."""
        return Session(self, await self._call("get_session", self._sid(session)))

    @aio
    async def acreate_session(
        self,
        name: str | None = None,
        kind: str = "quick",
        *,
        template: str | None = None,
        repo: str | None = None,
        branch: str | None = None,
        base: str | None = None,
        path: str | None = None,
        task: str | None = None,
        workers: list[dict] | None = None,
        agent: str | None = None,
        persona: str | None = None,
        env: dict | None = None,
        terminal: bool = False,
    ) -> Session:
        """Create a session; `agent=` (a backend, with `persona=` and `env=`) and
        `terminal=True` add first workers.

        kind: "quick" (a new folder from `template`), "worktree" (a git worktree of `repo`
        on `branch` from `base`) or "dir" (the existing folder `path`, shared).
        """
        spec: dict[str, Any] = {"kind": kind}
        optional = {"name": name, "template": template, "repo": repo, "branch": branch}
        optional.update(base=base, path=path, task=task)
        spec.update({k: v for k, v in optional.items() if v is not None})
        first = list(workers or [])
        if agent:
            worker: dict[str, Any] = {"kind": "agent", "backend": agent}
            if persona:
                worker["persona"] = persona
            if env:
                worker["env"] = dict(env)
            first.append(worker)
        elif persona or env:
            raise ValueError("persona= and env= need agent= (the backend that runs)")
        if terminal:
            first.append({"kind": "terminal", "name": "terminal"})
        if first:
            spec["workers"] = first
        return Session(self, await self._call("create_session", spec))

    @aio
    async def arename(self, name: str, session: SessionRef = None) -> Session:
        """Rename a session (an active session's new name stays active)."""
        sid = self._sid(session)
        data = await self._call("update_session", sid, {"name": name})
        if self._active[0] == sid:
            self._active = (data["name"], self._active[1])
        return Session(self, data)

    @aio
    async def aset_task(self, task: str | None, session: SessionRef = None) -> Session:
        """Set a session's task label (None clears it)."""
        return Session(self, await self._call("update_session", self._sid(session), {"task": task}))

    @aio
    async def apause(self, session: SessionRef = None) -> Session:
        """Pause: stop the processes, keep the workspace and what agents need to resume."""
        return Session(self, await self._call("pause_session", self._sid(session)))

    @aio
    async def aresume(self, session: SessionRef = None) -> Session:
        """Resume a paused or stopped session; agents continue their conversation."""
        return Session(self, await self._call("resume_session", self._sid(session)))

    @aio
    async def astop(self, session: SessionRef = None, force: bool = False) -> Session:
        """Stop a session; raises Conflict with `.errors`/`.warnings` unless forced.

        The returned session has the `warnings` the server gave (`session.warnings`).
        """
        return Session(self, await self._call("stop_session", self._sid(session), force=force))

    @aio
    async def adelete(
        self, session: SessionRef, purge: bool = False, force: bool = False
    ) -> str | None:
        """Delete a session (always named explicitly); purge also removes its workspace (a
        dir session's folder is the user's: only its transcripts go).

        Returns the rescue ref where a forced purge of a worktree saved its uncommitted
        changes (`git show REF` in the repository), or None when nothing was saved.
        """
        if session is None:
            raise NoActiveSession("delete needs the session named explicitly")
        sid = _key(session)
        rescue_ref = await self._call("delete_session", sid, purge=purge, force=force)
        if self._active[0] in (sid, getattr(session, "name", None)):
            self._active = (None, None)
        return rescue_ref

    @aio
    async def aactivities(
        self, session: SessionRef = None, limit: int | None = None, since: int | None = None
    ) -> ActivityLog:
        """A session's activity log, oldest first (`since` a seq, `limit` the newest N); each
        entry about a worker names it (`log.worker_name(entry)`)."""
        sid = self._sid(session)
        log = ActivityLog(await self._call("list_activities", sid, limit=limit, since=since))
        if log.unnamed():  # activity-changed entries carry only the worker's id
            workers = await self._call("list_workers", sid)
            log.workers.update({w["id"]: w["name"] for w in workers})
        return log

    @aio
    async def aconnect_info(self, session: SessionRef = None) -> dict:
        """How to reach a session: workspace, each worker's channel and tmux attach command."""
        return await self._call("connect_info", self._sid(session))

    # workers

    @aio
    async def aworkers(self, session: SessionRef = None) -> WorkerTable:
        """A session's workers."""
        data = await self._call("list_workers", self._sid(session))
        return WorkerTable(Worker(self, w) for w in data)

    @aio
    async def aworker(self, worker: WorkerRef = None, session: SessionRef = None) -> Worker:
        """One worker (by default the active one, else the session's first agent)."""
        sid, wid = await self._ids(worker, session)
        return Worker(self, await self._call("get_worker", sid, wid))

    @aio
    async def aadd_worker(
        self,
        name: str | None = None,
        kind: str | None = None,
        backend: str | None = None,
        persona: str | None = None,
        runtime: str | None = None,
        cols: int | None = None,
        rows: int | None = None,
        env: dict | None = None,
        session: SessionRef = None,
    ) -> Worker:
        """Start a worker: an agent (`backend=`, optional `persona=`) or a terminal."""
        spec = {"name": name, "kind": kind, "backend": backend, "persona": persona}
        spec.update(runtime=runtime, cols=cols, rows=rows, env=env)
        spec = {k: v for k, v in spec.items() if v is not None}
        return Worker(self, await self._call("create_worker", self._sid(session), spec))

    @aio
    async def adelete_worker(self, worker: WorkerRef, session: SessionRef = None) -> None:
        """Kill a worker's processes and remove it (the worker is named explicitly)."""
        if worker is None:
            raise NoActiveSession("delete_worker needs the worker named explicitly")
        sid, wid = await self._ids(worker, session)
        await self._call("delete_worker", sid, wid)
        if self._active[1] == wid:
            self._active = (self._active[0], None)

    @aio
    async def asend(
        self,
        text: str,
        worker: WorkerRef = None,
        session: SessionRef = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Reply:
        """Send a message; with wait (the default) return the reply when the agent is done
        (waiting `timeout` seconds at most, 600 by default; the server takes up to 3600)."""
        _check_timeout(timeout, optional=True)
        sid, wid = await self._ids(worker, session)
        data = await self._call("send_message", sid, wid, text, wait=wait, timeout=timeout)
        name = worker.name if isinstance(worker, Worker) else str(wid)
        return Reply(self, data, worker=name)

    @aio
    async def ainput(self, data: str, worker: WorkerRef = None, session: SessionRef = None) -> None:
        """Type raw keystrokes into a worker ("\\r" is Enter, "\\x03" Ctrl-C)."""
        sid, wid = await self._ids(worker, session)
        await self._call("write_input", sid, wid, data)

    @aio
    async def ascreen(self, worker: WorkerRef = None, session: SessionRef = None) -> Screen:
        """A worker's rendered screen, cursor and activity."""
        sid, wid = await self._ids(worker, session)
        return Screen(self, await self._call("get_screen", sid, wid))

    @aio
    async def aoutput(
        self, tail: int | None = None, worker: WorkerRef = None, session: SessionRef = None
    ) -> Output:
        """A worker's recent raw output (the last `tail` bytes)."""
        sid, wid = await self._ids(worker, session)
        return Output(self, await self._call("get_output", sid, wid, tail=tail))

    @aio
    async def atranscript(
        self,
        offset: int = 0,
        limit: int = 500,
        worker: WorkerRef = None,
        session: SessionRef = None,
    ) -> Transcript:
        """A page of a worker's transcript records."""
        sid, wid = await self._ids(worker, session)
        data = await self._call("get_transcript", sid, wid, offset=offset, limit=limit)
        return Transcript(self, data)

    @aio
    async def arestart(self, worker: WorkerRef = None, session: SessionRef = None) -> Worker:
        """Restart a worker; an agent continues its conversation."""
        sid, wid = await self._ids(worker, session)
        return Worker(self, await self._call("restart_worker", sid, wid))

    @aio
    async def aresize(
        self, cols: int, rows: int, worker: WorkerRef = None, session: SessionRef = None
    ) -> Worker:
        """Set a worker's terminal size."""
        sid, wid = await self._ids(worker, session)
        return Worker(self, await self._call("resize_worker", sid, wid, cols, rows))

    def wait_ready(
        self, worker: WorkerRef = None, session: SessionRef = None, timeout: float = 60.0
    ) -> Worker:
        """Wait until a worker is at its prompt (idle) or asks something (waiting).

        Agents print a banner first; a message sent before they are ready gets it in its
        reply. Raises Conflict if the worker exits first, MASClientError on timeout.
        """
        _check_timeout(timeout)
        deadline = time.monotonic() + timeout
        with self.events() as stream:
            record = self.worker(worker, session=session)
            wid, sid = record.id, record.session_key
            while record.data.get("activity") not in ("idle", "waiting"):
                if record.status == "exited":
                    reason = record.data.get("exit_reason")
                    if reason in ENDED_FOR_IT:  # a pause, a stop, a delete: not its own exit
                        raise Conflict(
                            f"worker {record.name!r} was stopped before it was ready: "
                            f"{ENDED_FOR_IT[reason]}"
                        )
                    how = "" if record.exit_code is None else f" (code {record.exit_code})"
                    raise Conflict(
                        f"worker {record.name!r} exited{how} before it was ready; see its "
                        "output with %mas screen or client.output()"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MASClientError(
                        f"worker {record.name!r} was not ready within {timeout:g} s "
                        f"(it is {record.data.get('activity')})",
                        reason="timeout",
                    )
                stream.wait_for(lambda e: e.get("worker_id") == wid, left)
                # Re-read rather than trust the event: a persona's first message makes an
                # agent busy in the same instant it first became idle.
                record = self.worker(wid, session=sid)
        return record

    async def await_ready(
        self, worker: WorkerRef = None, session: SessionRef = None, timeout: float = 60.0
    ) -> Worker:
        """The async twin of wait_ready."""
        return await asyncio.to_thread(self.wait_ready, worker, session, timeout)

    def wait_agents_ready(self, session: SessionRef = None, timeout: float = 60.0) -> Session:
        """Wait until each agent of a session is ready (`wait_ready`, one after the other),
        as after creating or resuming it; the session then, its agents `idle` or `waiting`
        instead of `unknown`."""
        record = self.session(session)
        for agent in [w for w in record.workers if w.kind == "agent"]:
            self.wait_ready(agent.id, session=record.id, timeout=timeout)
        return self.session(record.id)

    # what can be used

    @aio
    async def abackends(self) -> Catalog:
        """Agent backends, with whether each can run here (and why not)."""
        data = await self._call("list_backends")
        return Catalog(data, ["name", "kind", "available", "description", "reason"])

    @aio
    async def apersonas(self) -> Catalog:
        """Personas (roles) an agent can play."""
        return Catalog(await self._call("list_personas"), ["icon", "name", "title"])

    @aio
    async def atemplates(self) -> Catalog:
        """Templates for quick sessions."""
        return Catalog(await self._call("list_templates"), ["name"])

    # events and consoles

    def _event_feed(self) -> Feed:
        with self._lock:
            if self._feed is None:
                self._feed = Feed(self)
            return self._feed

    def events(self, timeout: float | None = None) -> EventStream:
        """An iterator over events from now on (ends after `timeout` s without one)."""
        _check_timeout(timeout, optional=True)
        return EventStream(self._event_feed(), timeout)

    def aevents(self, timeout: float | None = None) -> EventStream:
        """The same stream for `async for` (waits off the event loop)."""
        return self.events(timeout)

    def subscribe(self, callback: Any, on_connect: Any = None) -> Subscription:
        """Call `callback(event)` for each event in a thread of its own; `on_connect()` after
        each (re)connection. Returns the subscription (close() it)."""
        return Subscription(self._event_feed(), callback, on_connect)

    @aio
    async def achannel(
        self, on_message: Handler, worker: WorkerRef = None, session: SessionRef = None
    ) -> Channel:
        """Connect to a worker's console; `on_message(kind, payload)` gets its messages."""
        sid, wid = await self._ids(worker, session)
        if not (_looks_like_id(sid) and _looks_like_id(wid)):
            record = await self._call("get_worker", sid, wid)
            sid, wid = record["session_id"], record["id"]
        channel = Channel(self, sid, wid, on_message)
        return await self._loop.arun(channel.open())

    def close(self) -> None:
        """Close the event feed and the HTTP client (an in-process engine stops its workers)."""
        self.closed = True
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        if self.in_process:
            self._transport.shutdown()
        else:
            self._loop.call_soon(self._transport.close)


def _looks_like_id(key: str) -> bool:
    return len(key) == 36 and key.count("-") == 4
