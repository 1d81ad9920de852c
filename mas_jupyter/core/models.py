"""The engine's records: sessions, workers and activity-log entries, as plain dataclasses."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

SESSION_KINDS = ("quick", "worktree", "dir")
SESSION_STATUSES = ("active", "paused", "stopped")
# Rows move through these internal states; only "ready" rows are visible to users.
ROW_CREATING = "creating"
ROW_READY = "ready"
ROW_DELETING = "deleting"
ROW_PURGING = "purging"  # a purge without force: a crash meanwhile is finished without force
ROW_PURGING_FORCED = "purging-forced"

WORKER_KINDS = ("agent", "terminal")
WORKER_STATUSES = ("starting", "running", "exited")
ACTIVITIES = ("busy", "idle", "waiting", "unknown")
# The exit_reasons of a worker whose process was ended for it, not by itself or a crash, and
# what ended it, in words (the engine's refusals, the CLI, `%mas` and the widgets say them).
ENDED_FOR_IT = {
    "restarted": "the worker was restarted",
    "paused": "its session was paused",
    "stopped": "its session was stopped",
    "server stopped": "the server stopped",
    "deleted": "the worker was deleted",
    # The server that ran it ended without stopping it (a kill -9, the machine restarted).
    "interrupted": "it did not survive the server's restart",
}


def now() -> float:
    """Wall-clock time in seconds; one place so tests and records agree."""
    return time.time()


def iso(ts: float | None) -> str | None:
    """An epoch timestamp as ISO 8601 UTC text, as the API shows it."""
    if ts is None:
        return None
    return _iso(ts)


@functools.lru_cache(maxsize=16384)
def _iso(ts: float) -> str:
    # The same few timestamps are formatted again each time the listing is rebuilt.
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Session:
    """One unit of work with its own workspace."""

    id: str
    name: str
    kind: str
    workspace: str
    status: str = "active"
    task: str | None = None
    template: str | None = None
    repo: str | None = None
    branch: str | None = None
    base: str | None = None
    created_at: float = field(default_factory=now)
    updated_at: float = field(default_factory=now)
    active_seconds: float = 0.0
    active_since: float | None = None
    row_state: str = ROW_READY

    @property
    def accruing(self) -> bool:
        """Whether active time is counting now (active, with a start time)."""
        return self.status == "active" and self.active_since is not None

    def total_active_seconds(self, at: float | None = None) -> float:
        """Time spent active so far, paused and stopped time excluded."""
        extra = 0.0
        if self.accruing:
            extra = max(0.0, (at or now()) - self.active_since)  # type: ignore[operator]
        return self.active_seconds + extra

    def to_dict(self) -> dict:
        """The JSON shape of a session (without its workers)."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "task": self.task,
            "workspace": self.workspace,
            "template": self.template,
            "repo": self.repo,
            "branch": self.branch,
            "base": self.base,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "active_seconds": round(self.total_active_seconds(), 3),
        }

    def metadata(self) -> dict:
        """What the workspace's metadata file holds, enough to rebuild the row."""
        return dict(vars(self))  # every field is a scalar: no deep copy needed


@dataclass
class Worker:
    """A process in a session, running in a pseudo-terminal."""

    id: str
    session_id: str
    name: str
    kind: str
    backend: str
    argv: list[str]
    persona: str | None = None
    runtime: str = "pty"
    status: str = "starting"
    exit_code: int | None = None
    exit_signal: int | None = None
    exit_reason: str | None = None
    pid: int | None = None
    pgid: int | None = None
    start_time: int | None = None
    cols: int = 120
    rows: int = 40
    conversation_id: str | None = None
    tmux_name: str | None = None
    created_at: float = field(default_factory=now)
    updated_at: float = field(default_factory=now)
    env: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON shape of a worker; live fields (activity) are added by the manager."""
        return {
            "id": self.id,
            "session_id": self.session_id,
            "name": self.name,
            "kind": self.kind,
            "backend": self.backend,
            "persona": self.persona,
            "runtime": self.runtime,
            "status": self.status,
            "exit_code": self.exit_code,
            "exit_signal": self.exit_signal,
            "exit_reason": self.exit_reason,
            "pid": self.pid,
            "cols": self.cols,
            "rows": self.rows,
            "tmux_session": self.tmux_name,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def how_it_ended(reason: str | None, code: int | None, signal: int | None) -> str:
    """How an exited worker ended, to follow its name: `has exited (code 3)`, `has exited
    (signal 9)`, or what ended it for it (`stopped: its session was paused`)."""
    if reason in ENDED_FOR_IT:
        return f"stopped: {ENDED_FOR_IT[reason]}"
    if signal is not None:
        return f"has exited (signal {signal})"
    if code is not None:
        return f"has exited (code {code})"
    return "has exited"


@dataclass
class Activity:
    """One entry of a session's activity log."""

    seq: int
    session_id: str
    type: str
    time: float
    worker_id: str | None = None
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON shape of a log entry."""
        return {
            "seq": self.seq,
            "session_id": self.session_id,
            "type": self.type,
            "time": iso(self.time),
            "worker_id": self.worker_id,
            "detail": self.detail,
        }
