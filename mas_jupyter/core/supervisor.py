"""Runs the workers of all sessions: start, stop, resume, and reconcile after a restart.

The store holds each worker's row (status, pid, process start time, argv, exit); the
supervisor holds the live side (`LiveWorker`) and keeps the two in step. Every state change is
written to the store before it is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from typing import TYPE_CHECKING

from . import faults, processes, validate
from .backends import Backend, find_template, list_templates, load_backends
from .errors import ConflictError, InvalidError, LimitError, NotFoundError, UnavailableError
from .models import Worker, how_it_ended
from .personas import first_message as persona_message
from .personas import load_personas, section_owner, write_instructions
from .runtimes import tmux as tmux_runtime
from .screen import strip_ansi
from .transcript import append_exit
from .worker import LiveWorker, transcript_path

if TYPE_CHECKING:
    from .manager import MASManager
    from .models import Session

SPEC_FIELDS = {"name", "kind", "backend", "persona", "runtime", "cols", "rows", "env"}
SPEC_NULLABLE = {"persona"}  # null is "no persona"; any other field given as null is a 400
# Why a worker ended when a resume of its session would start it again.
ENDED_TO_RESUME = ("paused", "server stopped", "interrupted")
# Variables a worker never inherits from the server: Jupyter's tokens and our own internals.
_PRIVATE_PREFIXES = ("JUPYTER", "JPY_", "JUPYTERHUB_", "MAS_FAULT", "TMUX")


def base_env() -> dict[str, str]:
    """The server's environment without its secrets, as every child starts with."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_PRIVATE_PREFIXES)}
    env.update(TERM="xterm-256color", COLORTERM="truecolor")
    env.setdefault("LANG", "C.UTF-8")
    return env


def worker_marks(session: Session, record: Worker) -> dict[str, str]:
    """The variables every worker's environment has (`validate.WORKER_MARKS`)."""
    return {
        "MAS_SESSION": session.name,
        "MAS_SESSION_ID": session.id,
        "MAS_WORKER": record.name,
        "MAS_WORKSPACE": session.workspace,
    }


def _mtime(folder: str | None) -> float | None:
    try:
        return os.stat(folder).st_mtime if folder else None
    except OSError:
        return None


