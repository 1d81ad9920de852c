"""The engine's manager: configuration, session lifecycle, recovery and events.

`MASManager` owns all state. Every public method validates its input, changes the store
before it answers, emits events, and returns JSON-ready dicts (what the REST API sends).
Workers are run by the `Supervisor` it holds (`supervisor.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
from traitlets import Bool, Dict, Enum, Float, Int, List, Unicode, default, observe
from traitlets.config import LoggingConfigurable

from . import faults, validate
from .errors import ConflictError, InvalidError, LimitError, MASError, NotFoundError
from .events import EventBus
from .models import (
    ROW_CREATING,
    ROW_DELETING,
    ROW_PURGING,
    ROW_PURGING_FORCED,
    ROW_READY,
    Session,
    now,
)
from .root_lock import RootLock
from .store import Store, StoreError, sessions_limit_error
from .supervisor import Supervisor
from .worker_operations import WorkerOperations
from .workspaces import Workspaces, describe_changes

CREATE_FIELDS = {"name", "kind", "template", "repo", "branch", "base", "path", "task", "workers"}
UPDATE_FIELDS = {"name", "task"}
NULLABLE_FIELDS = {"task"}  # null is "no task"; any other field given as null is a 400
# How often the engine marks itself alive (RootLock.beat, one utime): after a kill -9, the
# sessions it left are paused as of its last mark, so at most this much of their last run is
# lost (a session made after the mark counted none of it at 30 s) or of the downtime counted.
HEARTBEAT_SECONDS = 5.0


class MASManager(WorkerOperations, LoggingConfigurable):
    """Runs agent and terminal sessions in isolated workspaces; the one owner of their state."""

    root_dir = Unicode(
        help="The directory relative paths are resolved from. The server sets it to its "
        "root_dir; by default the current directory."
    ).tag(config=True)

    @default("root_dir")
    def _default_root_dir(self) -> str:
        return os.getcwd()

    sessions_root = Unicode(
        "",
        help="Where quick and worktree workspaces are created, and where the state database "
        "lives (in its .mas folder). Default: 'mas-sessions' inside root_dir, so the file "
        "browser can open workspaces.",
    ).tag(config=True)
    db_path = Unicode(
        "", help="The SQLite state database. Default: <sessions_root>/.mas/state.sqlite."
    ).tag(config=True)
    templates_dir = Unicode(
        "",
        help="A directory whose subdirectories are extra templates for quick sessions "
        "(next to the built-in 'default').",
    ).tag(config=True)
    personas_dir = Unicode(
        "",
        help="A directory of <name>.md persona files (optional 'icon:' and 'title:' lines, "
        "then the instructions) added to the built-in pm, qa and specialist.",
    ).tag(config=True)
    backends = Dict(
        help="Agent backends merged over the built-ins: name -> {argv, resume_argv, env, "
        "instructions_file, patterns: {idle, busy, waiting}, submit, paste, ...}. An invalid "
        "entry is logged at start-up and listed unavailable with why; the others work."
    ).tag(config=True)
    allowed_roots = List(
        Unicode(),
        help="Directories that worktree repositories and dir sessions must be inside. "
        "Default: [root_dir].",
    ).tag(config=True)
    default_runtime = Enum(
        ["pty", "tmux"],
        "pty",
        help="How workers are held: 'pty' (a child of the server) or 'tmux' (a detached tmux "
        "session that survives a server restart).",
    ).tag(config=True)
    tmux_socket = Unicode(
        "mas",
        help="The tmux server workers run in: a socket name (tmux -L) or, with a '/', a "
        "socket path (tmux -S). Attach with `tmux -L mas attach -t <tmux_session>`.",
    ).tag(config=True)
    max_sessions = Int(100, help="Sessions that may exist at once, not counting stopped ones.").tag(
        config=True
    )
    max_workers_per_session = Int(8, help="Workers one session may have.").tag(config=True)
    max_workers = Int(64, help="Workers all sessions together may have.").tag(config=True)
    max_input_bytes = Int(
        1024 * 1024, help="The largest input (keystrokes or a message) accepted at once, in bytes."
    ).tag(config=True)
    output_buffer_bytes = Int(
        1024 * 1024,
        help="Recent raw output kept per worker, in bytes, replayed to a reconnecting console.",
    ).tag(config=True)
    transcript_max_bytes = Int(
        32 * 1024 * 1024,
        help="The largest transcript file per worker; output beyond it is cut with a marker.",
    ).tag(config=True)
    kill_timeout = Float(
        2.0,
        help="Seconds to wait after each of SIGHUP and SIGTERM before escalating to SIGKILL "
        "when stopping a worker.",
    ).tag(config=True)
    default_cols = Int(120, help="Terminal width of a new worker.").tag(config=True)
    default_rows = Int(40, help="Terminal height of a new worker.").tag(config=True)
    entry_point_backends = Bool(
        True, help="Load backends from the 'mas_jupyter.backends' entry-point group."
    ).tag(config=True)

    @observe("backends", "entry_point_backends")
    def _backends_changed(self, _change: dict) -> None:
        supervisor = getattr(self, "supervisor", None)  # none yet while __init__ configures
        if supervisor is not None:
            supervisor.forget_backends()

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.events = EventBus()
        self._store: Store | None = None
        self._locks: list[RootLock] = []  # held from start() to shutdown()
        self._heartbeat: asyncio.TimerHandle | None = None
        self._cache: _Listing | None = None
        self._encoded: tuple[tuple, bytes, str] | None = None
        self._changes: dict[str, list] = {}  # session id -> [its lock, how many hold or wait]
        self.workspaces = self._workspaces()
        self.supervisor = Supervisor(self)

    # configuration, resolved

    @property
    def resolved_sessions_root(self) -> str:
        """The sessions root as an absolute real path."""
        root = self.sessions_root or os.path.join(self.root_dir, "mas-sessions")
        return os.path.realpath(os.path.join(self.root_dir, os.path.expanduser(root)))

    @property
    def resolved_allowed_roots(self) -> list[str]:
        """The allowed roots as absolute real paths."""
        roots = self.allowed_roots or [self.root_dir]
        return [os.path.realpath(os.path.join(self.root_dir, os.path.expanduser(r))) for r in roots]

    def _workspaces(self) -> Workspaces:
        return Workspaces(self.resolved_sessions_root, self.resolved_allowed_roots, self.root_dir)

    @property
    def store(self) -> Store:
        """The open store (start() opens it)."""
        if self._store is None:
            raise RuntimeError("MASManager.start() has not been called")
        return self._store

    # lifecycle of the manager

    def start(self) -> None:
        """Open the store and the sessions root; fails clearly, never replaces a bad database."""
        if self._store is not None:
            return
        # Built here, not in __init__, so configuration set after construction is honoured.
        self.workspaces = self._workspaces()
        try:
            self.workspaces.ensure_root()
            _ignore_in_outer_repo(self.workspaces.root)
        except OSError as exc:
            raise StoreError(
                f"cannot use the sessions root {self.workspaces.root}: "
                f"{exc.strerror or exc}; set c.MASManager.sessions_root to a folder this "
                "server can write"
            ) from None
        path = self.db_path or os.path.join(self.workspaces.state_dir, "state.sqlite")
        locks = [RootLock(os.path.join(self.workspaces.state_dir, "engine.lock"),
                          f"the sessions root {self.workspaces.root}")]  # fmt: skip
        if self.db_path:
            locks.append(RootLock(path + ".lock", f"the state database {path}"))
        try:
            for lock in locks:
                lock.acquire()
                self._locks.append(lock)
            self._store = Store(path)
        except BaseException:
            self._release_locks()
            raise
        # Checked now so that each invalid backend entry is logged once, at start-up.
        self.supervisor.check_backends()

    def _release_locks(self) -> None:
        for lock in self._locks:
            lock.release()
        self._locks.clear()

    async def recover(self) -> dict:
        """Finish or undo what a crash left half-done, and reconcile worker processes."""
        self.start()
        report: dict = {"finished": 0, "undone": 0, "deleted": 0, "kept": 0, "rescued": []}
        self.workspaces.clear_rescue_indexes()
        if self.store.created:  # a new database: take back the sessions the workspaces hold
            report["reindexed"] = len((await self.reindex())["added"])
            self.store.created = False
        for session in self.store.list_sessions(row_state=ROW_CREATING):
            if self._metadata_matches(session):
                self.store.update_session(session.id, row_state=ROW_READY)
                report["finished"] += 1
            else:
                await self._undo_create(session)
                report["undone"] += 1
        # Finished as asked: a purge without force is refused if the worktree has changes
        # now (the crash may have come before the check, or a worker wrote since).
        for state in (ROW_DELETING, ROW_PURGING, ROW_PURGING_FORCED):
            for session in self.store.list_sessions(row_state=state):
                try:
                    done = await self._finish_delete(
                        session, purge=state != ROW_DELETING, force=state == ROW_PURGING_FORCED
                    )
                except MASError as e:  # one session's workspace must not stop the others
                    self._keep_after_failed_purge(session, e)
                    report["kept"] += 1
                    continue
                report["deleted"] += 1
                if done["rescue_ref"]:  # its session is gone: the log is where the user looks
                    report["rescued"].append(done["rescue_ref"])
                    self.log.warning(
                        "the purge of session %s, left unfinished, is done; its worktree's "
                        "changes are on %s in %s (git show %s)",
                        session.name, done["rescue_ref"], session.repo, done["rescue_ref"],
                    )  # fmt: skip
        repos = {s.repo for s in self.store.list_sessions(kind="worktree") if s.repo}
        for repo in repos:
            await self.workspaces.prune(repo)
        report["workers"], interrupted = await self.supervisor.reconcile()
        # Paused as of when the killed server was last known alive, not now: its downtime
        # is not active time.
        died_at = self._locks[0].holder_died_at if self._locks else None
        report["paused"] = self._pause_without_workers(interrupted, "interrupted", at=died_at)
        self._beat()
        return report

    def _beat(self) -> None:
        """Mark this engine alive now, and again every HEARTBEAT_SECONDS until shutdown."""
        for lock in self._locks:
            lock.beat()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        loop = asyncio.get_running_loop()
        self._heartbeat = loop.call_later(HEARTBEAT_SECONDS, self._beat)

    async def shutdown(self) -> None:
        """Stop pty workers, detach from tmux workers, close the store."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        stopped = await self.supervisor.shutdown()
        if stopped:
            self._pause_without_workers(stopped, "server stopped")
        if self._store is not None:
            self._store.close()
            self._store = None
        self._release_locks()

    def _pause_without_workers(
        self, session_ids: set[str], reason: str, at: float | None = None
    ) -> int:
        """Pause the active sessions whose workers the server's stop (or death) ended and
        that have none running now: one resume brings them all back, agents continuing
        their conversation. A session with a tmux worker that lives on stays active. `at`:
        when they stopped being active (now by default)."""
        paused = 0
        for session_id in session_ids:
            session = self.store.get_session(session_id)
            if session is None or session.status != "active":
                continue
            if any(w.status != "exited" for w in self.store.list_workers(session_id)):
                continue
            self._set_status(session, "paused", at=at)
            self._log(session, "paused", reason=reason)
            self.events.emit("session-updated", session.id, session=self.session_dict(session))
            paused += 1
        return paused

    def _metadata_matches(self, session: Session) -> bool:
        data = self.workspaces.read_metadata(self.workspaces.metadata_path(session))
        return bool(data and data.get("id") == session.id)

    async def _undo_create(self, session: Session) -> None:
        if session.kind == "quick":
            self.workspaces.clear_staging(session.id)
        elif session.kind == "worktree":
            await self.workspaces.undo_worktree(session)
        self.workspaces.remove_metadata(session)
        self.store.undo_insert(session)

    # sessions

    def _session(self, key: object, any_state: bool = False) -> Session:
        if not isinstance(key, str) or not key:
            raise InvalidError("a session id or name is required")
        session = self.store.get_session(key, any_state=any_state)
        if session is None:
            raise NotFoundError(f"no session with id or name {key!r}")
        return session

    @contextlib.asynccontextmanager
    async def _one_change(self, session_id: str) -> AsyncIterator[None]:
        """Hold the session for one change (see `_changing`)."""
        entry = self._changes.get(session_id)
        if entry is None:
            entry = self._changes[session_id] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._changes[session_id]

    @contextlib.asynccontextmanager
    async def _changing(self, key: object) -> AsyncIterator[Session]:
        """The session, for one change at a time: pause, resume, stop, delete, a worker's
        creation, restart or deletion.

        Each waits for the change before it and then sees the session as that change left it:
        a pause racing a new worker, or a delete racing a pause, no longer interleave (a
        worker left running in a paused session, a purged workspace written again), and the
        second of two deletes is a 404.
        """
        session = self._session(key)
        async with self._one_change(session.id):
            yield self._session(session.id)

    def session_dict(self, session: Session, workers: list[dict] | None = None) -> dict:
        """A session as the API shows it, with its workers (found unless given)."""
        data = session.to_dict()
        data["workspace_path"] = self.workspaces.browser_path(session.workspace)
        data["workers"] = self.supervisor.worker_dicts(session.id) if workers is None else workers
        return data

    def get_session(self, key: str) -> dict:
        """One session by id or name."""
        return self.session_dict(self._session(key))

    def list_sessions(
        self, status: str | None = None, kind: str | None = None, task: str | None = None
    ) -> list[dict]:
        """Sessions, oldest first, filtered by status, kind and task.

        The dicts are shared with a cache: callers serialize them, never change them.
        """
        if status is not None:
            validate.choice(status, ("active", "paused", "stopped"), "status")
        if kind is not None:
            validate.session_kind(kind)
        return [
            data
            for data in self._listing()
            if (status is None or data["status"] == status)
            and (kind is None or data["kind"] == kind)
            and (task is None or data["task"] == task)
        ]

    def list_sessions_json(
        self, status: str | None = None, kind: str | None = None, task: str | None = None
    ) -> tuple[bytes, str]:
        """The same listing as UTF-8 JSON and its entity tag (a hash of it), both made once
        per change of the listing and filters.

        With hundreds of sessions, encoding and hashing the body cost more than everything
        else in a request.
        """
        rows = self.list_sessions(status=status, kind=kind, task=task)
        assert self._cache is not None
        key = (self._cache.version, self._cache.at, status, kind, task)
        if self._encoded is None or self._encoded[0] != key:
            body = orjson.dumps(rows)
            self._encoded = (key, body, f'"{hashlib.sha1(body).hexdigest()}"')
        return self._encoded[1], self._encoded[2]

    def _listing(self) -> list[dict]:
        # Every session with its workers, rebuilt when the store changed (any write, activity
        # changes included) or the personas did. In between, only the active sessions'
        # `active_seconds` move on: refreshed at most once a second, without a rebuild (which
        # asks the store and formats every worker: the request that paid for it every second
        # was the listing's p99).
        at = time.monotonic()
        version, personas = self.store.version, self.supervisor.personas()
        cache = self._cache
        if cache is None or cache.version != version or cache.personas is not personas:
            workers = self.supervisor.worker_dicts_by_session()
            sessions = self.store.list_sessions()
            rows = []
            for session in sessions:
                data = session.to_dict()
                data["workspace_path"] = self.workspaces.browser_path(session.workspace)
                data["workers"] = workers.get(session.id, [])
                rows.append(data)
            self._cache = _Listing(version, personas, at, sessions, rows)
        elif at - cache.at > 1.0:
            wall = now()
            cache.rows = [
                {**data, "active_seconds": round(session.total_active_seconds(wall), 3)}
                if session.accruing
                else data
                for session, data in zip(cache.sessions, cache.rows, strict=True)
            ]
            cache.at = at
        return self._cache.rows

    async def create_session(self, spec: dict) -> dict:
        """Create a session and its workspace (and its initial workers); all input checked first."""
        if not isinstance(spec, dict):
            raise InvalidError("the session spec must be an object")
        validate.closed_fields(spec, CREATE_FIELDS, "a session")
        validate.no_nulls(spec, NULLABLE_FIELDS, "a session")
        kind = validate.session_kind(spec.get("kind", "quick"))
        name = validate.optional_name(spec.get("name"), "name")
        task = validate.task(spec.get("task"))
        allowed = {
            "quick": {"template"},
            "worktree": {"repo", "branch", "base"},
            "dir": {"path"},
        }[kind]
        for field in ("template", "repo", "branch", "base", "path"):
            if field in spec and field not in allowed:
                raise InvalidError(f"{field!r} does not apply to a {kind} session", field=field)
        worker_specs = spec.get("workers", [])
        if not isinstance(worker_specs, list):
            raise InvalidError("workers must be a list of worker specs")
        checked_workers = [
            self.supervisor.check_spec(w, index=i) for i, w in enumerate(worker_specs)
        ]
        names = [w["name"] for w in checked_workers if w["named"]]
        if len(set(names)) != len(names):
            raise InvalidError("worker names must be unique within a session")
        for w in checked_workers:  # unnamed: the backend's name, or the next free one
            if not w["named"]:
                w["name"] = validate.next_free(w["name"], names)
                w["named"] = True
                names.append(w["name"])
        if len(checked_workers) > self.max_workers_per_session:
            # The limit POST .../workers meets: the same error (429), not bad input.
            raise LimitError(
                f"a session may have at most {self.max_workers_per_session} workers "
                f"(MASManager.max_workers_per_session); {len(checked_workers)} were given"
            )
        if checked_workers and self.store.count_workers() + len(checked_workers) > self.max_workers:
            raise LimitError(
                f"{len(checked_workers)} more workers would pass the limit of "
                f"{self.max_workers} workers (MASManager.max_workers); delete a worker first"
            )

        session = Session(
            id=str(uuid.uuid4()),
            name=name or "",
            kind=kind,
            workspace="",
            task=task,
            row_state=ROW_CREATING,
            status="active",
            active_since=now(),
        )
        template_dir = None
        if kind == "quick":
            session.template = spec.get("template", "default")
            template_dir = self.supervisor.template_dir(session.template)
        elif kind == "worktree":
            if "repo" not in spec:
                raise InvalidError(
                    "a worktree session needs 'repo', the repository to branch", field="repo"
                )
            if "branch" in spec:
                validate.branch(spec["branch"])
            session.base = validate.revision(spec.get("base", "HEAD"))
            session.repo = self.workspaces.resolve_repo(spec["repo"])
        else:
            if "path" not in spec:
                raise InvalidError(
                    "a dir session needs 'path', an existing directory", field="path"
                )
            session.workspace = self.workspaces.resolve_dir(spec["path"])

        def plan(s: Session) -> None:
            if s.kind != "dir":
                s.workspace = self.workspaces.plan_path(s.name, s.id)
            if s.kind == "worktree":
                s.branch = spec["branch"] if "branch" in spec else validate.branch(f"mas/{s.name}")

        self.store.insert_session(
            session, generate_name=name is None, plan=plan, limit=self.max_sessions
        )
        faults.point("session:row-inserted")
        try:
            if kind == "quick" and self.workspaces.is_small(template_dir):
                # Copying a few small files costs less than a hop to a thread and back.
                self.workspaces.create_quick(session, template_dir)
            elif kind == "quick":
                await asyncio.to_thread(self.workspaces.create_quick, session, template_dir)
            elif kind == "worktree":
                await self.workspaces.create_worktree(session)
            else:
                self.workspaces.write_metadata(session)
        except BaseException:
            await self._undo_create(session)
            raise
        faults.point("session:workspace-created")
        # The metadata file was written with the workspace (status active, active since the
        # row was inserted): only the row's state changes now.
        session.row_state = ROW_READY
        self.store.mark_ready(session.id, {"kind": kind, "workspace": session.workspace})
        faults.point("session:ready")
        created = self.session_dict(session, workers=[])
        self.events.emit("session-created", session.id, session=created)
        if not checked_workers:
            return {**created, "workers": []}
        async with self._one_change(session.id):
            try:
                for worker_spec in checked_workers:
                    await self.supervisor.create_worker(session, worker_spec)
            except BaseException:
                # All or nothing: a session whose workers could not all start is not left
                # half-made (a retry would meet its name, or its branch).
                self.store.update_session(session.id, row_state=ROW_PURGING_FORCED)
                if session.kind == "worktree":
                    await self.supervisor.forget_all(session)
                    await self.workspaces.undo_worktree(session)  # the branch it made, too
                await self._finish_delete(session, purge=True, force=True)
                raise
        return self.session_dict(self._session(session.id))

    def update_session(self, key: str, changes: dict) -> dict:
        """Rename a session and/or set its task."""
        session = self._session(key)
        if not isinstance(changes, dict):
            raise InvalidError("the update must be an object")
        validate.closed_fields(changes, UPDATE_FIELDS, "a session update")
        values: dict[str, object] = {}
        if "name" in changes:
            new = validate.name(changes["name"])
            if new != session.name:
                values["name"] = new
        if "task" in changes:
            new_task = validate.task(changes["task"])
            if new_task != session.task:
                values["task"] = new_task
        if values:
            old_name = session.name
            self.store.update_session(session.id, **values)
            session = self._session(session.id)
            self.workspaces.write_metadata(session)
            if "name" in values:
                self._log(session, "renamed", old=old_name, new=session.name)
            if "task" in values:
                self._log(session, "task-changed", task=session.task)
            self.events.emit("session-updated", session.id, session=self.session_dict(session))
        return self.session_dict(session)

    async def pause_session(self, key: str) -> dict:
        """Stop a session's processes, keeping its workspace and what its agents need to resume."""
        async with self._changing(key) as session:
            return await self._pause(session)

    async def _pause(self, session: Session) -> dict:
        if session.status != "active":
            raise ConflictError(f"session {session.name!r} is {session.status}, not active")
        await self.supervisor.stop_all(session, reason="paused")
        session = self._session(session.id)  # renamed meanwhile, perhaps
        self._set_status(session, "paused")
        self._log(session, "paused")
        self.events.emit("session-updated", session.id, session=self.session_dict(session))
        return self.session_dict(session)

    async def resume_session(self, key: str) -> dict:
        """Make a paused or stopped session active again; agents continue their conversation."""
        async with self._changing(key) as session:
            return await self._resume(session)

    async def _resume(self, session: Session) -> dict:
        if session.status == "active":
            raise ConflictError(f"session {session.name!r} is already active")
        if not os.path.isdir(session.workspace):
            raise ConflictError(
                f"the workspace {session.workspace} of session {session.name!r} is gone; "
                "it cannot be resumed"
            )
        self.workspaces.require_in_place(session)
        if session.status == "stopped" and self.store.count_sessions(stopped=False) >= (
            self.max_sessions
        ):  # a stopped session does not count; resumed, it would pass the limit
            raise sessions_limit_error(self.max_sessions)
        self._set_status(session, "active")
        self._log(session, "resumed")
        await self.supervisor.resume_all(session)
        self.events.emit("session-updated", session.id, session=self.session_dict(session))
        return self.session_dict(session)

    async def check_stop(self, key: str) -> dict:
        """What stopping a session would hit: blocking `errors` and mere `warnings`."""
        problems = await self._stop_problems(self._session(key))
        return {"errors": problems["errors"], "warnings": problems["warnings"]}

    async def _stop_problems(self, session: Session) -> dict:
        errors: list[str] = []
        warnings: list[str] = []
        try:
            changes = await self.workspaces.changes(session)
        except ConflictError as e:  # its state cannot be told: not clean
            changes = []
            errors.append(str(e))  # (the refusal's callers say how force stops anyway)
        if changes:
            errors.append(f"the worktree has {describe_changes(changes)}; commit them first")
        errors.extend(self.supervisor.stop_blockers(session.id))
        # What a stop will do (a refusal's preview), then what it leaves as it is (a stop's
        # answer says only these: the rest is done by then).
        left: list[str] = []
        if session.kind == "dir":
            left.append(f"{session.workspace} is shared; its files are left as they are")
        warnings.extend(self.supervisor.stop_warnings(session.id))
        return {"errors": errors, "warnings": [*warnings, *left], "left": left}

    async def stop_session(self, key: str, force: bool = False) -> dict:
        """End a session: refused on blocking problems unless forced; the workspace is kept."""
        validate.boolean(force, "force")
        async with self._changing(key) as session:
            return await self._stop(session, force)

    async def _stop(self, session: Session, force: bool) -> dict:
        if session.status == "stopped":
            raise ConflictError(f"session {session.name!r} is already stopped")
        problems = await self._stop_problems(session)
        if problems["errors"] and not force:
            raise ConflictError(
                f"session {session.name!r} was not stopped: " + "; ".join(problems["errors"]),
                errors=problems["errors"],
                warnings=problems["warnings"],
                reason="stop_refused",
            )
        await self.supervisor.stop_all(session, reason="stopped")
        session = self._session(session.id)  # renamed meanwhile, perhaps
        self._set_status(session, "stopped")
        self._log(session, "stopped", forced=bool(force and problems["errors"]))
        data = self.session_dict(session)
        self.events.emit("session-stopped", session.id, session=data)
        return {**data, "warnings": problems["left"]}

    async def delete_session(self, key: str, purge: bool = False, force: bool = False) -> dict:
        """Stop everything and forget the session; purge also removes its workspace."""
        validate.boolean(purge, "purge")
        validate.boolean(force, "force")
        async with self._changing(key) as session:
            if purge:  # before anything is stopped
                await self.workspaces.require_purgeable(session, force)
            state = ROW_DELETING
            if purge:
                state = ROW_PURGING_FORCED if force else ROW_PURGING
            self.store.update_session(session.id, row_state=state)
            faults.point("session:deleting")
            try:
                return await self._finish_delete(session, purge=purge, force=force)
            except MASError as e:  # its workspace could not be saved or removed: it stays
                self._keep_after_failed_purge(session, e)
                raise type(e)(
                    f"{e.message}; its workers were stopped first, and the session is kept, "
                    "stopped",
                    **e.details,
                ) from None

    def _keep_after_failed_purge(self, session: Session, error: MASError) -> None:
        """A purge that could not save a worktree's changes (or tell what they are) removed
        nothing of the workspace: the session comes back, stopped, its workers stopped, its
        log saying why, instead of a row hidden as `purging` that every start would try
        again. Deleting it without purge forgets it and keeps the folder."""
        for record in self.store.list_workers(session.id):
            if record.exit_reason == "deleted":
                self.store.update_worker(record.id, exit_reason="stopped")
        session = self.store.get_session(session.id, any_state=True) or session
        self.store.update_session(session.id, row_state=ROW_READY)
        session.row_state = ROW_READY
        if session.status != "stopped":
            self._set_status(session, "stopped")
        self._log(session, "purge-failed", error=str(error))
        self.events.emit("session-updated", session.id, session=self.session_dict(session))
        self.log.warning("session %s was kept: its purge failed: %s", session.name, error)

    async def _finish_delete(self, session: Session, purge: bool, force: bool) -> dict:
        written = self.instructions_files()
        await self.supervisor.forget_all(session)
        rescued = None
        if purge:
            rescued = await self.workspaces.remove(session, force=force, instructions=written)
        else:  # the folder stays, as it was before the session's personas were written
            await self.workspaces.remove_personas(session, written)
            self.workspaces.remove_metadata(session)
        self.store.delete_session(session.id)
        self.events.emit(
            "session-deleted", session.id, session={"id": session.id, "name": session.name}
        )
        return {"id": session.id, "name": session.name, "purged": purge, "rescue_ref": rescued}

    def instructions_files(self) -> list[str]:
        """The instructions files a persona may have been written into: every backend's, as
        a backend's configuration may have changed since (what is taken out of them is only
        the engine's marked section)."""
        backends = self.supervisor.backends.values()
        return sorted(
            {
                b.instructions_file
                for b in backends
                if b.instructions_file and b.persona_delivery == "file"
            }
        )

    def _set_status(self, session: Session, status: str, at: float | None = None) -> None:
        at = now() if at is None else at
        if session.status == "active" and status != "active":
            session.active_seconds = session.total_active_seconds(at)
            session.active_since = None
        elif status == "active":
            session.active_since = at
        session.status = status
        self.store.update_session(
            session.id,
            status=status,
            active_seconds=session.active_seconds,
            active_since=session.active_since,
        )
        self.workspaces.write_metadata(session)

    def _log(
        self, session: Session, type: str, worker_id: str | None = None, **detail: object
    ) -> None:
        self.store.add_activity(session.id, type, worker_id, detail)

    def list_activities(self, key: str, limit: object = None, since: object = None) -> list[dict]:
        """A session's activity log, oldest first; `since` a seq, `limit` the newest N."""
        session = self._session(key)
        lim = None if limit is None else validate.integer(limit, "limit", 1, 10000)
        after = None if since is None else validate.integer(since, "since", 0, 2**62)
        return [a.to_dict() for a in self.store.list_activities(session.id, lim, after)]

    async def reindex(self) -> dict:
        """Rebuild missing session rows from the metadata files found in workspaces."""
        added, skipped = [], 0
        for data in self.workspaces.scan():
            if self.store.get_session(data["id"], any_state=True) is not None:
                skipped += 1
                continue
            try:
                session = Session(**{k: data[k] for k in Session.__dataclass_fields__ if k in data})
            except TypeError:
                skipped += 1
                continue
            if session.status == "active":
                session.active_seconds = session.total_active_seconds()
                session.status, session.active_since = "paused", None
            session.row_state = ROW_READY
            if self.store.get_session(session.name, any_state=True) is not None:
                session.name = f"{session.name}-{session.id[:8]}"
            self.store.insert_session(session, generate_name=False)
            self._log(session, "reindexed", workspace=session.workspace)
            self.events.emit("session-created", session.id, session=self.session_dict(session))
            added.append(session.name)
        return {"added": added, "skipped": skipped}


def _ignore_in_outer_repo(root: str) -> None:
    # The sessions root often sits inside the user's own repository: keep it out of git status.
    path = os.path.join(root, ".gitignore")
    if not os.path.exists(path):
        with open(path, "w") as fh:
            fh.write("# mas_jupyter workspaces; each is its own folder or git worktree\n*\n")


@dataclass
class _Listing:
    """The session listing as last built: see `MASManager._listing`."""

    version: int
    personas: dict  # the supervisor's personas when built (a new dict when they change)
    at: float  # time.monotonic() of the last build or refresh
    sessions: list[Session]
    rows: list[dict]  # shared with callers, who serialize them and never change them
