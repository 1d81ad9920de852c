"""The reliability suite's harness: real `jupyter server` processes driven from outside.

The server is a subprocess (bench.server.JupyterServer), so it can be killed with SIGKILL,
started with SIGINT ignored, or made to fail at start-up, and its memory, file descriptors and
children read from /proc. Every wait here is bounded.
"""

from __future__ import annotations

import os
import sqlite3
import sys

from bench.server import JupyterServer
from mas_jupyter.core import processes
from tests.conftest import GIT_ENV, PLAIN_BASH

PY = sys.executable
# Agent programs that misbehave on purpose (argv lists; no shell involved).
FAULTY = {
    "quitter": [PY, "-c", "print('bye now', flush=True); raise SystemExit(5)"],
    "stubborn": [
        PY,
        "-c",
        "import signal, time\n"
        "for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):\n"
        "    signal.signal(s, signal.SIG_IGN)\n"
        "print('stubborn up', flush=True)\n"
        "time.sleep(600)",
    ],
    "forker": [
        "bash",
        "--norc",
        "--noprofile",
        "-c",
        "sleep 600 & (sleep 600 &) ; set -m; sleep 600 & echo children-up; wait",
    ],
    "oneline": [
        PY,
        "-c",
        "import os, sys, time\n"
        "n = int(os.environ.get('LINE_BYTES', '100000000'))\n"
        "chunk = b'x' * 1048576\n"
        "while n > 0:\n"
        "    os.write(1, chunk[: min(n, len(chunk))]); n -= len(chunk)\n"
        "os.write(1, b'\\nline-done\\n')\n"
        "time.sleep(600)",
    ],
    "badbytes": [
        PY,
        "-c",
        "import os, time\n"
        "input()\n"
        "os.write(1, b'bad:\\xff\\xfe\\xc3(:end\\r\\n')\n"
        "os.write(1, b'split:\\xe2\\x82')\n"
        "time.sleep(0.3)\n"
        "os.write(1, b'\\xac:euro\\r\\n')\n"
        "os.write(1, b'four:\\xf0\\x9f')\n"
        "time.sleep(0.3)\n"
        "os.write(1, b'\\x98\\x80:smile\\r\\nbytes-done\\r\\n')\n"
        "time.sleep(600)",
    ],
    "deaf": [PY, "-c", "import time\nprint('deaf up', flush=True)\ntime.sleep(600)"],
}
BACKENDS = {name: {"argv": argv, "kind": "agent"} for name, argv in FAULTY.items()}
BACKENDS["sleeper"] = {"argv": ["sleep", "600"], "kind": "terminal"}
# A plain bash for every shell, as the benchmarks use (the machine's rc files can be slow).
SHELL = {"shell": {"argv": PLAIN_BASH}}


def make_server(tmp_path, name: str = "srv", config: dict | None = None, **kwargs):
    """A JupyterServer rooted in tmp_path (not started)."""
    merged = {
        "MASManager": {"backends": {**SHELL, **BACKENDS}, "kill_timeout": 0.5},
        "MASExtensionApp": {"client_stall_seconds": 1.0},
    }
    for section, values in (config or {}).items():
        merged.setdefault(section, {}).update(values)
    return JupyterServer(
        str(tmp_path / name / "root"),
        merged,
        base=str(tmp_path / name / "base"),
        env={**GIT_ENV, "PS1": "$ "},
        **kwargs,
    )


def tree_gone(pid: int | None) -> bool:
    """No process is left in the session a worker led."""
    return pid is None or not processes.session_members(pid)


def db_rows(server: JupyterServer, sql: str) -> list[tuple]:
    """Read the server's state database (read-only, safe while the server runs)."""
    path = os.path.join(server.root, "mas-sessions", ".mas", "state.sqlite")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def children_of(pid: int) -> list[int]:
    """Every descendant process of pid, from /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = processes.stat_fields(int(entry))
            if fields and len(fields) > 1 and fields[0] != "Z":
                kids.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for kid in kids.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


def serve(base, config: dict | None = None):
    """Start a server for a module's tests; stop it and its tmux server afterwards.

    Use as `yield from serve(...)` in a module-scoped fixture.
    """
    server = make_server(base, config=config)
    server.start()
    yield server
    try:
        server.stop()
    finally:
        server.kill_tmux()
