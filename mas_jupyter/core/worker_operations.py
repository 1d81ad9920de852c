"""The manager's operations on workers: what the API offers for agents and terminals.

A mixin of `MASManager`, kept apart because sessions and workers are two concepts; every
method resolves the session and worker (id or name), validates its input and delegates the
live work to the supervisor.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Hashable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from . import validate
from .errors import InvalidError, NotFoundError
from .models import Session, Worker
from .ring import first_character
from .transcript import last_output, read_transcript
from .worker import LiveWorker, transcript_path

if TYPE_CHECKING:
    from .store import Store
    from .supervisor import Supervisor
    from .workspaces import Workspaces


class WorkerOperations:
    """Worker methods of MASManager."""

    store: Store
    supervisor: Supervisor
    max_input_bytes: int
    output_buffer_bytes: int
    workspaces: Workspaces

    if TYPE_CHECKING:  # provided by MASManager

        def _session(self, key: object, any_state: bool = False) -> Session: ...

        def _changing(self, key: object) -> AbstractAsyncContextManager[Session]: ...

        def _log(
            self, session: Session, type: str, worker_id: str | None = None, **detail: object
        ) -> None: ...

    def _worker(self, session: Session, key: object) -> Worker:
        if not isinstance(key, str) or not key:
            raise InvalidError("a worker id or name is required")
        record = self.store.get_worker(session.id, key)
        if record is None:
            raise NotFoundError(f"no worker with id or name {key!r} in session {session.name!r}")
        return record

    async def create_worker(self, key: str, spec: dict) -> dict:
        """Start a new worker (agent or terminal) in a session."""
        self._session(key)  # an unknown session is a 404 before the spec is looked at
        checked = self.supervisor.check_spec(spec)
        async with self._changing(key) as session:
            return await self.supervisor.create_worker(session, checked)

    def list_workers(self, key: str) -> list[dict]:
        """A session's workers."""
        return self.supervisor.worker_dicts(self._session(key).id)

    def get_worker(self, key: str, wkey: str) -> dict:
        """One worker by id or name."""
        session = self._session(key)
        return self.supervisor.worker_dict(self._worker(session, wkey))

    async def delete_worker(self, key: str, wkey: str) -> None:
        """Kill a worker's processes and forget it."""
        async with self._changing(key) as session:
            await self.supervisor.delete_worker(session, self._worker(session, wkey))

    async def restart_worker(self, key: str, wkey: str) -> dict:
        """Restart a worker; an agent continues its previous conversation."""
        async with self._changing(key) as session:
            return await self.supervisor.restart_worker(session, self._worker(session, wkey))

    def resize_worker(self, key: str, wkey: str, cols: object, rows: object) -> dict:
        """Set a worker's terminal size."""
        session = self._session(key)
        record = self._worker(session, wkey)
        cols = validate.integer(cols, "cols", *validate.COLS)
        rows = validate.integer(rows, "rows", *validate.ROWS)
        live = self.supervisor.live_worker(record)
        live.resize(cols, rows)
        self.store.update_worker(record.id, cols=cols, rows=rows)
        return self.supervisor.worker_dict(self.store.get_worker(session.id, record.id) or record)

    def fit_worker(self, key: str, wkey: str, cols: int, rows: int) -> None:
        """Size a worker to a console's view: a view smaller or larger than a terminal may be
        gets the nearest size there is (a small panel, the smallest terminal); a view with no
        size (not shown) changes nothing."""
        if cols <= 0 or rows <= 0:
            return
        cols = min(max(cols, validate.COLS[0]), validate.COLS[1])
        rows = min(max(rows, validate.ROWS[0]), validate.ROWS[1])
        self.resize_worker(key, wkey, cols, rows)

    def _running(self, key: str, wkey: str) -> LiveWorker | None:
        # Keystrokes from a console name both by id: find them without reading the store.
        live = self.supervisor.live.get(wkey)
        if live is not None and live.running and live.record.session_id == key:
            return live
        return None

    def _live(self, key: str, wkey: str) -> LiveWorker:
        live = self._running(key, wkey)
        if live is not None:
            return live
        return self.supervisor.live_worker(self._worker(self._session(key), wkey))

    def write_input(
        self, key: str, wkey: str, data: object, console: Hashable | None = None
    ) -> None:
        """Type raw keystrokes into a worker; `console` names the console they come from, so
        that only one console answers the program's terminal queries (see core/queries.py)."""
        if not isinstance(data, str):
            raise InvalidError("data must be a string")
        validate.unicode_text(data, "data")
        self._live(key, wkey).write(data, self.max_input_bytes, console)

    async def send_message(
        self, key: str, wkey: str, text: object, wait: object = False, timeout: object = None
    ) -> dict:
        """Type a message and submit it; with wait, return the reply once the agent is done."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidError("text must be a non-empty string")
        validate.unicode_text(text, "text")
        if not isinstance(wait, bool):
            raise InvalidError("wait must be true or false")
        limit = 3600.0
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise InvalidError("timeout must be a number of seconds")
            if not 0 < timeout <= limit:
                raise InvalidError(f"timeout must be more than 0 and at most {limit:g} seconds")
            if not wait:  # it would bound nothing
                raise InvalidError(
                    "timeout is how long to wait for the reply: it needs wait (true)"
                )
        else:
            timeout = 600.0
        session = self._session(key)
        record = self._worker(session, wkey)
        live = self.supervisor.live_worker(record)

        def type_it() -> int:
            offset = live.submit(text, self.max_input_bytes)
            self._log(session, "message-sent", record.id, worker=record.name, text=text[:200])
            return offset

        if not wait:  # typed at once, ahead of whatever the agent is doing
            type_it()
            return live.outcome(None, done=True)
        async with live.turn(float(timeout)) as left:
            if not live.running:  # it ended while the message waited: nothing was typed
                return live.outcome(None, done=False)
            return await live.reply(text, type_it(), left)

    def get_screen(self, key: str, wkey: str) -> dict:
        """The rendered screen of a running worker."""
        return self._live(key, wkey).screen_dict()

    def get_output(self, key: str, wkey: str, tail: object = None) -> dict:
        """Recent raw output as text (`tail`: at most that many bytes)."""
        session = self._session(key)
        record = self._worker(session, wkey)
        kept = self.output_buffer_bytes
        limit = None if tail is None else validate.integer(tail, "tail", 0, kept)
        live = self.supervisor.live.get(record.id)
        if live is None:  # not run since the server started: what its transcript kept
            path = transcript_path(self.workspaces.transcripts(session), record)
            text, start, end = last_output(path, kept if limit is None else limit)
            return {"data": text, "start": start, "end": end}
        ring = live.ring
        if limit is None:
            data, start = ring.snapshot(), ring.start
        else:
            data = ring.tail(limit)
            start = ring.total - len(data)
        skip = first_character(data)  # no U+FFFD for a character the ring or tail cut
        text = data[skip:].decode("utf-8", "replace")
        return {"data": text, "start": start + skip, "end": ring.total}

    def get_transcript(self, key: str, wkey: str, offset: object = 0, limit: object = 500) -> dict:
        """A page of a worker's transcript records."""
        session = self._session(key)
        record = self._worker(session, wkey)
        off = validate.integer(offset, "offset", 0, 2**62)
        lim = validate.integer(limit, "limit", 1, 10000)
        live = self.supervisor.live.get(record.id)
        if live is not None:
            live.transcript.flush()
        return read_transcript(
            transcript_path(self.workspaces.transcripts(session), record), off, lim
        )

    def attach(
        self, key: str, wkey: str, listener: Callable[[str, object], None]
    ) -> tuple[str, Callable[[], None]]:
        """Recent output and a subscription to live output, activity and exit, for a console.

        A worker whose delete has begun is not found (NotFoundError), though `get_worker` still
        lists it until its row is gone: its consoles are told it is gone, not that it exited.
        """
        live = self._running(key, wkey)  # never one being deleted: it leaves `live` first
        if live is None:
            record = self._worker(self._session(key), wkey)
            if self.supervisor.delete_begun(record):
                raise NotFoundError(f"worker {record.name!r} is being deleted")
            live = self.supervisor.live_worker(record)
        return live.attach(listener)

    def connect_info(self, key: str) -> dict:
        """How to reach a session: its workspace and each worker's console."""
        session = self._session(key)
        workers = self.supervisor.worker_dicts(session.id)
        return {
            "session": session.name,
            "workspace": session.workspace,
            "workspace_path": self.workspaces.browser_path(session.workspace),
            "workers": [
                {
                    "id": w["id"],
                    "name": w["name"],
                    "status": w["status"],
                    "channel": w["channel"],
                    # A terminal on this machine reaches any worker's console this way (the
                    # package's CLI, over the channel); tmux_attach is for tmux workers only.
                    "attach": shlex.join(["jupyter", "mas", "attach", session.name, w["name"]]),
                    "tmux_attach": w["tmux_attach"],
                }
                for w in workers
            ],
        }

    def list_backends(self) -> list[dict]:
        """Every backend, with whether it can be used here and why not."""
        return [b.to_dict() for _, b in sorted(self.supervisor.backends.items())]

    def list_personas(self) -> list[dict]:
        """Every persona (name, icon, title)."""
        return [p.to_dict() for _, p in sorted(self.supervisor.personas().items())]

    def list_templates(self) -> list[dict]:
        """Every template for quick sessions."""
        return [{"name": name} for name in sorted(self.supervisor.templates())]
