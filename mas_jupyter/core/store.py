"""The SQLite store: sessions, workers and activity logs, committed before acknowledged.

One connection, WAL journal, schema version in PRAGMA user_version with forward migrations.
Uniqueness is enforced by the database (UNIQUE constraints inside BEGIN IMMEDIATE
transactions), never by a check-then-insert.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields

from .errors import ConflictError, LimitError, MASError
from .models import ROW_READY, Activity, Session, Worker, now

# Each entry moves the schema one version forward; never edit a released entry.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        task TEXT,
        workspace TEXT NOT NULL,
        template TEXT,
        repo TEXT,
        branch TEXT,
        base TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        active_seconds REAL NOT NULL DEFAULT 0,
        active_since REAL,
        row_state TEXT NOT NULL
    );
    CREATE INDEX sessions_task ON sessions(task);
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        backend TEXT NOT NULL,
        argv TEXT NOT NULL,
        persona TEXT,
        runtime TEXT NOT NULL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        exit_signal INTEGER,
        exit_reason TEXT,
        pid INTEGER,
        pgid INTEGER,
        start_time INTEGER,
        cols INTEGER NOT NULL,
        rows INTEGER NOT NULL,
        conversation_id TEXT,
        tmux_name TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (session_id, name)
    );
    CREATE TABLE activities (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        worker_id TEXT,
        type TEXT NOT NULL,
        time REAL NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX activities_session ON activities(session_id, seq);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: a worker's extra environment, so a restart or resume starts it the same way.
    """
    ALTER TABLE workers ADD COLUMN env TEXT NOT NULL DEFAULT '{}';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
_SESSION_FIELDS = [f.name for f in fields(Session)]
_WORKER_FIELDS = [f.name for f in fields(Worker)]
_JSON_FIELDS = ("argv", "env")
_NUMBERED_RE = re.compile(r"^session-(\d+)$")


def sessions_limit_error(limit: int) -> LimitError:
    """The error for a session that would pass `MASManager.max_sessions` (created or resumed)."""
    return LimitError(
        f"the limit of {limit} sessions is reached; stop or delete a session first "
        "(MASManager.max_sessions)"
    )


class StoreError(MASError):
    """The database cannot be used as it is; the message says why and what to do."""

    status = 500
    reason = "store_error"


