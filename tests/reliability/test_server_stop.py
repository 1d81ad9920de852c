"""A server stopped by a signal, started without a terminal (a container, a service manager,
a script): the extension's workers are stopped cleanly and a restart finds them resumable."""

from __future__ import annotations

import signal

import pytest

from tests.reliability.harness import db_rows, tree_gone


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_signal_stops_the_server_cleanly_without_a_terminal(servers, api_for, sig):
    server = servers(f"stop-{sig.name}")  # stdin is /dev/null: Jupyter asks nothing on SIGINT
    api = api_for(server)
    session = await api.ok("POST", "sessions", {"name": "churn", "workers": [{"kind": "terminal"}]})
    pid = session["workers"][0]["pid"]

    status = server.kill(sig)

    assert status == 0, server.log()  # a clean exit, not a KeyboardInterrupt
    assert tree_gone(pid)
    # The engine's shutdown ran: the worker ended with the server, not found dead at restart.
    assert db_rows(server, "SELECT status, exit_reason FROM workers") == [
        ("exited", "server stopped")
    ]
    assert db_rows(server, "SELECT status FROM sessions") == [("paused",)]
    server.start()
    resumed = await api.ok("POST", "sessions/churn/resume")
    assert resumed["status"] == "active"
    assert resumed["workers"][0]["status"] == "running"
