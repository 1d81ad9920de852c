"""How connect() finds the server: each case of the documented order, and the fallback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
from kernel_support import SHELL_ARGV, demo_idle, execute, text_of

import mas_jupyter
from mas_jupyter.kernel import ConnectionFailed, NotFound
from mas_jupyter.kernel.discovery import discover, server_url


def test_explicit_arguments_win(server_env, monkeypatch):
    monkeypatch.setenv("MAS_SERVER_URL", "http://elsewhere.invalid/")
    found = discover("http://127.0.0.1:1/", "tok")
    assert (found.url, found.token, found.how) == ("http://127.0.0.1:1/", "tok", "explicit")
    client = mas_jupyter.connect(server_env.url, server_env.token)
    assert client.how == "explicit" and client.sessions() == []


def test_a_url_as_jupyter_prints_it_or_a_browser_shows_it(server_env, monkeypatch, tmp_path):
    assert server_url("http://h:8888/lab?token=abc") == ("http://h:8888/", "abc")
    assert server_url("http://h:8888/tree?token=abc#x") == ("http://h:8888/", "abc")
    assert server_url("https://hub/user/me/lab/tree/a/b.ipynb") == ("https://hub/user/me/", None)
    assert server_url("http://h:8888/base") == ("http://h:8888/base/", None)
    assert server_url(" http://h:8888 ") == ("http://h:8888/", None)
    assert server_url("localhost:8888/?token=t") == ("http://localhost:8888/", "t")
    # A URL that cannot be read is the client's error, not a ValueError's traceback.
    for unreadable in ("http://[::1:8888/", "http://h:port/"):
        with pytest.raises(ConnectionFailed, match="cannot read the server's URL"):
            server_url(unreadable)
    # The URL JupyterLab prints at start-up works as it is, with no token argument ...
    printed = f"{server_env.url}lab?token={server_env.token}"
    client = mas_jupyter.connect(printed)
    assert client.sessions() == [] and client.url == server_env.url
    assert server_env.token not in repr(client)
    # ... and as MAS_SERVER_URL; a token given apart wins over the one in the URL.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAS_SERVER_URL", printed)
    found = discover()
    assert (found.url, found.token) == (server_env.url, server_env.token)
    assert discover(printed, "other").token == "other"
    monkeypatch.setenv("MAS_TOKEN", "from-env")
    assert discover().token == "from-env"


def test_environment(server_env, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAS_SERVER_URL", server_env.url)
    monkeypatch.setenv("MAS_TOKEN", server_env.token)
    found = discover()
    assert found.how == "environment (MAS_SERVER_URL)" and found.token == server_env.token
    assert mas_jupyter.connect().sessions() == []
    monkeypatch.delenv("MAS_SERVER_URL")
    monkeypatch.delenv("MAS_TOKEN")
    monkeypatch.setenv("JUPYTER_SERVER_URL", server_env.url)
    monkeypatch.setenv("JUPYTER_TOKEN", server_env.token)
    found = discover()
    assert found.how == "environment (JUPYTER_SERVER_URL)" and found.token == server_env.token


def test_server_whose_root_contains_the_directory(server_env, monkeypatch):
    sub = server_env.root / "project" / "deep"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    found = discover()
    assert found.how == "the server of this directory"
    assert found.url == server_env.url and found.token == server_env.token
    client = mas_jupyter.connect()
    assert not client.in_process
    assert mas_jupyter.connect() is client  # the default client is found once
    client.create_session("found")
    assert [s.name for s in client.sessions()] == ["found"]


def test_no_server_for_a_directory_outside_every_root(server_env, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert discover() is None


def test_the_server_that_started_this_kernel(server_env):
    kernel = server_env.api("POST", "kernels", {"name": "python3"})
    try:
        from jupyter_client import BlockingKernelClient

        path = server_env.runtime / f"kernel-{kernel['id']}.json"
        deadline = time.monotonic() + 30
        while not path.exists():
            assert time.monotonic() < deadline, "the kernel's connection file did not appear"
            time.sleep(0.05)
        kc = BlockingKernelClient()
        kc.load_connection_file(str(path))
        kc.start_channels()
        # Not wait_for_ready(): without a manager it trusts the heartbeat, which may be late.
        msg_id = kc.kernel_info()
        while kc.get_shell_msg(timeout=60)["parent_header"].get("msg_id") != msg_id:
            pass
        # From a folder outside the server's root, only the kernel id can tell the server.
        code = (
            "import os, json; os.chdir('/')\n"
            "from mas_jupyter.kernel.discovery import discover\n"
            "f = discover(); print(json.dumps([f.how, f.url]))"
        )
        status, messages = execute(kc, code)
        kc.stop_channels()
        assert status == "ok", text_of(messages)
        how, url = json.loads(text_of(messages).strip().splitlines()[-1])
        assert (how, url) == ("the kernel's server", server_env.url)
    finally:
        server_env.api("DELETE", f"kernels/{kernel['id']}")


def test_in_process_fallback_without_a_server(no_servers, monkeypatch, tmp_path, until):
    monkeypatch.chdir(tmp_path)
    client = mas_jupyter.connect()
    try:
        assert client.in_process and client.how == "no server: in-process"
        assert str(tmp_path) in repr(client)
        with client.events(timeout=15) as events:
            s = client.create_session("local", agent="demo")
            assert events.wait_for(lambda e: e.get("activity") == "idle", 15)
        assert s.workspace.startswith(str(tmp_path / "mas-sessions"))
        with mas_jupyter.use("local"):
            assert client.send("in process").text == "reply: in process (2 words, 1 lines)"
        with pytest.raises(NotFound):
            client.session("other")
    finally:
        client.close()


def test_a_closed_in_process_client_is_replaced_and_a_root_in_use_is_refused_in_words(
    no_servers, monkeypatch, tmp_path
):
    """connect() went on returning the closed client, whose calls failed on a bare
    AssertionError; a second kernel in the same folder got the engine's StoreError with a
    15-frame traceback."""
    monkeypatch.chdir(tmp_path)
    client = mas_jupyter.connect()
    client.close()
    with pytest.raises(ConnectionFailed, match="in-process engine was closed"):
        client.sessions()
    again = mas_jupyter.connect()
    try:
        assert again is not client and again.sessions() == []
        other_kernel = (
            "import mas_jupyter\n"
            "from mas_jupyter.kernel import MASClientError\n"
            "try:\n"
            f"    mas_jupyter.connect(local=True, root_dir={str(tmp_path)!r})\n"
            "except MASClientError as e:\n"
            "    print('refused:', e)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", other_kernel], capture_output=True, text=True, timeout=60
        )
        assert done.stdout.startswith("refused: the sessions root"), done
        assert "in use by another process" in done.stdout and not done.stderr, done
    finally:
        again.close()


def test_in_process_engine_with_every_kind_of_call(tmp_path, monkeypatch, until):
    monkeypatch.setenv("MAS_DEMO_DELAY", "0.2")
    config = {"backends": {"shell": {"argv": SHELL_ARGV}}, "tmux_socket": str(tmp_path / "t")}
    client = mas_jupyter.connect(local=True, root_dir=str(tmp_path), config=config)
    try:
        client.create_session("p", agent="demo", terminal=True)
        demo_idle(client, "p")
        out = []
        channel = client.channel(lambda k, p: out.append((k, p)), worker="terminal", session="p")
        channel.resize(25, 90)
        channel.write("echo local-$((40+2))\r")
        until(lambda: "local-42" in "".join(p for k, p in out if k == "stdout"), what="echo")
        until(lambda: client.worker("terminal", "p").cols == 90, what="resize")
        channel.close()

        async def inside_a_running_loop():
            # A kernel's loop is running while cells execute: sync calls must still work.
            names = [s.name for s in client.sessions()]
            reply = await client.asend("from a loop", session="p")
            return names, reply

        names, reply = asyncio.run(inside_a_running_loop())
        assert names == ["p"] and reply.text.startswith("reply: from a loop")

        async def events_from_a_loop():
            with client.aevents(timeout=10) as stream:
                client.rename("p2", session="p")
                async for event in stream:
                    if event["type"] == "session-updated":
                        return event

        bus = client._transport.manager.events
        listening = len(bus._listeners)
        event = asyncio.run(events_from_a_loop())
        assert event["session"]["name"] == "p2"
        # The stream was the feed's only subscriber: the feed leaves the engine's bus.
        until(lambda: len(bus._listeners) == listening, what="the feed to unsubscribe")
        client.rename("p", session="p2")
        assert client.transcript(session="p").data["total"] > 0
        assert client.screen(session="p").activity == "idle"
        assert "demo" in client.backends().names()
        assert client.pause("p").status == "paused"
        assert client.resume("p").status == "active"
        assert client.stop("p", force=True).status == "stopped"
        client.delete("p", purge=True)
        assert client.sessions() == []
    finally:
        client.close()


def test_in_process_in_a_real_kernel_without_a_server(no_servers, kernel, tmp_path):
    code = (
        "import mas_jupyter\n"
        "c = mas_jupyter.connect()\n"
        "print(c.in_process)\n"
        "s = c.create_session('k', agent='demo')\n"
        "with c.events(timeout=20) as ev:\n"
        "    ev.wait_for(lambda e: e.get('activity') == 'idle', 20)\n"
        "print(c.send('in a kernel', session='k').text)\n"
        "c.close()\n"
    )
    status, messages = execute(kernel, code)
    text = text_of(messages)
    assert status == "ok", text
    assert "True" in text and "reply: in a kernel (3 words, 1 lines)" in text
