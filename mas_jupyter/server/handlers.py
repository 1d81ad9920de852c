"""REST handlers under {base_url}api/mas: each parses, calls one manager method, writes JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join
from tornado import web

from ..core.errors import InvalidError, NotFoundError
from .base import MASAPIHandler
from .openapi import openapi_document

_SID = r"(?P<sid>[^/]+)"
_WID = r"(?P<wid>[^/]+)"


def _field(body: dict, name: str, types: type | tuple[type, ...], required: bool = False) -> Any:
    """One typed field of a body; booleans are never numbers."""
    if name not in body or body[name] is None:
        if required:
            raise InvalidError(f"{name!r} is required")
        return None
    value = body[name]
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise InvalidError(f"{name!r} has the wrong type")
    if not isinstance(value, types):
        raise InvalidError(f"{name!r} has the wrong type")
    return value


class SessionsHandler(MASAPIHandler):
    """List and create sessions."""

    @web.authenticated
    @authorized
    def get(self) -> None:
        """Sessions, with their workers; filtered by status, kind and task."""
        args = {k: self.get_query_argument(k, None) for k in ("status", "kind", "task")}
        body, self._etag = self.manager.list_sessions_json(**args)
        self.finish(body)  # already JSON; a client that has it gets 304 Not Modified

    def compute_etag(self) -> str | None:
        """The listing's tag, made with it (tornado would hash the whole body per request)."""
        return getattr(self, "_etag", None)

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Create a session (the manager checks the fields)."""
        self.reply(await self.manager.create_session(self.json_body(what="a session")), 201)


class SessionHandler(MASAPIHandler):
    """One session: read, rename or set its task, delete."""

    @web.authenticated
    @authorized
    def get(self, sid: str) -> None:
        """One session by id or name."""
        self.reply(self.manager.get_session(sid))

    @web.authenticated
    @authorized
    def patch(self, sid: str) -> None:
        """Rename a session and/or set its task."""
        self.reply(self.manager.update_session(sid, self.json_body(what="a session update")))

    @web.authenticated
    @authorized
    async def delete(self, sid: str) -> None:
        """Stop everything and forget the session; `purge` removes the workspace too."""
        purge, force = self.bool_arg("purge"), self.bool_arg("force")
        result = await self.manager.delete_session(sid, purge=purge, force=force)
        if result.get("rescue_ref"):  # where forced-away worktree changes were saved
            self.set_header("X-MAS-Rescue-Ref", result["rescue_ref"])
        self.reply(None, 204)


class SessionActionHandler(MASAPIHandler):
    """POST /pause, /resume, /stop."""

    def initialize(self, action: str, **kwargs: Any) -> None:  # type: ignore[override]
        """Remember which action this route is."""
        super().initialize(**kwargs)
        self.action = action

    @web.authenticated
    @authorized
    async def post(self, sid: str) -> None:
        """Run the lifecycle action; stop honours `force`."""
        if self.action == "stop":
            body = self.json_body({"force"}, "stop")
            force = body.get("force", False)  # the manager checks it (null is not false)
            self.reply(await self.manager.stop_session(sid, force=force))
        else:
            self.json_body(set(), self.action)
            method = getattr(self.manager, f"{self.action}_session")
            self.reply(await method(sid))


class ConnectHandler(MASAPIHandler):
    """How to reach a session: workspace, worker channels, tmux attach commands."""

    @web.authenticated
    @authorized
    def post(self, sid: str) -> None:
        """Connection details of a session."""
        self.json_body(set(), "connect")
        self.reply(self.manager.connect_info(sid))


class ActivitiesHandler(MASAPIHandler):
    """A session's activity log."""

    @web.authenticated
    @authorized
    def get(self, sid: str) -> None:
        """Entries oldest first; `since` is a seq, `limit` the newest N."""
        limit, since = self.int_arg("limit"), self.int_arg("since")
        self.reply(self.manager.list_activities(sid, limit=limit, since=since))


class WorkersHandler(MASAPIHandler):
    """List and create a session's workers."""

    @web.authenticated
    @authorized
    def get(self, sid: str) -> None:
        """The session's workers."""
        self.reply(self.manager.list_workers(sid))

    @web.authenticated
    @authorized
    async def post(self, sid: str) -> None:
        """Start a worker (the manager checks the fields)."""
        self.reply(await self.manager.create_worker(sid, self.json_body(what="a worker")), 201)


class WorkerHandler(MASAPIHandler):
    """One worker: read, kill and remove."""

    @web.authenticated
    @authorized
    def get(self, sid: str, wid: str) -> None:
        """One worker by id or name."""
        self.reply(self.manager.get_worker(sid, wid))

    @web.authenticated
    @authorized
    async def delete(self, sid: str, wid: str) -> None:
        """Kill the worker's process group and remove it."""
        await self.manager.delete_worker(sid, wid)
        self.reply(None, 204)


class InputHandler(MASAPIHandler):
    """Raw keystrokes to a worker."""

    @web.authenticated
    @authorized
    async def post(self, sid: str, wid: str) -> None:
        """Write `data` to the worker's terminal as typed."""
        data = _field(self.json_body({"data"}, "input"), "data", str, required=True)
        await _maybe_await(self.manager.write_input(sid, wid, data))
        self.reply({"written": len(data)})


