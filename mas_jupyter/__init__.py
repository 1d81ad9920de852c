"""mas_jupyter: run and watch several coding agents from Jupyter."""

from ._version import __version__

__all__ = ["__version__"]


def _jupyter_server_extension_points() -> list[dict]:
    """The jupyter_server extension: REST and WebSocket API under /api/mas."""
    from .server.app import MASExtensionApp

    return [{"module": "mas_jupyter.server.app", "app": MASExtensionApp}]
