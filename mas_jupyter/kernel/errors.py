"""The client's exceptions: each carries the server's `message`, `reason` and `status`."""

from __future__ import annotations


class MASClientError(Exception):
    """A request to mas_jupyter failed; `message` says what happened and what to do."""

    status: int | None = None
    reason = "error"

    def __init__(
        self, message: str, status: int | None = None, reason: str | None = None, **details
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason
        self.details = details

    def __str__(self) -> str:
        return self.message

    @property
    def errors(self) -> list[str]:
        """Blocking problems the server listed (e.g. why a stop was refused)."""
        return list(self.details.get("errors") or [])

    @property
    def warnings(self) -> list[str]:
        """Non-blocking problems the server listed."""
        return list(self.details.get("warnings") or [])


class InvalidRequest(MASClientError):
    """400: a field is missing, malformed or not allowed."""

    status, reason = 400, "invalid"


class Forbidden(MASClientError):
    """403: not allowed (authorization, or a path outside the allowed roots)."""

    status, reason = 403, "forbidden"


class NotFound(MASClientError):
    """404: no such session, worker, backend, persona or template."""

    status, reason = 404, "not_found"


class Conflict(MASClientError):
    """409: the request clashes with the current state (a name taken, a refused stop)."""

    status, reason = 409, "conflict"


class Unavailable(Conflict):
    """409: something the request needs is missing here (a backend's program, tmux, git)."""

    reason = "unavailable"


class TooLarge(MASClientError):
    """413: a body, message or input is over its configured size."""

    status, reason = 413, "too_large"


class LimitReached(MASClientError):
    """429: a configured limit (sessions, workers) is reached."""

    status, reason = 429, "limit_reached"


class ServerError(MASClientError):
    """5xx: the server failed; its log says why."""

    status, reason = 500, "server_error"


class ConnectionFailed(MASClientError):
    """The server could not be reached (not running, wrong URL or token)."""

    reason = "connection_failed"


class NoActiveSession(MASClientError):
    """A call needed a session (or worker) and none was given or made active."""

    reason = "no_active_session"


_BY_STATUS = {400: InvalidRequest, 403: Forbidden, 404: NotFound, 409: Conflict, 413: TooLarge}
_BY_STATUS[429] = LimitReached


def error_from(status: int, body: object) -> MASClientError:
    """The exception for an error response (`body` the parsed JSON, or text)."""
    data = dict(body) if isinstance(body, dict) else {}
    message = data.pop("message", None) or (body if isinstance(body, str) and body else None)
    reason = data.pop("reason", None)
    if not message:
        message = f"the server answered {status} without a message"
    if reason == "unavailable":
        cls: type[MASClientError] = Unavailable
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, MASClientError)
    data.pop("status", None)
    return cls(str(message), status=status, reason=reason, **data)
