"""The version of mas_jupyter."""

__version__ = "0.1.0"
