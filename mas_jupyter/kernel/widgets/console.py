"""`WorkerConsole`: an interactive terminal on a worker, in a notebook output (anywidget).

The kernel relays: the widget's model connects to the worker's console channel through the
client (a WebSocket to the server, or the in-process engine) and forwards output to the views
as custom messages; keystrokes and resizes come back the same way. So it works wherever
widgets work (JupyterLab, Notebook 7, VS Code) and needs no URL or token in the browser.
Output streams while the kernel runs other cells; typing is handled when the kernel is idle.

When the worker exits, the console follows it: it watches the event stream and connects
again once the worker runs again (restarted from anywhere, or its session resumed), as the
side panel's console does. If the server cannot be reached just then, it looks again after
`RETRY_FIRST_SECONDS`, then twice as long each time up to `RETRY_MAX_SECONDS`.
"""

from __future__ import annotations

import concurrent.futures
import functools
import pathlib
import threading
from typing import Any

import anywidget
import traitlets

from ...core.models import ENDED_FOR_IT
from ...core.queries import Answerer, without_queries
from ..errors import ConnectionFailed, MASClientError, NotFound
from .cell import close_with_cell

STATIC = pathlib.Path(__file__).resolve().parent.parent / "static"
REPLAY_MAX_CHARS = 1024 * 1024  # what a view opened later is sent, like the server's ring
RETRY_FIRST_SECONDS = 0.5  # the server was not reachable while following: look again then
RETRY_MAX_SECONDS = 10.0


def _umd(source: str, name: str) -> str:
    # The vendored bundles are UMD: give each a CommonJS-like `module` to fill.
    return (
        f"const {name} = (() => {{ const module = {{ exports: {{}} }}; "
        f"const exports = module.exports;\n{source}\nreturn module.exports; }})();\n"
    )


@functools.lru_cache(maxsize=1)
def bundle() -> tuple[str, str]:
    """The widget's ES module (xterm.js, its fit addon, console.js) and its CSS."""
    xterm = (STATIC / "xterm.js").read_text(encoding="utf-8")
    fit = (STATIC / "addon-fit.js").read_text(encoding="utf-8")
    view = (STATIC / "console.js").read_text(encoding="utf-8")
    esm = (
        _umd(xterm, "__xterm")
        + _umd(fit, "__fit")
        + "const Terminal = __xterm.Terminal;\nconst FitAddon = __fit.FitAddon;\n"
        + view
    )
    css = (STATIC / "xterm.css").read_text(encoding="utf-8") + (STATIC / "console.css").read_text(
        encoding="utf-8"
    )
    return esm, css


