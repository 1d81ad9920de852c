"""Fixtures for the reliability suite (helpers are in harness.py)."""

from __future__ import annotations

import signal

import pytest

from bench.client import Api
from bench.server import JupyterServer
from tests.reliability.harness import make_server, serve


@pytest.fixture
def servers(tmp_path):
    """make(name, config, **kw) -> a started server; all are stopped (and tmux ended) after."""
    made: list[JupyterServer] = []

    def make(name: str = "srv", config: dict | None = None, start: bool = True, **kwargs):
        server = make_server(tmp_path, name, config, **kwargs)
        made.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in made:
        try:
            server.kill(signal.SIGKILL)
        finally:
            server.kill_tmux()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One server for a module's tests that do not need a fresh one."""
    yield from serve(tmp_path_factory.mktemp("shared"))


@pytest.fixture
def api_for():
    """api_for(server) -> an async Api client, closed after the test."""
    made: list[Api] = []

    def make(server: JupyterServer) -> Api:
        api = Api(server)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()
