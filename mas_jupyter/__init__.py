"""mas_jupyter: run and watch several coding agents from Jupyter."""

from ._version import __version__

__all__ = ["__version__", "connect", "use"]


def connect(*args, **kwargs):  # type: ignore[no-untyped-def]
    """The mas_jupyter client (see mas_jupyter.kernel.connect and docs/client.md)."""
    from .kernel import connect as _connect

    return _connect(*args, **kwargs)


def use(session=None, worker=None):  # type: ignore[no-untyped-def]
    """Make a session (and worker) active; `with mas_jupyter.use("churn"):` for a block."""
    from .kernel import use as _use

    return _use(session, worker)


def load_ipython_extension(ipython) -> None:  # type: ignore[no-untyped-def]
    """`%load_ext mas_jupyter`: register the %mas and %%mas magics."""
    from .kernel.magics import load_ipython_extension as _load

    _load(ipython)


def _jupyter_server_extension_points() -> list[dict]:
    """The jupyter_server extension: REST and WebSocket API under /api/mas."""
    from .server.app import MASExtensionApp

    return [{"module": "mas_jupyter.server.app", "app": MASExtensionApp}]