class WorkerConsole(anywidget.AnyWidget):
    """A terminal attached to a worker: history replayed, live output, typing, resizing."""

    _esm = traitlets.Unicode().tag(sync=True)
    _css = traitlets.Unicode().tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("connecting").tag(sync=True)
    activity = traitlets.Unicode("unknown").tag(sync=True)
    cols = traitlets.Int(120).tag(sync=True)
    rows = traitlets.Int(24).tag(sync=True)

    def __init__(
        self,
        worker: Any = None,
        session: Any = None,
        client: Any = None,
        rows: int = 24,
        **kwargs: Any,
    ) -> None:
        esm, css = bundle()
        if client is None:
            from .. import connect

            client = connect()
        record = client.worker(worker, session=session) if not _is_worker(worker) else worker
        super().__init__(
            _esm=esm,
            _css=css,
            title=f"{record.name} · {record.backend}",
            activity=record.data.get("activity") or "unknown",
            cols=record.data.get("cols") or 120,
            rows=rows,
            **kwargs,
        )
        self.client = client
        self.worker = record
        self.buffer = ""
        self._typing: dict[str, tuple[int, dict[int, str]]] = {}  # view -> (next seq, held)
        self._typing_lock = threading.Lock()
        self._answerer = Answerer()  # which view answers the program's terminal queries
        self.on_msg(self._from_view)
        self._closing = threading.Event()
        self._exited = False  # the channel ended with the worker's exit: follow it
        self._follow_lock = threading.Lock()
        self._following: Any = None  # the event subscription while waiting for a restart
        self._retry_seconds = RETRY_FIRST_SECONDS
        self.channel: Any = None
        try:
            self._connect()
        except BaseException:  # the server cannot be reached: no half-made widget stays
            self.close()
            raise
        close_with_cell(self)

    def __repr__(self) -> str:
        # The text a front end without widgets shows: the bar's worker, connection, activity.
        shown = f"{self.status}, {self.activity}" if self.status == "connected" else self.status
        return f"<WorkerConsole {self.title}: {shown}>"

    def _connect(self) -> None:
        self.channel = self.client.channel(
            self._from_worker, worker=self.worker.id, session=self.worker.data["session_id"]
        )
        if self.status == "connecting":  # "connected" once typing reaches this channel
            self.status = "connected"

    def _from_worker(self, kind: str, payload: Any) -> None:
        # On the client's loop thread: forward, never block. The channel reconnects by itself
        # after a dropped connection (see channel.py); its `setup` starts the replay.
        if kind == "setup":
            self.buffer = ""
            self.send({"type": "reset"})
            if self.status == "reconnecting":  # the same channel, connected again
                self.status = "connected"
        elif kind == "stdout" and isinstance(payload, str):
            self.buffer = (self.buffer + payload)[-REPLAY_MAX_CHARS:]
            self._answerer.saw(payload)
            self.send({"type": "stdout", "data": payload})
        elif kind == "activity":
            self.activity = str(payload)
        elif kind == "exit":
            # Ended for it (a restart, a pause: SIGHUP, -1) is not a crash: say which.
            reason = getattr(self.channel, "exit_reason", None)
            self.status = reason if reason in ENDED_FOR_IT else f"exited ({payload})"
            self.activity = "exited"
            self._exited = True
        elif kind == "disconnect":
            self.status = "disconnected"
        elif kind == "reconnecting":
            self.status = "reconnecting"
        elif kind == "closed" and self._closing.is_set():
            self.status = "closed"
        elif kind == "closed" and not (self._exited or self.status == "disconnected"):
            self.status = f"closed ({payload})" if payload else "closed"
        if kind == "closed" and self._exited and not self._closing.is_set():
            # Subscribing waits for the event stream: not on the client's loop thread.
            threading.Thread(target=self._follow, name="mas-console-follow", daemon=True).start()

    def _follow(self) -> None:
        """Wait, through the event stream, for the exited worker to run again."""
        try:
            subscription = self.client.subscribe(self._on_event, on_connect=self._check)
        except ConnectionFailed:  # the server is not reachable for now
            self._retry(self._follow)
            return
        except MASClientError:  # no event stream: the console stays as it is
            return
        except (concurrent.futures.CancelledError, RuntimeError) as e:
            if self._closed_under(e):
                return
            raise
        with self._follow_lock:
            if self._closing.is_set() or self._following is not None:
                subscription.close()
                return
            self._following = subscription
        self._check()  # it may have been restarted before the subscription started

    def _on_event(self, event: dict) -> None:
        if event.get("session_id") != self.worker.data["session_id"]:
            return
        kind, wid = event.get("type"), self.worker.id
        mine = event.get("worker_id") == wid
        if kind == "session-deleted" or (kind == "worker-deleted" and mine):
            self._gone()
            return
        records = list((event.get("session") or {}).get("workers") or [])
        records += [event["worker"]] if isinstance(event.get("worker"), dict) else []
        if any(w.get("id") == wid and w.get("status") == "running" for w in records):
            self._reconnect()

    def _check(self) -> None:
        """Read the worker: connect again if it runs, say so if it is gone."""
        if self._following is None:  # connected again, or closed, meanwhile
            return
        try:
            record = self.client.worker(self.worker.id, session=self.worker.data["session_id"])
        except NotFound:
            self._gone()
            return
        except ConnectionFailed:  # unreachable for now: look again later
            self._retry(self._check)
            return
        except MASClientError:  # refused: the event stream's next connection checks again
            return
        except (concurrent.futures.CancelledError, RuntimeError) as e:
            if self._closed_under(e):
                return
            raise
        if record.status == "running":
            self._reconnect()

    def _closed_under(self, error: BaseException) -> bool:
        """Whether a call failed because the client was closed meanwhile (its loop, stopping,
        cancelled the call, or is closed): nothing more to follow, and nothing to print from
        this console's thread."""
        cancelled = isinstance(error, concurrent.futures.CancelledError)
        return cancelled or self.client._loop.loop.is_closed()

    def _retry(self, action: Any) -> None:
        """Do `action` again later, with a growing delay, unless closed meanwhile."""
        delay = self._retry_seconds
        self._retry_seconds = min(2 * delay, RETRY_MAX_SECONDS)
        if not self._closing.is_set():
            timer = threading.Timer(delay, lambda: self._closing.is_set() or action())
            timer.daemon = True
            timer.start()

    def _stop_following(self) -> bool:
        """Stop waiting for a restart; False if this console was not waiting."""
        with self._follow_lock:
            subscription, self._following = self._following, None
        if subscription is None:
            return False
        subscription.close()
        return True

    def _reconnect(self) -> None:
        if self._closing.is_set() or not self._stop_following():
            return
        self._exited = False
        self.status = "connecting"
        try:
            self._connect()
        except NotFound:
            self.status = "closed (the worker no longer exists)"
        except ConnectionFailed:  # not reachable just now: wait for the worker again
            self._exited = True
            self.status = "reconnecting"
            self._retry(self._follow)
        except MASClientError as e:
            self.status = f"closed ({e.message})"
        else:
            self._retry_seconds = RETRY_FIRST_SECONDS
            if self._closing.is_set():  # closed by the user while connecting
                self.channel.close()

    def _gone(self) -> None:
        if self._stop_following():
            self.status = "closed (the worker no longer exists)"

    def _from_view(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "hello":
            self.send({"type": "replay", "data": without_queries(self.buffer)})
        elif kind == "stdin" and isinstance(content.get("data"), str):
            self._type(content)
        elif kind == "resize":
            cols, rows = content.get("cols"), content.get("rows")
            if isinstance(cols, int) and isinstance(rows, int) and not isinstance(cols, bool):
                self.cols = max(10, min(cols, 1000))
                self.channel.resize(max(5, min(rows, 500)), self.cols)

    def _type(self, content: dict) -> None:
        # Messages of one view are written in the order it sent them, whatever order the
        # kernel handled them in; messages without a sequence number go straight through.
        view, seq = content.get("view"), content.get("seq")
        with self._typing_lock:
            if not isinstance(view, str) or not isinstance(seq, int):
                ready = [content["data"]]
            else:
                expected, held = self._typing.get(view, (0, {}))
                held[seq] = content["data"]
                ready = []
                while expected in held:
                    ready.append(held.pop(expected))
                    expected += 1
                if len(held) > 10_000:  # a lost message: give up waiting for it
                    ready += [held[k] for k in sorted(held)]
                    held.clear()
                    expected = seq + 1
                self._typing[view] = (expected, held)
                # A widget shown twice has two views, and both answer a query it shows.
                ready = [data for data in ready if self._answerer.admits(data, view)]
            if ready and not self.channel.closed.is_set():
                self.channel.write("".join(ready))

    def write(self, data: str) -> None:
        """Type into the worker, as the view does."""
        self.channel.write(data)

    def close(self) -> None:
        """Disconnect from the worker (it keeps running) and close the widget."""
        self._closing.set()
        self._stop_following()
        if self.channel is not None:
            self.channel.close()
        self.status = "closed"  # also when its channel had ended already (an exited worker)
        super().close()


def _is_worker(value: Any) -> bool:
    from ..records import Worker

    return isinstance(value, Worker)
