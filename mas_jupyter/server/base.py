"""The handler mixin: the manager, JSON bodies with limits and closed schemas, typed errors."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from ..core.errors import InvalidError, MASError, TooLargeError
from ..core.validate import closed_fields, unicode_body

if TYPE_CHECKING:
    from ..core.manager import MASManager
    from .app import MASExtensionApp

AUTH_RESOURCE = "mas"
_INT_RE = re.compile(r"^[0-9]{1,18}$")
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
# A \ud800-\udfff escape: the only way a JSON body can hold a lone surrogate.
_SURROGATE_ESCAPE_RE = re.compile(rb"\\u[dD][89a-fA-F]")
# Reasons for the errors tornado and jupyter_server raise themselves.
REASONS = {
    400: "invalid",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    429: "limit_reached",
}


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


class MASMixin(ExtensionHandlerMixin):
    """What every mas_jupyter handler shares: the app, the manager and the auth resource."""

    auth_resource = AUTH_RESOURCE

    @property
    def mas_app(self) -> MASExtensionApp:
        """The running extension app."""
        return self.extensionapp  # type: ignore[return-value]

    @property
    def manager(self) -> MASManager:
        """The engine."""
        return self.mas_app.manager


class MASAPIHandler(MASMixin, APIHandler):
    """A REST handler: JSON in and out, MASError subclasses become their HTTP status."""

    async def prepare(self) -> None:  # type: ignore[override]
        """Authenticate, then wait until start-up recovery has finished."""
        await super().prepare()
        if not self.mas_app.recovered:
            await self.mas_app.ready()

    def json_body(self, allowed: set[str] | None = None, what: str = "the request") -> dict:
        """The body as a JSON object ({} when empty); unknown fields refused when `allowed`."""
        body = self.request.body or b""
        limit = self.mas_app.max_body_bytes
        if len(body) > limit:
            raise TooLargeError(f"the request body is over {limit} bytes; send less at once")
        if not body.strip():
            data: Any = {}
        else:
            try:
                data = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
            except (UnicodeDecodeError, ValueError, RecursionError) as e:
                raise InvalidError(f"the body is not valid UTF-8 JSON: {e}") from None
            if _SURROGATE_ESCAPE_RE.search(body):
                unicode_body(data, f"the body of {what}")
        if not isinstance(data, dict):
            raise InvalidError(f"the body of {what} must be a JSON object")
        if allowed is not None:
            closed_fields(data, allowed, what)
        return data

    def int_arg(self, name: str) -> int | None:
        """An optional non-negative integer query argument."""
        value = self.get_query_argument(name, None)
        if value is None:
            return None
        if not _INT_RE.fullmatch(value):
            raise InvalidError(f"{name} must be a non-negative integer (got {value!r})")
        return int(value)

    def bool_arg(self, name: str) -> bool:
        """An optional boolean query argument: true/false/1/0, default false."""
        value = self.get_query_argument(name, None)
        if value is None:
            return False
        if value.lower() not in _BOOLS:
            raise InvalidError(f"{name} must be true, false, 1 or 0 (got {value!r})")
        return _BOOLS[value.lower()]

    def reply(self, data: object, status: int = 200) -> None:
        """Finish with a JSON body (or none for 204)."""
        self.set_status(status)
        if status == 204:
            self.finish()
        else:
            self.finish(json.dumps(data))

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[no-untyped-def]
        """Expected errors are the client's, not the server's: no traceback for them."""
        if isinstance(value, MASError) and value.status < 500:
            self.log.info("%s %s: %s", self.request.method, self.request.path, value.message)
            return
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors as JSON with `message` and `reason` (and details), never a traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json")
        if isinstance(exc, MASError):
            self.set_status(exc.status)
            self.finish(json.dumps(exc.to_dict()))
            return
        if isinstance(exc, web.HTTPError):
            reason = REASONS.get(status_code, "error")
            message = exc.log_message or self._reason
            if exc.args and exc.log_message:
                try:
                    message = exc.log_message % exc.args
                except (TypeError, ValueError):
                    pass
            self.finish(json.dumps({"message": message, "reason": reason}))
            return
        super().write_error(status_code, **kwargs)
