"""Start-up faults: the state database locked by another process, damaged, or from a newer
version; the sessions root not writable. The server says what is wrong and overwrites nothing."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from mas_jupyter.core.store import Store
from tests.reliability.harness import make_server

HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(120)
"""


def digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def db_path(server) -> str:
    return os.path.join(server.root, "mas-sessions", ".mas", "state.sqlite")


def make_db(server) -> str:
    """A real state database with one session row, as an earlier server would leave."""
    path = db_path(server)
    store = Store(path)
    store._db.execute("PRAGMA journal_mode = DELETE")  # one file, so a digest covers it all
    store.close()
    return path


def start_and_read_log(server, expect: str, timeout: float = 60) -> str:
    """Start the server, wait until its log says `expect` (or it exits), return the log."""
    server.spawn()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if expect in log or server.proc.poll() is not None:
            break
        time.sleep(0.05)
    log = server.log()
    assert expect in log, log
    return log


@pytest.fixture
def server(servers):
    return servers("startup", start=False)


def test_database_locked_by_another_process(server):
    path = make_db(server)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = digest(path)
        start_and_read_log(server, "locked by another process")
        assert digest(path) == before
        # The mas API is not served half-working: it is absent, the log says why.
        if server.proc.poll() is None and server.answers("/api/status"):
            assert not server.answers("/api/mas/sessions")
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
    # Once the other process lets go, the server starts normally on the same file.
    server.kill()
    server.start()


def test_database_damaged(server):
    path = db_path(server)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as fh:
        fh.write(b"SQLite format 3\x00" + os.urandom(8192))
    before = digest(path)
    log = start_and_read_log(server, "damaged")
    assert "left untouched" in log or "Move it aside" in log
    assert digest(path) == before
    assert sorted(os.listdir(os.path.dirname(path))) == ["state.sqlite"] or digest(path) == before


def test_a_database_moved_aside_is_rebuilt_from_the_workspaces(server):
    # What the damaged-database message tells the user to do: move it aside, start again.
    server.start()
    code, made = server.mas("POST", "sessions", {"name": "kept", "task": "T-9"})
    assert code == 201, made
    code, gone = server.mas("POST", "sessions", {"name": "gone"})
    assert server.mas("DELETE", "sessions/gone")[0] == 204  # its workspace stays, unlisted
    server.kill()
    path = db_path(server)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.rename(path + suffix, path + suffix + ".aside")
    server.start()
    code, sessions = server.mas("GET", "sessions")
    assert code == 200
    assert [(s["name"], s["id"], s["task"]) for s in sessions] == [("kept", made["id"], "T-9")]
    assert sessions[0]["status"] == "paused"  # its workers were not running any more
    assert "'reindexed': 1" in server.log()
    server.kill()
    server.start()  # the next start does not rebuild again: the database is not new
    assert [s["name"] for s in server.mas("GET", "sessions")[1]] == ["kept"]
    last_start = server.log().rsplit("--- start", 1)[-1]
    assert "recovered {" in last_start and "'reindexed'" not in last_start


def test_database_from_a_newer_version(server):
    path = make_db(server)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 999")
    db.commit()
    db.close()
    before = digest(path)
    log = start_and_read_log(server, "newer than this")
    assert "upgrade mas_jupyter" in log
    assert digest(path) == before


@pytest.fixture(scope="module")
def root_fault(tmp_path_factory):
    """A server whose sessions root cannot be made (a file is in the way): (log, blocker)."""
    tmp = tmp_path_factory.mktemp("rootfault")
    blocker = tmp / "not-a-dir"
    blocker.write_text("a file where the sessions root should be\n")
    server = make_server(tmp, config={"MASManager": {"sessions_root": str(blocker / "sessions")}})
    try:
        log = start_and_read_log(server, str(blocker))
        # The failure is logged while the server starts, before it listens: give it time.
        deadline = time.monotonic() + 30
        while not (serving := server.proc.poll() is None and server.answers("/api/status")):
            if server.proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        server.kill()
    return log, blocker, serving


def test_sessions_root_not_writable_overwrites_nothing(root_fault):
    log, blocker, serving = root_fault
    assert blocker.read_text() == "a file where the sessions root should be\n"
    assert serving  # the rest of Jupyter still runs; the log says what failed


def test_sessions_root_not_writable_says_what_to_do(root_fault):
    log, blocker, _ = root_fault
    assert "MASManager.sessions_root" in log
    assert "Traceback" not in log


def test_a_second_server_on_the_same_sessions_root_is_refused(servers, tmp_path):
    # Before, the second server's start-up took the first one's workers for orphans of a
    # crash: it ended their processes and marked them exited, under the first one's feet.
    first = servers("first")
    assert first.mas("POST", "sessions", {"name": "s"})[0] == 201
    code, worker = first.mas("POST", "sessions/s/workers", {"name": "sh", "kind": "terminal"})
    assert code == 201, worker
    second = servers("second", start=False)
    second.root = first.root  # the same notebook folder, so the same sessions root
    log = start_and_read_log(second, "is not serving /api/mas")
    assert f"pid {first.pid}" in log and "is in use by another process" in log, log
    # The line is logged while the extension loads, before the server listens: wait for it.
    second.wait_ready(30, path="/api/status")
    assert not second.answers("/api/mas/sessions")
    # The first server and its worker are untouched.
    code, again = first.mas("GET", "sessions/s/workers/sh")
    assert code == 200 and again["status"] == "running" and again["pid"] == worker["pid"]
    # Once the first one stops, the second one starts on that root.
    first.stop()
    second.kill()
    second.start()
    assert [s["name"] for s in second.mas("GET", "sessions")[1]] == ["s"]
