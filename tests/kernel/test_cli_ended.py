"""`jupyter mas attach` and `send` on a worker that is not running: ended for it (its
session paused or stopped, the worker restarted or deleted) or by itself (a code, a signal).
They say which, and what to do next, never "code None"."""

from __future__ import annotations

import subprocess

import pexpect
import pytest
from kernel_support import CLI, demo_idle, detach, spawn_cli, wait_until

from mas_jupyter.kernel.outputs import Reply


def _status(child) -> int:
    """How the `jupyter mas attach` in child ended, once it has."""
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def _attach_refused(cli, *args: str) -> str:
    child = spawn_cli(cli, "attach", *args)
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
    child = spawn_cli(cli, "attach", name)
    child.expect_exact("detach with Ctrl-]")
    assert detach(child) == 0
    client.delete(name, purge=True)


@pytest.mark.parametrize("how", ["pause", "stop"])
def test_attach_ended_by_a_pause_or_a_stop_says_to_resume(cli, client, how):
    name = f"attached-{how}"
    client.create_session(name, terminal=True)
    child = spawn_cli(cli, "attach", name, "terminal")
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


def _send_cut_off(cli, client, name: str, cut) -> tuple[int, str, str]:
    """`jupyter mas send NAME /sleep 30`, cut off by cut() once the agent is busy."""
    code, _, err = cli("new", name, "--agent=demo")
    assert code == 0, err
    demo_idle(client, name)
    send = subprocess.Popen(
        [*CLI, "send", name, "/sleep 30"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: client.worker("demo", session=name).activity == "busy", 15, "busy")
        cut()
        out, err = send.communicate(timeout=30)
    finally:
        send.kill()
    return send.returncode, out, err


def test_a_send_cut_off_by_a_pause_says_so(cli, client):
    """Before: `[the agent exited (code None)]`."""
    _, out, err = _send_cut_off(cli, client, "race-p", lambda: client.pause("race-p"))
    assert out.startswith("[the agent was stopped: its session was paused]\n"), (out, err)
    client.delete("race-p", purge=True)


def test_a_send_cut_off_by_a_delete_of_its_worker_says_so(cli, client):
    """The waiting send still gets its answer (not a 404): the worker was deleted."""
    _, out, err = _send_cut_off(
        cli, client, "race-d", lambda: client.delete_worker("demo", session="race-d")
    )
    assert out.startswith("[the agent was stopped: the worker was deleted]\n"), (out, err)
    assert "Traceback" not in err
    client.delete("race-d", purge=True)


def test_a_send_that_got_no_reply_because_the_agent_ended_exits_with_status_1(cli, client):
    code, out, err = _send_cut_off(cli, client, "race-s", lambda: client.pause("race-s"))
    client.delete("race-s", purge=True)
    assert code == 1, (out, err)


def test_a_send_whose_server_dies_says_the_connection_was_lost(lone_server):
    """Before: `cannot reach the Jupyter server at ...: Stream is closed; is it running?`,
    though the server had been reached and had the message."""
    server = lone_server
    env = {**server.env, "MAS_SERVER_URL": server.url, "MAS_TOKEN": server.token}
    made = subprocess.run(
        [*CLI, "new", "dying", "--agent=demo"], env=env, capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    send = subprocess.Popen(
        [*CLI, "send", "dying", "/sleep 30"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        demo = "mas/sessions/dying/workers/demo"
        wait_until(lambda: server.api("GET", demo)["activity"] == "busy", 15, "busy")
        server.proc.kill()
        server.proc.wait(10)
        out, err = send.communicate(timeout=30)
    finally:
        send.kill()
    assert (send.returncode, out) == (1, ""), err
    assert err == (
        f"jupyter mas send: lost the connection to the Jupyter server at {server.url} before "
        "it answered POST sessions/dying/workers/demo/send: did it stop? The message may have "
        "been typed: the worker's output says, once the server runs again.\n"
    )


def _reply(**fields) -> Reply:
    data = {"reply": "", "activity": "exited", "timed_out": False, "exit_code": None}
    return Reply(None, {**data, **fields}, worker="lead")


@pytest.mark.parametrize(
    ("reason", "code", "words"),
    [
        ("paused", None, "the agent was stopped: its session was paused"),
        ("stopped", None, "the agent was stopped: its session was stopped"),
        ("restarted", None, "the agent was stopped: the worker was restarted"),
        ("deleted", None, "the agent was stopped: the worker was deleted"),
        ("server stopped", None, "the agent was stopped: the server stopped"),
        ("exited", 0, "the agent exited with code 0"),
        ("crashed", 3, "the agent exited with code 3"),
        ("crashed", None, "the agent was killed by a signal"),
        (None, 2, "the agent exited with code 2"),  # a server without exit_reason
        (None, None, "the agent exited"),
    ],
)
def test_a_reply_says_why_the_agent_ended_before_it_replied(reason, code, words):
    reply = _reply(exit_code=code, exit_reason=reason, reply="half an answer")
    assert repr(reply) == f"[{words}]\nhalf an answer"
    # Cut off while it waited its turn: never typed, no text; it read "[sent; not waiting
    # for the reply]" (QA).
    assert repr(_reply(exit_code=code, exit_reason=reason, reply=None)) == f"[{words}]\n"
    shown = reply._repr_html_()
    assert shown == f"<div><b>lead</b> — <i>{words}</i></div>\n<p>half an answer</p>\n"
    assert reply.ended is True
    assert "None" not in words


def test_a_reply_that_came_or_was_not_waited_for_has_not_ended():
    assert _reply(activity="idle", reply="done", exit_reason=None).ended is False
    assert _reply(activity="busy", reply=None, exit_reason=None).ended is False
    timed_out = _reply(activity="busy", reply="", timed_out=True, exit_reason=None)
    assert timed_out.ended is False
    assert repr(timed_out).startswith("[timed out waiting; the agent is still working]")
