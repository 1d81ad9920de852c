"""`jupyter mas attach` and `send` on a worker that is not running: ended for it (its
session paused or stopped, the worker restarted or deleted) or by itself (a code, a signal).
They say which, and what to do next, never "code None"."""

from __future__ import annotations

import pexpect
import pytest
import test_cli
from kernel_support import demo_idle, wait_until
from test_cli import _spawn

cli = test_cli.cli  # the fixture: `jupyter mas ...` against the test server


def _status(child) -> int:
    """How the `jupyter mas attach` in child ended, once it has."""
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def _attach_refused(cli, *args: str) -> str:
    child = _spawn(cli, "attach", *args)
    assert _status(child) == 1, child.before
    return child.before.strip()


@pytest.mark.parametrize("how", ["pause", "stop"])
def test_attach_to_a_paused_or_stopped_session_says_to_resume_it(cli, client, how):
    """Before: `worker 'demo' has exited (code None); restart it first (jupyter mas restart
    ...)`, and that restart is refused (`session ... is paused; resume it first`)."""
    name = f"att-{how}"
    code, _, err = cli("new", name, "--agent=demo")
    assert code == 0, err
    demo_idle(client, name)
    code, _, err = cli(how, name)
    assert code == 0, err
    state = {"pause": "paused", "stop": "stopped"}[how]
    assert _attach_refused(cli, name) == (
        f"jupyter mas attach: session '{name}' is {state}; resume it first "
        f"(jupyter mas resume {name})"
    )
    # The hint works: resumed, the agent runs again and attach connects.
    code, _, err = cli("resume", name)
    assert code == 0, err
    demo_idle(client, name)
    child = _spawn(cli, "attach", name)
    child.expect_exact("detach with Ctrl-]")
    child.send("\x1d")
    child.expect_exact("[detached]")
    assert _status(child) == 0
    client.delete(name, purge=True)


@pytest.mark.parametrize("how", ["pause", "stop"])
def test_attach_ended_by_a_pause_or_a_stop_says_to_resume(cli, client, how):
    name = f"attached-{how}"
    client.create_session(name, terminal=True)
    child = _spawn(cli, "attach", name, "terminal")
    child.expect_exact("detach with Ctrl-]")
    getattr(client, how)(name)
    state = {"pause": "paused", "stop": "stopped"}[how]
    child.expect_exact(
        f"[worker terminal stopped: its session was {state} (resume it, then attach again)]"
    )
    assert _status(child) == 0
    client.delete(name, purge=True)


def test_attach_to_a_worker_killed_by_a_signal_names_the_signal(cli, client):
    """Before: `has exited (code None)` (a signal leaves no exit code)."""
    client.create_session("att-sig", terminal=True)
    client.input("kill -9 $$\r", "terminal", session="att-sig")
    wait_until(lambda: client.worker("terminal", session="att-sig").status == "exited", 15)
    assert _attach_refused(cli, "att-sig", "terminal") == (
        "jupyter mas attach: worker 'terminal' has exited (signal 9); restart it first "
        "(jupyter mas restart att-sig terminal)"
    )
    client.delete("att-sig", purge=True)
