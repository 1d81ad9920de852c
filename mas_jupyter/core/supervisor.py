"""Runs the workers of all sessions: start, stop, resume, reconcile after a restart."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import validate
from .errors import InvalidError

if TYPE_CHECKING:
    from .manager import MASManager
    from .models import Session

BUILTIN_TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


class Supervisor:
    """The live side of workers; the manager delegates every worker operation here."""

    def __init__(self, manager: MASManager) -> None:
        self.manager = manager

    def templates(self) -> dict[str, str]:
        """Template name -> directory."""
        found = {}
        for base in (BUILTIN_TEMPLATES, self.manager.templates_dir):
            if base and os.path.isdir(base):
                for entry in sorted(os.listdir(base)):
                    path = os.path.join(base, entry)
                    if os.path.isdir(path) and not os.path.islink(path):
                        found[entry] = path
        return found

    def check_spec(self, spec: object, index: int = 0) -> dict:
        """Validate a worker spec before anything is created."""
        if not isinstance(spec, dict):
            raise InvalidError(f"worker spec #{index + 1} must be an object")
        return {"name": validate.name(spec.get("name"), "worker name")}

    async def create_worker(self, session: Session, spec: dict) -> dict:
        """Start a worker in a session."""
        raise InvalidError("workers are not available yet")

    def worker_dicts(self, session_id: str) -> list[dict]:
        """A session's workers as the API shows them."""
        return []

    def worker_dicts_by_session(self) -> dict[str, list[dict]]:
        """Every session's workers, keyed by session id."""
        return {}

    async def stop_all(self, session: Session, reason: str) -> None:
        """Stop every worker of a session."""

    async def resume_all(self, session: Session) -> None:
        """Start a session's workers again, agents continuing their conversation."""

    def stop_blockers(self, session_id: str) -> list[str]:
        """Reasons that block a stop (busy or waiting agents)."""
        return []

    def stop_warnings(self, session_id: str) -> list[str]:
        """Things a stop will do that the user should know."""
        return []

    async def forget_all(self, session: Session) -> None:
        """Stop and remove every worker of a session."""

    async def reconcile(self) -> dict:
        """Re-attach or end the workers a previous server left."""
        return {}

    async def shutdown(self) -> None:
        """Stop pty workers and detach from tmux ones."""