class Supervisor:
    """The live side of workers; the manager delegates every worker operation here."""

    def __init__(self, manager: MASManager) -> None:
        self.manager = manager
        self.live: dict[str, LiveWorker] = {}
        # Workers whose delete is under way: from the start of their stop until their row is
        # gone. No console attaches to them (`delete_begun`); they are gone to consoles.
        self.being_deleted: set[str] = set()
        self._backends: dict[str, Backend] | None = None
        self._create_lock: asyncio.Lock | None = None
        self._persona_tasks: set[asyncio.Task] = set()
        self._personas: tuple[tuple, dict] | None = None
        self._tmux: tmux_runtime.Tmux | None = None

    # what can be used

    @property
    def backends(self) -> dict[str, Backend]:
        """Built-in, configured and entry-point backends (loaded once, and again after the
        configuration changes). An invalid entry is in it as unavailable, with why."""
        if self._backends is None:
            return self.check_backends()
        return self._backends

    def check_backends(self) -> dict[str, Backend]:
        """Load the backends now, logging one warning for each invalid entry (the manager
        calls it when it starts, so the server log says so at start-up)."""
        self._backends = load_backends(
            self.manager.backends, entry_points=self.manager.entry_point_backends
        )
        for name, backend in sorted(self._backends.items()):
            if backend.invalid:
                self.manager.log.warning(
                    "mas_jupyter: backend %r is unavailable: %s", name, backend.invalid
                )
        return self._backends

    def forget_backends(self) -> None:
        """Load the backends again when next used (the configuration changed)."""
        self._backends = None

    def personas(self) -> dict:
        """Built-in and configured personas (re-read when files are added to or removed from the
        personas folder; edits to a file show after a restart)."""
        folder = self.manager.personas_dir or None
        stamp = (folder, _mtime(folder))
        if self._personas is None or self._personas[0] != stamp:
            self._personas = (stamp, load_personas(folder))
        return self._personas[1]

    def templates(self) -> dict[str, str]:
        """Template name -> directory."""
        return list_templates(self.manager.templates_dir or None)

    def template_dir(self, name: object) -> str:
        """The directory of a template by name (checked), or a not-found error listing them."""
        validate.name(name, "template")
        path = find_template(str(name), self.manager.templates_dir or None)
        if path is None:
            raise NotFoundError(
                f"no template named {name!r}; available: {', '.join(sorted(self.templates()))}"
            )
        return path

    @property
    def tmux(self) -> tmux_runtime.Tmux:
        """The tmux server that tmux workers live in."""
        if self._tmux is None or self._tmux.socket != self.manager.tmux_socket:
            env_dir = os.path.join(self.manager.workspaces.state_dir, "tmux-env")
            self._tmux = tmux_runtime.Tmux(self.manager.tmux_socket, base_env(), env_dir)
        return self._tmux

    def backend(self, name: str) -> Backend:
        """A backend by name, or a clear not-found error."""
        if name not in self.backends:
            usable = sorted(n for n, b in self.backends.items() if b.availability()[0])
            missing = sorted(set(self.backends) - set(usable))
            words = f"no backend named {name!r}; available: {', '.join(usable) or 'none'}"
            if missing:  # known here, but their program is not installed
                words += f" (not installed: {', '.join(missing)})"
            raise NotFoundError(words)
        return self.backends[name]

    def startable_backend(self, name: str) -> Backend:
        """A backend by name that may be started: not one whose configuration is invalid.
        (Whether its program is installed is left to check_spec and to starting it.)"""
        backend = self.backend(name)
        if backend.invalid:
            raise UnavailableError(f"backend {name!r} is unavailable: {backend.invalid}")
        return backend

    # specs

    def check_spec(self, spec: object, index: int = 0) -> dict:
        """Validate a worker spec before anything is created; returns it normalized."""
        if not isinstance(spec, dict):
            raise InvalidError(f"worker spec #{index + 1} must be an object")
        validate.closed_fields(spec, SPEC_FIELDS, "a worker")
        validate.no_nulls(spec, SPEC_NULLABLE, "a worker")
        kind = spec.get("kind")
        if kind is not None:
            validate.worker_kind(kind)
        if "backend" in spec:
            backend_name = spec["backend"]
            if not isinstance(backend_name, str) or not backend_name:
                raise InvalidError(
                    "backend must be a non-empty string, a name from GET /api/mas/backends"
                )
        elif kind in (None, "terminal"):
            backend_name = "shell"
        else:
            raise InvalidError("an agent worker needs 'backend' (see GET /api/mas/backends)")
        backend = self.backend(backend_name)
        ok, reason = backend.availability()
        if not ok:
            raise UnavailableError(f"backend {backend_name!r} is unavailable: {reason}")
        if kind not in (None, backend.kind):
            raise InvalidError(
                f"backend {backend_name!r} runs a worker of kind {backend.kind!r}, not {kind!r}; "
                "leave 'kind' out or pick a backend of that kind (see GET /api/mas/backends)"
            )
        persona = spec.get("persona")
        if persona is not None:
            validate.name(persona, "persona")
            if persona not in self.personas():
                raise NotFoundError(
                    f"no persona named {persona!r}; available: {', '.join(sorted(self.personas()))}"
                )
            if backend.kind != "agent":
                raise InvalidError(
                    f"a persona is for agents; backend {backend_name!r} runs a {backend.kind}"
                )
        runtime = validate.choice(
            spec.get("runtime", self.manager.default_runtime), ("pty", "tmux"), "runtime"
        )
        if runtime == "tmux" and not tmux_runtime.available():
            raise UnavailableError("the tmux runtime needs tmux installed; use runtime 'pty'")
        return {
            "name": validate.name(spec.get("name", backend_name), "worker name"),
            # Without a name, the backend's is taken, or the next free one (`demo-2`).
            "named": "name" in spec,
            "kind": kind or backend.kind,
            "backend": backend_name,
            "persona": persona,
            "runtime": runtime,
            "cols": validate.integer(
                spec.get("cols", self.manager.default_cols), "cols", *validate.COLS
            ),
            "rows": validate.integer(
                spec.get("rows", self.manager.default_rows), "rows", *validate.ROWS
            ),
            "env": validate.env(spec.get("env")),
        }

    # creating and starting

    async def create_worker(self, session: Session, spec: dict) -> dict:
        """Start a new worker in an active session; spec comes from check_spec."""
        if session.status != "active":
            raise ConflictError(
                f"session {session.name!r} is {session.status}; resume it before adding workers"
            )
        store = self.manager.store
        if self._create_lock is None:
            self._create_lock = asyncio.Lock()
        async with self._create_lock:
            if store.count_workers(session.id) >= self.manager.max_workers_per_session:
                raise LimitError(
                    f"session {session.name!r} has {self.manager.max_workers_per_session} "
                    "workers, its limit (MASManager.max_workers_per_session)"
                )
            if store.count_workers() >= self.manager.max_workers:
                raise LimitError(
                    f"the limit of {self.manager.max_workers} workers is reached "
                    "(MASManager.max_workers); delete a worker first"
                )
            backend = self.backend(spec["backend"])
            name = spec["name"]
            if not spec["named"]:
                name = validate.next_free(name, {w.name for w in store.list_workers(session.id)})
            record = Worker(
                id=str(uuid.uuid4()),
                session_id=session.id,
                name=name,
                kind=spec["kind"],
                backend=spec["backend"],
                argv=list(backend.argv),
                persona=spec["persona"],
                runtime=spec["runtime"],
                cols=spec["cols"],
                rows=spec["rows"],
                env=spec["env"],
            )
            if record.runtime == "tmux":
                record.tmux_name = tmux_runtime.session_name(session.id, record.name)
            store.insert_worker(record)
        faults.point("worker:row-inserted")
        first_message = None
        try:  # a worker that did not start is forgotten: its name is free again
            self.manager.workspaces.require_in_place(session)
            if record.persona:
                persona = self.personas()[record.persona]
                context = {
                    "session": session.name,
                    "task": session.task or "(none set)",
                    "workspace": session.workspace,
                    "worker": record.name,
                }
                holder = self._persona_holder(session, backend, record.name)
                if holder or not write_instructions(session.workspace, backend, persona, context):
                    first_message = persona_message(persona, context)
                if holder:
                    self.manager.log.info(
                        "worker %s gets its persona as its first message: %s holds the persona "
                        "of worker %s",
                        record.name,
                        backend.instructions_file,
                        holder,
                    )
            await self._launch(session, record, resume=False)
        except BaseException:
            store.delete_worker(record.id)
            raise
        self.manager.store.add_activity(
            session.id,
            "worker-created",
            record.id,
            {"name": record.name, "backend": record.backend},
        )
        data = self.worker_dict(record)
        self.manager.events.emit("worker-created", session.id, record.id, worker=data)
        if first_message:
            task = asyncio.ensure_future(self._deliver_persona(record.id, first_message))
            self._persona_tasks.add(task)
            task.add_done_callback(self._persona_tasks.discard)
        return data

    async def _deliver_persona(self, worker_id: str, text: str) -> None:
        live = self.live.get(worker_id)
        if live is not None and await live.wait_for(("idle",), timeout=60):
            with contextlib.suppress(Exception):
                live.submit(text, self.manager.max_input_bytes)

    def _persona_holder(self, session: Session, backend: Backend, name: str) -> str | None:
        """Another worker of the session whose persona the backend's instructions file holds.

        A file holds one persona (every agent reading it would take it as its own), so a
        second worker that would write into it gets its persona as its first message instead.
        """
        if not backend.instructions_file or backend.persona_delivery != "file":
            return None
        owner = section_owner(session.workspace, backend.instructions_file)
        if owner and owner != name and self.manager.store.get_worker(session.id, owner):
            return owner
        return None

    def _child_env(self, session: Session, record: Worker, backend: Backend) -> dict[str, str]:
        env = base_env()
        env.update(backend.env)
        env.update(record.env)
        env.update(worker_marks(session, record))  # last: a backend's env cannot set them
        return env

    def _argv(self, session: Session, record: Worker, backend: Backend, resume: bool) -> list[str]:
        """The worker's command: its backend's, resuming, and naming the instructions file
        when the file holds this worker's persona (or one an earlier version wrote)."""
        instructions = bool(
            record.persona
            and backend.instructions_args
            and backend.instructions_file
            and section_owner(session.workspace, backend.instructions_file) in (record.name, "")
        )
        return backend.command(
            resume=resume and record.kind == "agent",
            instructions=instructions,
            conversation_id=record.conversation_id,
        )

    async def _launch(self, session: Session, record: Worker, resume: bool) -> LiveWorker:
        backend = self.startable_backend(record.backend)
        argv = self._argv(session, record, backend, resume)
        if not os.path.isdir(session.workspace):
            raise ConflictError(f"the workspace {session.workspace} is gone")
        live = self._live_worker(session, record, backend)
        env = self._child_env(session, record, backend)
        previous = self.live.get(record.id)
        if previous is not None:
            previous.close()  # the process before (exited): its output goes with it
        try:
            if record.runtime == "tmux":
                if record.tmux_name and await self.tmux.exists(record.tmux_name):
                    await self.tmux.kill_session(record.tmux_name)
                await live.start_tmux(self.tmux, argv, session.workspace, env)
            else:
                live.start_pty(argv, session.workspace, env)
        except BaseException:
            live.close()  # its transcript file, its terminal if it had one
            raise
        faults.point("worker:process-started")  # its row does not say so yet
        self.live[record.id] = live
        self._mark_running(record, live, argv)
        faults.point("worker:spawned")
        live.evaluate_soon()
        return live

    def _live_worker(self, session: Session, record: Worker, backend: Backend) -> LiveWorker:
        return LiveWorker(
            record,
            backend,
            transcript_path(self.manager.workspaces.transcripts(session), record),
            self,
            ring_bytes=self.manager.output_buffer_bytes,
            transcript_bytes=self.manager.transcript_max_bytes,
            max_input_queue=max(4 * 1024 * 1024, 2 * self.manager.max_input_bytes),
        )

    def _mark_running(self, record: Worker, live: LiveWorker, argv: list[str]) -> None:
        record.status, record.pid, record.pgid = "running", live.pid, live.pid
        record.start_time = processes.start_time(live.pid) if live.pid else None
        record.exit_code = record.exit_signal = record.exit_reason = None
        record.argv = argv
        self.manager.store.update_worker(
            record.id,
            status="running",
            pid=record.pid,
            pgid=record.pgid,
            start_time=record.start_time,
            exit_code=None,
            exit_signal=None,
            exit_reason=None,
            argv=argv,
        )

    # hooks called by live workers

    def activity_changed(self, live: LiveWorker, old: str, new: str) -> None:
        """A worker's activity changed: log it and announce it."""
        record = live.record
        self.manager.store.add_activity(
            record.session_id,
            "activity-changed",
            record.id,
            {"worker": record.name, "from": old, "to": new},
        )
        self.manager.events.emit(
            "activity-changed",
            record.session_id,
            record.id,
            activity=new,
            worker=self.worker_dict(record),
        )

    def exited(self, live: LiveWorker, code: int | None, sig: int | None) -> None:
        """A worker's process ended: record how, log it and announce it."""
        record = live.record
        record.status, record.exit_code, record.exit_signal = "exited", code, sig
        # CLIs that print their conversation id (e.g. on exit) are resumed into exactly that one.
        tail = strip_ansi(live.ring.tail(65536).decode("utf-8", "replace"))
        conversation = live.backend.conversation_id(tail)
        if conversation:
            record.conversation_id = conversation
            with contextlib.suppress(Exception):
                self.manager.store.update_worker(record.id, conversation_id=conversation)
        record.exit_reason = live.exit_reason_for(code)
        with contextlib.suppress(Exception):  # the row may be gone (deleted session)
            self.manager.store.update_worker(
                record.id,
                status="exited",
                exit_code=code,
                exit_signal=sig,
                exit_reason=record.exit_reason,
            )
            self.manager.store.add_activity(
                record.session_id,
                "worker-exited",
                record.id,
                {
                    "name": record.name,
                    "exit_code": code,
                    "signal": sig,
                    "reason": record.exit_reason,
                },
            )
        self.manager.events.emit(
            "worker-exited", record.session_id, record.id, worker=self.worker_dict(record)
        )

    # views

    def worker_dict(self, record: Worker) -> dict:
        """A worker as the API shows it, with its live activity."""
        data = record.to_dict()
        live = self.live.get(record.id)
        data["activity"] = live.activity if live is not None and live.running else "unknown"
        personas = self.personas() if record.persona else {}
        persona = personas.get(record.persona) if record.persona else None
        data["persona_icon"] = persona.icon if persona else None
        data["channel"] = f"sessions/{record.session_id}/workers/{record.id}/channel"
        data["tmux_attach"] = (
            self.tmux.attach_command(record.tmux_name) if record.tmux_name else None
        )
        return data

    def worker_dicts(self, session_id: str) -> list[dict]:
        """A session's workers as the API shows them."""
        return [self.worker_dict(w) for w in self.manager.store.list_workers(session_id)]

    def worker_dicts_by_session(self) -> dict[str, list[dict]]:
        """Every session's workers, keyed by session id (one query)."""
        grouped: dict[str, list[dict]] = {}
        for record in self.manager.store.list_workers():
            grouped.setdefault(record.session_id, []).append(self.worker_dict(record))
        return grouped

    def live_worker(self, record: Worker) -> LiveWorker:
        """The live side of a worker, or a conflict if it is not running."""
        live = self.live.get(record.id)
        if live is None or not live.running:
            session = self.manager.store.get_session(record.session_id)
            if session is not None and session.status != "active":
                raise ConflictError(
                    f"worker {record.name!r} is not running: session {session.name!r} is "
                    f"{session.status}; resume it first"
                )
            how = "is not running"
            if record.status == "exited":
                how = how_it_ended(record.exit_reason, record.exit_code, record.exit_signal)
            raise ConflictError(f"worker {record.name!r} {how}; restart it first")
        return live

    # stopping, resuming, forgetting

    def delete_begun(self, record: Worker) -> bool:
        """Whether a delete of the worker has begun: it is under way (its process is being
        ended, its row is not yet gone), or it ended the process and its row was left (a
        delete that failed then, or a crash then: its exit_reason says "deleted")."""
        return record.id in self.being_deleted or record.exit_reason == "deleted"

    async def stop_worker(self, record: Worker, reason: str) -> None:
        """End one worker's processes, recording why.

        A stopped worker's recent output stays, as a crashed one's does, until it starts again
        or is deleted: a console opened after a pause or stop replays it, and `GET .../output`
        shows it. A stop for a delete puts the worker in `being_deleted` first; the delete
        takes it out when the row is gone.
        """
        if reason == "deleted":
            self.being_deleted.add(record.id)
        live = self.live.get(record.id)
        if live is None or not live.running:
            if live is None and record.status != "exited":
                self.manager.store.update_worker(record.id, status="exited", exit_reason=reason)
            elif live is not None:
                live.close()  # exited by itself: release its terminal, keep its output
                if reason == "deleted":
                    del self.live[record.id]
            if reason == "stopped" and record.exit_reason in ENDED_TO_RESUME:
                # It ended with its session's pause (or the server): now, and for good, it
                # is not running because its session was stopped.
                record.exit_reason = reason
                if live is not None:
                    live.record.exit_reason = reason
                self.manager.store.update_worker(record.id, exit_reason=reason)
            return
        live.stop_reason = reason  # type: ignore[attr-defined]
        if reason == "deleted":
            self.live.pop(record.id, None)
            live.deleting()
        await live.stop(self.manager.kill_timeout)

    async def stop_all(self, session: Session, reason: str) -> None:
        """Stop every worker of a session (in parallel)."""
        records = self.manager.store.list_workers(session.id)
        await asyncio.gather(*(self.stop_worker(r, reason) for r in records))

    async def resume_all(self, session: Session) -> None:
        """Start a session's workers again; agents continue their conversation."""
        for record in self.manager.store.list_workers(session.id):
            live = self.live.get(record.id)
            if live is None or not live.running:
                with contextlib.suppress(UnavailableError, ConflictError):
                    await self._launch(session, record, resume=True)

    async def restart_worker(self, session: Session, record: Worker) -> dict:
        """Stop a worker if it runs and start it again (agents continue their conversation)."""
        if session.status != "active":
            raise ConflictError(f"session {session.name!r} is {session.status}; resume it first")
        self.startable_backend(record.backend)  # refused before the running process is ended
        await self.stop_worker(record, "restarted")
        await self._launch(session, record, resume=True)
        self.manager.store.add_activity(session.id, "worker-restarted", record.id, {})
        # Clients learn of the new process (pid, status) through the session's update.
        self.manager.events.emit(
            "session-updated", session.id, session=self.manager.session_dict(session)
        )
        return self.worker_dict(self.manager.store.get_worker(session.id, record.id) or record)

    async def delete_worker(self, session: Session, record: Worker) -> None:
        """Stop a worker and forget it."""
        try:
            await self.stop_worker(record, "deleted")
            if record.tmux_name and tmux_runtime.available():
                await self.tmux.kill_session(record.tmux_name)
            self.manager.store.delete_worker(record.id)
        finally:
            self.being_deleted.discard(record.id)
        if record.persona:  # its instructions go with it; another worker's stay
            await self.manager.workspaces.remove_personas(
                session, self.manager.instructions_files(), owner=record.name
            )
        self.manager.store.add_activity(
            session.id, "worker-deleted", record.id, {"name": record.name}
        )
        self.manager.events.emit(
            "worker-deleted", session.id, record.id, worker={"id": record.id, "name": record.name}
        )

    def stop_blockers(self, session_id: str) -> list[str]:
        """Busy or waiting agents block a stop."""
        problems = []
        for record in self.manager.store.list_workers(session_id):
            live = self.live.get(record.id)
            if record.kind == "agent" and live is not None and live.running:
                if live.activity == "busy":
                    problems.append(f"agent {record.name!r} is busy")
                elif live.activity == "waiting":
                    problems.append(f"agent {record.name!r} is waiting for an answer")
        return problems

    def stop_warnings(self, session_id: str) -> list[str]:
        """Running workers that a stop will end."""
        running = [
            r.name
            for r in self.manager.store.list_workers(session_id)
            if r.id in self.live and self.live[r.id].running
        ]
        return (
            [f"{len(running)} running worker(s) will be stopped: {', '.join(running)}"]
            if running
            else []
        )

    async def forget_all(self, session: Session) -> None:
        """Stop and remove every worker of a session, tmux sessions included (the session's
        row, `deleting` meanwhile, then goes with theirs)."""
        records = self.manager.store.list_workers(session.id)
        try:
            await self.stop_all(session, reason="deleted")
            if tmux_runtime.available():
                for record in records:
                    if record.tmux_name:
                        await self.tmux.kill_session(record.tmux_name)
        finally:
            self.being_deleted.difference_update(r.id for r in records)

    # restart of the server

    async def reconcile(self) -> tuple[dict, set[str]]:
        """Re-attach tmux workers, end orphaned pty workers, after a server start: the
        figures, and the sessions that had a worker interrupted."""
        report = {"reattached": 0, "interrupted": 0, "orphans_ended": 0}
        interrupted: set[str] = set()
        store = self.manager.store
        # One tmux call for all: two per worker made a restart with 200 tmux workers take
        # 6.3-6.7 s instead of 3.9-4.4 (docs/performance.md, eighth pass).
        sessions = store.list_sessions()
        panes = await self.tmux.panes() if sessions else {}
        # An exited worker's row with a tmux session: the server was killed after it started
        # the worker (a resume, a restart) and before the row said so, or after the worker's
        # end was recorded and before its tmux session was removed.
        records = [
            r
            for r in store.list_workers()
            if r.id not in self.live
            and (r.status != "exited" or (r.runtime == "tmux" and r.tmux_name in panes))
        ]
        for record in records:
            session = store.get_session(record.session_id)
            pane = panes.get(record.tmux_name or "")
            if record.status == "exited" and pane is not None:
                kept = await self._recover_unrecorded(session, record, pane)
                if kept != "re-attach":
                    report["orphans_ended"] += kept == "ended"
                    continue
            if (
                record.runtime == "tmux"
                and session is not None
                and pane is not None
                and self.manager.workspaces.in_place(session)
            ):
                await self._reattach(session, record, pane)
                # The session's log shows the restart its tmux worker lived through.
                store.add_activity(
                    session.id, "worker-reattached", record.id, {"name": record.name}
                )
                report["reattached"] += 1
                continue
            if record.pid and processes.is_alive(record.pid, record.start_time):
                await processes.end_tree(record.pid, self.manager.kill_timeout)
                report["orphans_ended"] += 1
            elif record.pid and session is not None and not processes.is_alive(record.pid):
                # Its leader died with the server (SIGHUP), not its background children.
                marks = {"MAS_SESSION_ID": session.id, "MAS_WORKER": record.name}
                found = await asyncio.to_thread(
                    processes.leftovers, record.pid, record.start_time, marks
                )
                if found:
                    await processes.end_leftovers(found, self.manager.kill_timeout)
                    report["orphans_ended"] += 1
            store.update_worker(record.id, status="exited", exit_reason="interrupted")
            if session is not None:
                # Its transcript ends with its end, as a worker's that a server saw end does.
                path = transcript_path(self.manager.workspaces.transcripts(session), record)
                append_exit(path, reason="interrupted")
                store.add_activity(
                    session.id, "worker-exited", record.id,
                    {"name": record.name, "reason": "interrupted"},
                )  # fmt: skip
                interrupted.add(session.id)
            report["interrupted"] += 1
        report["orphans_ended"] += await self._end_unknown_tmux(panes, sessions)
        return report, interrupted

    async def _recover_unrecorded(
        self, session: Session | None, record: Worker, pane: tmux_runtime.Pane
    ) -> str:
        """The tmux session of a worker whose row says it exited: `re-attach` it when its
        pane lives and its session is active (the resume or restart that started it was
        under way). Otherwise it is removed: `ended` if its process lived, else `removed`."""
        alive = bool(pane[0]) and not pane[1]
        if (
            alive
            and session is not None
            and session.status == "active"
            and self.manager.workspaces.in_place(session)
        ):
            return "re-attach"
        if alive:
            await processes.end_tree(pane[0], self.manager.kill_timeout)  # type: ignore[arg-type]
            if session is not None:  # its transcript has its start: it gets its end
                path = transcript_path(self.manager.workspaces.transcripts(session), record)
                append_exit(path, reason="interrupted")
            self.manager.log.warning(
                "ended tmux session %s: its worker %s had exited, says the state database",
                record.tmux_name, record.name,
            )  # fmt: skip
        await self.tmux.kill_session(record.tmux_name or "")
        return "ended" if alive else "removed"

    async def _end_unknown_tmux(
        self, panes: dict[str, tmux_runtime.Pane], sessions: list[Session]
    ) -> int:
        """End the tmux workers of this store's sessions that no worker row names: after the
        state database was rebuilt from the workspaces, the sessions came back paused and
        their workers' rows did not, so nothing would ever end them. Another server's tmux
        sessions on a shared socket (other session ids) are left alone."""
        store = self.manager.store
        known = {r.tmux_name for r in store.list_workers() if r.tmux_name}
        by_prefix = {s.id.replace("-", "")[:8]: s for s in sessions}
        ended = 0
        for name, pane in panes.items():
            session = (
                by_prefix.get(name[4:12]) if name[:4] == "mas-" and name[12:13] == "-" else None
            )
            if session is None or name in known:
                continue
            if pane[0] and not pane[1]:
                await processes.end_tree(pane[0], self.manager.kill_timeout)
            await self.tmux.kill_session(name)
            worker = name[13:].replace("+", ".")
            store.add_activity(
                session.id, "worker-exited", None, {"name": worker, "reason": "interrupted"}
            )
            self.manager.log.warning(
                "ended tmux session %s of session %s: no worker of the state database is it "
                "(the database was rebuilt)", name, session.name,
            )  # fmt: skip
            ended += 1
        return ended

    async def _reattach(self, session: Session, record: Worker, pane: tmux_runtime.Pane) -> None:
        live = self._live_worker(session, record, self.backend(record.backend))
        await live.reattach_tmux(self.tmux, pane)
        self.live[record.id] = live
        self._mark_running(record, live, record.argv)
        live.evaluate_soon()

    async def shutdown(self) -> set[str]:
        """Stop pty workers; detach from tmux workers so they live on. Returns the sessions
        that had a worker stopped."""
        stopped: set[str] = set()
        for task in list(self._persona_tasks):
            task.cancel()
        # A tmux worker that exited just now: let its exit be recorded first (bounded).
        finishing = [
            live.process.finishing
            for live in self.live.values()
            if isinstance(live.process, tmux_runtime.TmuxProcess) and live.process.finishing
        ]
        if finishing:
            _done, pending = await asyncio.wait(finishing, timeout=self.manager.kill_timeout)
            for task in pending:
                task.cancel()
        for worker_id, live in list(self.live.items()):
            if live.record.runtime == "tmux":
                live.close()
                self.live.pop(worker_id, None)
            else:
                if live.running:
                    stopped.add(live.record.session_id)
                live.stop_reason = "server stopped"  # type: ignore[attr-defined]
                with contextlib.suppress(Exception):
                    await live.stop(self.manager.kill_timeout)
                self.live.pop(worker_id, None)
        await processes.wait_for_ended()  # background children of workers that ended
        return stopped
