"""The OpenAPI document of the REST API, kept as one YAML file in the package."""

from __future__ import annotations

import functools
import os

import yaml

OPENAPI_PATH = os.path.join(os.path.dirname(__file__), "openapi.yaml")


@functools.lru_cache(maxsize=1)
def openapi_document() -> dict:
    """The parsed openapi.yaml (read once)."""
    with open(OPENAPI_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)
