"""Lifecycle through a real server: a session ready for input, worktrees, a restart.

References: a bare `pexpect.spawn` of the same shell, a bare `git worktree add`, and the same
server starting on an empty root.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time

import pexpect

from .client import PROMPT, Api
from .engine import GIT_ENV, make_repo
from .report import Report
from .server import PLAIN_BASH, JupyterServer

SLEEPER = {"argv": ["sleep", "1000000"], "kind": "terminal"}


def bare_shell_ready() -> float:
    """Seconds until a pexpect-spawned plain bash shows its prompt."""
    t0 = time.perf_counter()
    child = pexpect.spawn(PLAIN_BASH[0], PLAIN_BASH[1:], env={**os.environ, "PS1": "$ "})
    child.expect_exact("$ ", timeout=30)
    elapsed = time.perf_counter() - t0
    child.close(force=True)
    return elapsed


async def ready_for_input(report: Report, api: Api, quick: bool) -> None:
    n = 3 if quick else 10
    ours, bare = [], []
    for i in range(n):
        t0 = time.perf_counter()
        session = await api.ok(
            "POST", "sessions", {"name": f"ready{i}", "workers": [{"kind": "terminal"}]}
        )
        console = await api.connect(f"api/mas/{session['workers'][0]['channel']}")
        await console.read_until(PROMPT, 30)
        ours.append(time.perf_counter() - t0)
        console.close()
        await api.ok("DELETE", f"sessions/ready{i}?purge=true")
        bare.append(await asyncio.to_thread(bare_shell_ready))
    report.fig(
        "quick session + terminal worker, ready for input", "ms", [x * 1e3 for x in ours],
        ref_name="pexpect.spawn of the same shell", ref_runs=[x * 1e3 for x in bare],
        note="POST /sessions with one worker, then its console shows the prompt",
    )  # fmt: skip


async def worktrees(report: Report, api: Api, root: str, quick: bool) -> None:
    n = 3 if quick else 10
    repo = make_repo(os.path.join(root, "repo"))
    env = {**os.environ, **GIT_ENV}
    ours, bare = [], []
    for i in range(n):
        t0 = time.perf_counter()
        await api.ok("POST", "sessions", {"name": f"wt{i}", "kind": "worktree", "repo": "repo"})
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(
            ["git", "worktree", "add", "-q", "-b", f"bare/{i}", os.path.join(root, f"bare{i}")],
            cwd=repo, env=env, check=True, capture_output=True,
        )  # fmt: skip
        bare.append(time.perf_counter() - t0)
    report.fig(
        "worktree session over HTTP", "ms", [x * 1e3 for x in ours],
        ref_name="git worktree add", ref_runs=[x * 1e3 for x in bare], target="<= 1.3x",
    )  # fmt: skip


async def restart(report: Report, tmp: str, quick: bool) -> None:
    count = 20 if quick else 200
    config = {
        "MASManager": {
            "max_sessions": 2000,
            "max_workers": 1000,
            "backends": {"sleeper": SLEEPER},
        }
    }
    server = JupyterServer(os.path.join(tmp, "restart"), config, base=os.path.join(tmp, "rs"))
    empty = JupyterServer(os.path.join(tmp, "empty"), base=os.path.join(tmp, "es"))
    server.start()
    api = Api(server, max_clients=16)
    try:
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            spec = {"name": f"s{i:03d}", "workers": [{"backend": "sleeper", "runtime": "tmux"}]}
            async with sem:
                await api.ok("POST", "sessions", spec)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        report.note(f"{count} sessions with a tmux worker made in {time.perf_counter() - t0:.0f} s")
        pids = {w["id"]: w["pid"] for s in await api.ok("GET", "sessions") for w in s["workers"]}
        answered, attached, ref = [], [], []
        for _ in range(3):
            server.kill(signal.SIGKILL)
            t0 = time.perf_counter()
            server.spawn()
            await asyncio.to_thread(server.wait_ready, 120)
            answered.append(time.perf_counter() - t0)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                workers = [w for s in await api.ok("GET", "sessions") for w in s["workers"]]
                if len(workers) == count and all(
                    w["status"] == "running" and w["pid"] == pids[w["id"]] for w in workers
                ):
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("not every tmux worker was re-attached in 120 s")
            attached.append(time.perf_counter() - t0)
            ref.append(await asyncio.to_thread(empty.start))
            empty.stop()
        report.fig(
            f"server restart ({count} sessions): API answers", "s", answered,
            ref_name="same server, empty root", ref_runs=ref,
            note="after SIGKILL; GET /api/mas/sessions answers once recovery is done",
        )  # fmt: skip
        report.fig(
            f"server restart ({count} sessions): every tmux worker re-attached", "s", attached,
            ref_name="same server, empty root", ref_runs=ref,
        )  # fmt: skip
    finally:
        api.close()
        server.close()
        empty.close()


async def run(report: Report, quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="mas-bench-") as tmp:
        root = os.path.join(tmp, "root")
        server = JupyterServer(root, base=os.path.join(tmp, "srv"))
        server.start()
        api = Api(server)
        try:
            await ready_for_input(report, api, quick)
            await worktrees(report, api, root, quick)
        finally:
            api.close()
            server.close()
        await restart(report, tmp, quick)
