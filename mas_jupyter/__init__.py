"""mas_jupyter: run and watch several coding agents from Jupyter."""

from ._version import __version__

__all__ = ["__version__"]