class SendHandler(MASAPIHandler):
    """A message to an agent, optionally waiting for its reply."""

    @web.authenticated
    @authorized
    async def post(self, sid: str, wid: str) -> None:
        """Type and submit `text`; with `wait`, answer when the agent is idle or waiting."""
        body = self.json_body({"text", "wait", "timeout"}, "send")
        text = _field(body, "text", str, required=True)
        wait, timeout = body.get("wait", False), body.get("timeout")  # the manager checks them
        self._sending = asyncio.ensure_future(
            self.manager.send_message(sid, wid, text, wait=wait, timeout=timeout)
        )
        try:
            result = await self._sending
        except asyncio.CancelledError:
            if not self._sending.cancelled():
                raise
            return  # the client went away: a message still waiting for its turn is not typed
        self.reply(result)

    def on_connection_close(self) -> None:
        """Whoever asked is gone (Ctrl-C on `jupyter mas send`): stop waiting for them."""
        super().on_connection_close()
        sending = getattr(self, "_sending", None)
        if sending is not None and not sending.done():
            sending.cancel()


class ScreenHandler(MASAPIHandler):
    """The rendered screen of a worker."""

    @web.authenticated
    @authorized
    def get(self, sid: str, wid: str) -> None:
        """Screen lines, cursor and activity."""
        self.reply(self.manager.get_screen(sid, wid))


class OutputHandler(MASAPIHandler):
    """Recent raw output of a worker."""

    @web.authenticated
    @authorized
    def get(self, sid: str, wid: str) -> None:
        """The last `tail` bytes of output (all that is kept by default)."""
        self.reply(self.manager.get_output(sid, wid, tail=self.int_arg("tail")))


class TranscriptHandler(MASAPIHandler):
    """A worker's transcript records."""

    @web.authenticated
    @authorized
    def get(self, sid: str, wid: str) -> None:
        """Records from `offset`, at most `limit`."""
        offset, limit = self.int_arg("offset"), self.int_arg("limit")
        args = {k: v for k, v in (("offset", offset), ("limit", limit)) if v is not None}
        self.reply(self.manager.get_transcript(sid, wid, **args))


class ResizeHandler(MASAPIHandler):
    """Resize a worker's terminal."""

    @web.authenticated
    @authorized
    def post(self, sid: str, wid: str) -> None:
        """Set `cols` and `rows`."""
        body = self.json_body({"cols", "rows"}, "resize")
        cols, rows = _field(body, "cols", int, True), _field(body, "rows", int, True)
        self.reply(self.manager.resize_worker(sid, wid, cols, rows))


class RestartHandler(MASAPIHandler):
    """Restart a worker; agents continue their conversation."""

    @web.authenticated
    @authorized
    async def post(self, sid: str, wid: str) -> None:
        """Stop and start the worker again."""
        self.json_body(set(), "restart")
        self.reply(await self.manager.restart_worker(sid, wid))


class CatalogHandler(MASAPIHandler):
    """GET /backends, /personas, /templates."""

    def initialize(self, what: str, **kwargs: Any) -> None:  # type: ignore[override]
        """Remember which catalogue this route lists."""
        super().initialize(**kwargs)
        self.what = what

    @web.authenticated
    @authorized
    def get(self) -> None:
        """What can be used."""
        self.reply(getattr(self.manager, f"list_{self.what}")())


class OpenAPIHandler(MASAPIHandler):
    """The OpenAPI 3 document of this API, as JSON."""

    @web.authenticated
    @authorized
    def get(self) -> None:
        """The document, from the package's openapi.yaml, with this server's base URL."""
        doc = {**openapi_document(), "servers": [{"url": url_path_join(self.base_url, "api/mas")}]}
        self.finish(json.dumps(doc))


class NoRouteHandler(MASAPIHandler):
    """Any other path under /api/mas: a JSON 404 that points to the API's description."""

    def _no_route(self, *args: str) -> None:
        raise NotFoundError(
            f"{self.request.method} {self.request.path} is not a mas_jupyter route; "
            "GET api/mas/openapi.json lists them"
        )

    get = web.authenticated(authorized(_no_route))
    post = web.authenticated(authorized(_no_route))
    patch = web.authenticated(authorized(_no_route))
    put = web.authenticated(authorized(_no_route))
    delete = web.authenticated(authorized(_no_route))


async def _maybe_await(value: object) -> object:
    if hasattr(value, "__await__"):
        return await value  # type: ignore[misc]
    return value


_S = rf"/api/mas/sessions/{_SID}"
_W = rf"{_S}/workers/{_WID}"

default_handlers: list[tuple] = [
    (r"/api/mas/sessions", SessionsHandler),
    (_S, SessionHandler),
    (rf"{_S}/pause", SessionActionHandler, {"action": "pause"}),
    (rf"{_S}/resume", SessionActionHandler, {"action": "resume"}),
    (rf"{_S}/stop", SessionActionHandler, {"action": "stop"}),
    (rf"{_S}/connect", ConnectHandler),
    (rf"{_S}/activities", ActivitiesHandler),
    (rf"{_S}/workers", WorkersHandler),
    (_W, WorkerHandler),
    (rf"{_W}/input", InputHandler),
    (rf"{_W}/send", SendHandler),
    (rf"{_W}/screen", ScreenHandler),
    (rf"{_W}/output", OutputHandler),
    (rf"{_W}/transcript", TranscriptHandler),
    (rf"{_W}/resize", ResizeHandler),
    (rf"{_W}/restart", RestartHandler),
    (r"/api/mas/backends", CatalogHandler, {"what": "backends"}),
    (r"/api/mas/personas", CatalogHandler, {"what": "personas"}),
    (r"/api/mas/templates", CatalogHandler, {"what": "templates"}),
    (r"/api/mas/openapi.json", OpenAPIHandler),
]
