"""Notebook widgets over the client: a live session list, a worker console, an activity badge."""

from __future__ import annotations

from .badge import ActivityBadge
from .console import WorkerConsole
from .sessions import SessionList

__all__ = ["ActivityBadge", "SessionList", "WorkerConsole"]
