"""`WorkerConsole`: an interactive terminal on a worker, in a notebook output (anywidget).

The kernel relays: the widget's model connects to the worker's console channel through the
client (a WebSocket to the server, or the in-process engine) and forwards output to the views
as custom messages; keystrokes and resizes come back the same way. So it works wherever
widgets work (JupyterLab, Notebook 7, VS Code) and needs no URL or token in the browser.
Output streams while the kernel runs other cells; typing is handled when the kernel is idle.
"""

from __future__ import annotations

import functools
import pathlib
import threading
from typing import Any

import anywidget
import traitlets

STATIC = pathlib.Path(__file__).resolve().parent.parent / "static"
REPLAY_MAX_CHARS = 1024 * 1024  # what a view opened later is sent, like the server's ring


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
        self.on_msg(self._from_view)
        self._closing = threading.Event()
        self.channel = self.client.channel(
            self._from_worker, worker=self.worker.id, session=self.worker.data["session_id"]
        )
        if self.status == "connecting":
            self.status = "connected"

    def _from_worker(self, kind: str, payload: Any) -> None:
        # On the client's loop thread: forward, never block. The channel reconnects by itself
        # after a dropped connection (see channel.py); its `setup` starts the replay.
        if kind == "setup":
            self.buffer = ""
            self.send({"type": "reset"})
            if self.status in ("connecting", "reconnecting"):
                self.status = "connected"
        elif kind == "stdout" and isinstance(payload, str):
            self.buffer = (self.buffer + payload)[-REPLAY_MAX_CHARS:]
            self.send({"type": "stdout", "data": payload})
        elif kind == "activity":
            self.activity = str(payload)
        elif kind == "exit":
            self.status = f"exited ({payload})"
            self.activity = "exited"
        elif kind == "disconnect":
            self.status = "disconnected"
        elif kind == "reconnecting":
            self.status = "reconnecting"
        elif kind == "closed" and self._closing.is_set():
            self.status = "closed"
        elif kind == "closed" and not self.status.startswith(("exited", "disconnected")):
            self.status = f"closed ({payload})" if payload else "closed"

    def _from_view(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "hello":
            self.send({"type": "replay", "data": self.buffer})
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
            if ready and not self.channel.closed.is_set():
                self.channel.write("".join(ready))

    def write(self, data: str) -> None:
        """Type into the worker, as the view does."""
        self.channel.write(data)

    def close(self) -> None:
        """Disconnect from the worker (it keeps running) and close the widget."""
        self._closing.set()
        self.channel.close()
        super().close()


def _is_worker(value: Any) -> bool:
    from ..records import Worker

    return isinstance(value, Worker)
