"""The jupyter_server extension app: builds the engine, runs recovery, routes, events."""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any

from jupyter_server._tz import utcnow
from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Int, Type

from ..core.manager import MASManager
from . import events, handlers
from .channel import ChannelHandler


class MASExtensionApp(ExtensionApp):
    """Serves mas_jupyter's REST and WebSocket API under {base_url}api/mas."""

    name = "mas_jupyter"

    manager_class = Type(
        default_value=MASManager,
        klass=MASManager,
        help="The engine class (configure it with c.MASManager.*).",
    ).tag(config=True)
    max_body_bytes = Int(
        8 * 1024 * 1024,
        help="The largest REST request body accepted, in bytes; larger ones get 413.",
    ).tag(config=True)
    client_queue_chars = Int(
        4 * 1024 * 1024,
        help="Output queued for one WebSocket client, in characters (at least twice "
        "MASManager.output_buffer_bytes). Past it, a console that still reads skips ahead to "
        "the recent output; one that stalled is dropped. Bounds memory per slow client.",
    ).tag(config=True)
    client_stall_seconds = Float(
        5.0,
        help="A console client whose last frame has waited this long when its queue is full is "
        "dropped (it can reconnect and replay the recent output).",
    ).tag(config=True)

    manager: MASManager
    start_error: str | None = None
    _ready: asyncio.Future | None = None

    def initialize_settings(self) -> None:
        """Build and open the engine; hook its events into the server's event system."""
        assert self.serverapp is not None
        self.sockets: set[Any] = set()
        self.manager = self.manager_class(
            parent=self, log=self.log, root_dir=self.serverapp.root_dir
        )
        try:
            self.manager.start()
        except Exception as e:
            # A state folder or database the engine cannot use: leave it untouched, serve no
            # half-working API, keep the rest of Jupyter running, and say what to change.
            self.start_error = _start_error(self.manager.resolved_sessions_root, e)
            self.log.debug("mas_jupyter: start failed", exc_info=True)
            self.log.error("%s", self.start_error)
            return
        events.register_schemas(self.serverapp.event_logger)
        self._unsubscribe = [
            self.manager.events.subscribe(events.forwarder(self.serverapp.event_logger)),
            self.manager.events.subscribe(lambda _event: self.touch()),
        ]

    def initialize_handlers(self) -> None:
        """Register every route under {base_url}api/mas (none if the engine could not start)."""
        if self.start_error is not None:
            return
        _W = r"/api/mas/sessions/(?P<sid>[^/]+)/workers/(?P<wid>[^/]+)"
        self.handlers.extend(handlers.default_handlers)
        self.handlers.append((rf"{_W}/channel", ChannelHandler))
        self.handlers.extend(events.default_handlers)
        self.handlers.append((r"/api/mas(?:/.*)?", handlers.NoRouteHandler))  # last

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Run crash recovery as soon as the server's loop runs."""
        _stop_cleanly_on_sigint(serverapp)
        if self.start_error is None:
            await self.ready()

    @property
    def recovered(self) -> bool:
        """Whether start-up recovery has finished."""
        return self._ready is not None and self._ready.done()

    def ready(self) -> asyncio.Future:
        """Finishes when start-up recovery is done; every request awaits it first."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._recover())
        return asyncio.shield(self._ready)

    async def _recover(self) -> None:
        try:
            report = await self.manager.recover()
        except Exception:
            # Serve anyway: the state that was read is still usable; the log says what failed.
            self.log.exception("mas_jupyter: recovery at start-up failed")
        else:
            self.log.info("mas_jupyter: recovered %s", report)

    def touch(self) -> None:
        """Count engine activity (output, events) as server activity for idle culling."""
        assert self.serverapp is not None
        self.serverapp.web_app.settings["last_activity_times"][self.name] = utcnow()

    def current_activity(self) -> list[dict] | None:
        """Running workers keep the server from being culled as idle."""
        if self.start_error is not None:
            return None
        running = [
            w
            for workers in self.manager.supervisor.worker_dicts_by_session().values()
            for w in workers
            if w.get("status") in ("starting", "running")
        ]
        return running or None

    async def stop_extension(self) -> None:
        """Close the sockets, stop pty workers and detach tmux ones, close the store."""
        for socket in list(getattr(self, "sockets", ())):
            socket.shutdown()
        for unsubscribe in getattr(self, "_unsubscribe", []):
            unsubscribe()
        if self._ready is not None and not self._ready.done():
            await asyncio.wait([self._ready])
        if hasattr(self, "manager") and self.start_error is None:
            await self.manager.shutdown()


def _stop_cleanly_on_sigint(serverapp: Any) -> None:
    """Have SIGINT stop the server as SIGTERM does when Jupyter left it to Python's default.

    Jupyter handles SIGINT only when its stdin is a terminal (it asks "Shutdown this Jupyter
    server (y/[n])?"). Started without one (a container without -t, a service manager, a
    script), Ctrl-C or `kill -INT` raises KeyboardInterrupt out of the loop: the process ends
    without stopping its extensions, so pty workers died with it and the next start found
    them interrupted. A handler someone installed, or SIGINT ignored (`jupyter server &`
    without job control), is left alone.
    """
    stop = getattr(serverapp, "_signal_stop", None)  # what Jupyter runs on SIGTERM
    if (
        stop is not None
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        signal.signal(signal.SIGINT, stop)
        serverapp.log.debug("mas_jupyter: SIGINT stops the server as SIGTERM does (no terminal)")


def _start_error(sessions_root: str, error: Exception) -> str:
    """The one log line for an engine that could not start: the cause once, the advice once.

    The engine's messages name the path they are about, and some already say which option to
    set (`cannot use the sessions root ...; set c.MASManager.sessions_root to ...`): the path
    and that advice are then not said a second time.
    """
    cause = str(error).strip().rstrip(".") or type(error).__name__
    if sessions_root not in cause:
        cause = f"it could not open its state in {sessions_root}: {cause}"
    if "c.MASManager.sessions_root" in cause:
        advice = ", then restart the server."
    else:
        advice = (
            ". Fix that, or set c.MASManager.sessions_root (and c.MASManager.db_path) to a "
            "folder this server can write, then restart the server."
        )
    return f"mas_jupyter is not serving /api/mas: {cause}{advice}"
