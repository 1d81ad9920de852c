"""Typed errors of the engine; the server maps each to an HTTP status."""

from __future__ import annotations


class MASError(Exception):
    """Base of every error the engine raises on purpose; the message is for the user."""

    status = 500
    reason = "error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict:
        """The JSON body a client receives."""
        return {"message": self.message, "reason": self.reason, **self.details}


class InvalidError(MASError):
    """Bad input: a field is missing, malformed or outside what is allowed."""

    status = 400
    reason = "invalid"


class ForbiddenError(MASError):
    """The action is not allowed here (e.g. a path outside the allowed roots)."""

    status = 403
    reason = "forbidden"


class NotFoundError(MASError):
    """No session, worker, backend, persona or template of that name."""

    status = 404
    reason = "not_found"


class ConflictError(MASError):
    """The request clashes with the current state (duplicate name, wrong status)."""

    status = 409
    reason = "conflict"


class TooLargeError(MASError):
    """A body, message or input is over its configured size."""

    status = 413
    reason = "too_large"


class LimitError(MASError):
    """A configured limit (sessions, workers) is reached."""

    status = 429
    reason = "limit_reached"


class UnavailableError(MASError):
    """Something the request needs is not there (a backend's program, tmux, git)."""

    status = 409
    reason = "unavailable"
