"""Ctrl-C and Ctrl-\\ reach the worker's foreground program even when the server itself runs
with SIGINT ignored (as `jupyter server &` from a shell without job control does)."""

from __future__ import annotations

import pytest

from bench.client import PROMPT
from mas_jupyter.core import processes
from tests.conftest import until
from tests.reliability.harness import make_server

SIGINT_BIT = 1 << (2 - 1)


def ignored_signals(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("SigIgn:"):
                return int(line.split()[1], 16)
    raise AssertionError(f"no SigIgn for {pid}")


def sleeper_in(session_leader: int) -> int | None:
    for pid in processes.session_members(session_leader):
        try:
            with open(f"/proc/{pid}/comm") as fh:
                if fh.read().strip() == "sleep":
                    return pid
        except OSError:
            pass
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = make_server(tmp_path_factory.mktemp("sigint"), ignore_sigint=True)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("key, status", [("\x03", 130), ("\x1c", 131)])
async def test_interrupt_keys_reach_the_foreground_program(server, api_for, key, status):
    # The premise: the server process really ignores SIGINT.
    assert ignored_signals(server.pid) & SIGINT_BIT
    api = api_for(server)
    name = f"keys{status}"
    await api.ok("POST", "sessions", {"name": name})
    worker, console = await api.mas_shell(name)
    console.send("sleep 100\r")
    sleeper = await until(lambda: sleeper_in(worker["pid"]), timeout=20, what="sleep running")
    assert not ignored_signals(sleeper) & SIGINT_BIT  # the worker's programs do not inherit it
    console.send(key)
    await console.read_until(PROMPT, 20)
    console.send("echo status=$?\r")
    await console.read_until(f"status={status}", 20)
    assert not processes.is_alive(sleeper)