class Store:
    """Durable state of the engine in one SQLite file."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        # Counts committed write transactions, so readers can cache what they derive.
        self.version = 0
        self._lock = threading.RLock()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        # A database made now (the first start, or the old one lost or moved aside): the
        # manager then rebuilds the sessions found in their workspaces.
        self.created = not os.path.exists(path)
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=timeout
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._check_integrity()
            self._check_version()
            self._db.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode survives a killed process; only a power cut can lose the tail.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.OperationalError as exc:
            self._close_quietly()
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(
                    f"the state database {path} is locked by another process "
                    "(is another Jupyter server using the same sessions root?)"
                ) from None
            raise StoreError(f"cannot open the state database {path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise StoreError(
                f"the state database {path} is damaged ({exc}); it was left untouched. "
                "Move it aside and start again: the sessions are rebuilt from their "
                "workspaces"
            ) from None

    def _close_quietly(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()

    def _check_integrity(self) -> None:
        row = self._db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {row and row[0]}")

    def _check_version(self) -> None:
        # Before anything writes (even the switch to WAL), so a newer file stays untouched.
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the state database {self.path} has schema version {version}, newer than this "
                f"mas_jupyter understands ({SCHEMA_VERSION}); upgrade mas_jupyter. "
                "The database was left untouched."
            )

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version, SCHEMA_VERSION):
            with self.transaction() as db:
                for statement in _statements(MIGRATIONS[number]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number + 1}")

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front (BEGIN IMMEDIATE)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
                self.version += 1

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._db.execute(sql, args)
            return cur.fetchall()

    # sessions

    def insert_session(
        self,
        session: Session,
        generate_name: bool,
        plan: Callable[[Session], None] | None = None,
        limit: int | None = None,
    ) -> Session:
        """Insert a session row; a generated name takes the next free `session-NNN`.

        `plan` fills fields that depend on the final name (workspace, branch) inside the same
        transaction; `limit` caps the number of sessions that are not stopped.
        """
        with self.transaction() as db:
            if limit is not None:
                live = db.execute("SELECT COUNT(*) FROM sessions WHERE status != 'stopped'")
                if live.fetchone()[0] >= limit:
                    raise sessions_limit_error(limit)
            if generate_name:
                session.name = self._next_name(db)
            if plan is not None:
                plan(session)
            cols = ", ".join(_SESSION_FIELDS)
            marks = ", ".join("?" for _ in _SESSION_FIELDS)
            try:
                db.execute(
                    f"INSERT INTO sessions ({cols}) VALUES ({marks})",
                    tuple(getattr(session, f) for f in _SESSION_FIELDS),
                )
            except sqlite3.IntegrityError:
                raise ConflictError(
                    f"a session named {session.name!r} already exists; choose another name"
                ) from None
        return session

    def _next_name(self, db: sqlite3.Connection) -> str:
        """The next `session-NNN` above the stored counter that no session has taken.

        The counter lives in the meta table; without it (a new or rebuilt database) it starts
        after the highest numbered name present, so a deleted session's name is not reused.
        """
        row = db.execute("SELECT value FROM meta WHERE key = 'session_counter'").fetchone()
        if row:
            counter = int(row[0])
        else:
            counter = 0
            for (name,) in db.execute("SELECT name FROM sessions WHERE name LIKE 'session-%'"):
                match = _NUMBERED_RE.match(name)
                if match:
                    counter = max(counter, int(match.group(1)))
        while True:
            counter += 1
            name = f"session-{counter:03d}"
            if not db.execute("SELECT 1 FROM sessions WHERE name = ?", (name,)).fetchone():
                break
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('session_counter', ?)", (counter,)
        )
        return name

    def update_session(self, session_id: str, **values: object) -> None:
        """Change some fields of a session row (and its updated_at)."""
        values.setdefault("updated_at", now())
        sets = ", ".join(f"{k} = ?" for k in values)
        try:
            with self.transaction() as db:
                db.execute(
                    f"UPDATE sessions SET {sets} WHERE id = ?", (*values.values(), session_id)
                )
        except sqlite3.IntegrityError:
            raise ConflictError(
                f"a session named {values.get('name')!r} already exists; choose another name"
            ) from None

    def get_session(self, key: str, any_state: bool = False) -> Session | None:
        """A session by id or name (ready rows only unless any_state)."""
        state = "" if any_state else f" AND row_state = '{ROW_READY}'"
        rows = self._query(f"SELECT * FROM sessions WHERE id = ?{state}", (key,)) or self._query(
            f"SELECT * FROM sessions WHERE name = ?{state}", (key,)
        )
        return _session(rows[0]) if rows else None

    def list_sessions(
        self,
        status: str | None = None,
        kind: str | None = None,
        task: str | None = None,
        row_state: str | None = ROW_READY,
    ) -> list[Session]:
        """Sessions in creation order, filtered by the given fields."""
        where, args = [], []
        for col, val in (("status", status), ("kind", kind), ("task", task)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if row_state is not None:
            where.append("row_state = ?")
            args.append(row_state)
        sql = "SELECT * FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, name"
        return [_session(r) for r in self._query(sql, tuple(args))]

    def delete_session(self, session_id: str) -> None:
        """Forget a session, its workers and its activity log."""
        with self.transaction() as db:
            db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def undo_insert(self, session: Session) -> None:
        """Forget a session whose create failed; a name it was given by the counter goes back,
        so a failed create leaves no gap in `session-NNN`."""
        match = _NUMBERED_RE.match(session.name)
        with self.transaction() as db:
            db.execute("DELETE FROM sessions WHERE id = ?", (session.id,))
            if match:
                db.execute(
                    "UPDATE meta SET value = value - 1 WHERE key = 'session_counter' AND value = ?",
                    (int(match.group(1)),),
                )

    def count_sessions(self, stopped: bool = True) -> int:
        """How many sessions exist (any row state; without the stopped ones if not `stopped`)."""
        if not stopped:
            return self._query("SELECT COUNT(*) FROM sessions WHERE status != 'stopped'")[0][0]
        return self._query("SELECT COUNT(*) FROM sessions")[0][0]

    # workers

    def insert_worker(self, worker: Worker) -> Worker:
        """Insert a worker row; names are unique within a session."""
        cols = ", ".join(_WORKER_FIELDS)
        marks = ", ".join("?" for _ in _WORKER_FIELDS)
        values = tuple(
            json.dumps(getattr(worker, f)) if f in _JSON_FIELDS else getattr(worker, f)
            for f in _WORKER_FIELDS
        )
        try:
            with self.transaction() as db:
                db.execute(f"INSERT INTO workers ({cols}) VALUES ({marks})", values)
        except sqlite3.IntegrityError:
            raise ConflictError(
                f"a worker named {worker.name!r} already exists in this session; "
                "choose another name"
            ) from None
        return worker

    def update_worker(self, worker_id: str, **values: object) -> None:
        """Change some fields of a worker row (and its updated_at)."""
        values.setdefault("updated_at", now())
        for key in _JSON_FIELDS:
            if key in values:
                values[key] = json.dumps(values[key])
        sets = ", ".join(f"{k} = ?" for k in values)
        with self.transaction() as db:
            db.execute(f"UPDATE workers SET {sets} WHERE id = ?", (*values.values(), worker_id))

    def get_worker(self, session_id: str, key: str) -> Worker | None:
        """A worker of a session by id or name."""
        rows = self._query(
            "SELECT * FROM workers WHERE session_id = ? AND id = ?", (session_id, key)
        ) or self._query(
            "SELECT * FROM workers WHERE session_id = ? AND name = ?", (session_id, key)
        )
        return _worker(rows[0]) if rows else None

    def list_workers(self, session_id: str | None = None) -> list[Worker]:
        """Workers of one session, or of all sessions, in creation order."""
        if session_id is None:
            rows = self._query("SELECT * FROM workers ORDER BY created_at")
        else:
            rows = self._query(
                "SELECT * FROM workers WHERE session_id = ? ORDER BY created_at", (session_id,)
            )
        return [_worker(r) for r in rows]

    def delete_worker(self, worker_id: str) -> None:
        """Forget a worker."""
        with self.transaction() as db:
            db.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def count_workers(self, session_id: str | None = None) -> int:
        """How many workers exist, in one session or in all."""
        if session_id is None:
            return self._query("SELECT COUNT(*) FROM workers")[0][0]
        return self._query("SELECT COUNT(*) FROM workers WHERE session_id = ?", (session_id,))[0][0]

    # activity log

    def add_activity(
        self,
        session_id: str,
        type: str,
        worker_id: str | None = None,
        detail: dict | None = None,
    ) -> Activity:
        """Append an entry to a session's activity log."""
        with self.transaction() as db:
            return _insert_activity(db, session_id, type, worker_id, detail)

    def mark_ready(self, session_id: str, detail: dict) -> None:
        """A created session's row becomes ready and its log says `created`, in one commit."""
        with self.transaction() as db:
            db.execute("UPDATE sessions SET row_state = ? WHERE id = ?", (ROW_READY, session_id))
            _insert_activity(db, session_id, "created", None, detail)

    def list_activities(
        self, session_id: str, limit: int | None = None, since: int | None = None
    ) -> list[Activity]:
        """A session's log in order; `since` keeps entries after that seq, `limit` the newest N."""
        sql = "SELECT * FROM activities WHERE session_id = ?"
        args: list[object] = [session_id]
        if since is not None:
            sql += " AND seq > ?"
            args.append(since)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = self._query(sql, tuple(args))
        return [
            Activity(
                r["seq"],
                r["session_id"],
                r["type"],
                r["time"],
                r["worker_id"],
                json.loads(r["detail"]),
            )
            for r in reversed(rows)
        ]

    def integrity_ok(self) -> bool:
        """Whether SQLite's integrity check passes now."""
        return self._query("PRAGMA integrity_check")[0][0] == "ok"


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _session(row: sqlite3.Row) -> Session:
    return Session(**{f: row[f] for f in _SESSION_FIELDS})


def _worker(row: sqlite3.Row) -> Worker:
    values = {f: row[f] for f in _WORKER_FIELDS}
    for key in _JSON_FIELDS:
        values[key] = json.loads(values[key])
    return Worker(**values)


def _insert_activity(
    db: sqlite3.Connection, session_id: str, type: str, worker_id: str | None, detail: dict | None
) -> Activity:
    ts = now()
    cur = db.execute(
        "INSERT INTO activities (session_id, worker_id, type, time, detail) VALUES (?, ?, ?, ?, ?)",
        (session_id, worker_id, type, ts, json.dumps(detail or {})),
    )
    return Activity(cur.lastrowid or 0, session_id, type, ts, worker_id, detail or {})
