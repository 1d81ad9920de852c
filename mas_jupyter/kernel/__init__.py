"""The notebook side of mas_jupyter: the client, the `%mas` magics, widgets, `jupyter mas`.

`connect()` finds the Jupyter server (see `discovery`) or runs the engine in-process, and
returns a `MASClient`; the client it returned last is the default one that the magics, the
widgets and `mas_jupyter.use()` work with.
"""

from __future__ import annotations

import threading

from .client import MASClient, Use
from .errors import (
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidRequest,
    LimitReached,
    MASClientError,
    NoActiveSession,
    NotFound,
    ServerError,
    TooLarge,
    Unavailable,
)
from .loop import LoopThread

__all__ = [
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "InvalidRequest",
    "LimitReached",
    "MASClient",
    "MASClientError",
    "NoActiveSession",
    "NotFound",
    "ServerError",
    "TooLarge",
    "Unavailable",
    "connect",
    "default_client",
    "use",
]

_lock = threading.Lock()
_loop: LoopThread | None = None
_default: MASClient | None = None


def _shared_loop() -> LoopThread:
    global _loop
    if _loop is None:
        _loop = LoopThread()
    return _loop


def connect(
    url: str | None = None,
    token: str | None = None,
    *,
    local: bool = False,
    root_dir: str | None = None,
    config: dict | None = None,
) -> MASClient:
    """The mas_jupyter client: a server found in the documented order, else in-process.

    With no arguments the same client is returned every time (found once), until it is
    closed. `url`/`token`
    name a server explicitly; `local=True` runs the engine in this process (with `root_dir`,
    default the working directory, and `config`, MASManager options such as
    `{"backends": {...}}`). The client returned becomes the default one.
    """
    global _default
    from .discovery import discover

    with _lock:
        reuse = _default is not None and not _default.closed
        if url is None and token is None and not local and reuse:
            return _default
        loop = _shared_loop()
        found = None if local else discover(url, token)
        if found is not None:
            from .transport import HTTPTransport

            client = MASClient(HTTPTransport(found.url, found.token), loop, found.how)
        else:
            from .inprocess import LocalTransport

            transport = LocalTransport(loop, root_dir=root_dir, config=config)
            client = MASClient(transport, loop, "explicit" if local else "no server: in-process")
        _default = client
        return client


def default_client() -> MASClient:
    """The default client (connecting on first use)."""
    return connect()


def use(session: object = None, worker: object = None) -> Use:
    """Make a session (and worker) active on the default client; a context manager too."""
    return connect().use(session, worker)  # type: ignore[arg-type]


def _reset_default() -> None:
    """Forget the default client (tests; a new connect() discovers again)."""
    global _default
    with _lock:
        _default = None
