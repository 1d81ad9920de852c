"""The engine in-process (issues 2 and 3): sessions, the store, one worker's output path, scale.

Each figure has a reference measured in the same run: a bare mkdir + copy, a bare
`git worktree add`, a plain pexpect read loop of the same output.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import pexpect

from mas_jupyter.core.backends import list_templates
from mas_jupyter.core.manager import MASManager
from mas_jupyter.core.models import ROW_READY, Session

from .client import LoopLag
from .report import Report
from .server import PLAIN_BASH, rss_bytes

LINE = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def flood_argv() -> list[str]:
    """A program printing $FLOOD_BYTES bytes of text lines, then exiting."""
    return ["bash", "--norc", "--noprofile", "-c", f'yes "{LINE}" | head -c "$FLOOD_BYTES"']


def expected_pty_bytes(n: int) -> int:
    """What a PTY delivers for n bytes of LINE\\n lines (the terminal turns \\n into \\r\\n)."""
    per = len(LINE) + 1
    return n + n // per + (1 if n % per == per else 0)


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def make_repo(path: str) -> str:
    """A git repository with a few files and one commit."""
    os.makedirs(path)
    env = {**os.environ, **GIT_ENV}
    run = {"cwd": path, "env": env, "check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q", "-b", "main"], **run)
    for i in range(20):
        with open(os.path.join(path, f"file{i}.py"), "w") as fh:
            fh.write(f"# file {i}\n" + "x = 1\n" * 50)
    subprocess.run(["git", "add", "."], **run)
    subprocess.run(["git", "commit", "-q", "-m", "first"], **run)
    return path


def manager(root: str, **config) -> MASManager:
    config.setdefault("root_dir", root)
    config.setdefault("tmux_socket", os.path.join(root, "tmux.sock"))
    backends = {"shell": {"argv": PLAIN_BASH}, "flood": {"argv": flood_argv(), "kind": "terminal"}}
    config["backends"] = {**backends, **config.get("backends", {})}
    m = MASManager(**config)
    m.start()
    return m


async def paired(ours, bare, n: int) -> tuple[float, float]:
    """Median seconds of `await ours(i)` and `bare(i)`, run in turn so both see the same
    machine (a file system's speed here changes several-fold within seconds)."""
    a, b = [], []
    for i in range(n):
        t0 = time.perf_counter()
        await ours(i)
        a.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        bare(i)
        b.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


async def sessions(report: Report, quick: bool) -> None:
    """Quick and worktree session creation against bare file and git operations; listing."""
    n = 10 if quick else 40
    with tempfile.TemporaryDirectory(prefix="mas-bench-") as tmp:
        root = os.path.join(tmp, "root")
        os.makedirs(root)
        m = manager(root, max_sessions=5000)
        template = list_templates(None)["default"]
        bare_root = os.path.join(tmp, "bare")
        os.makedirs(bare_root)
        ours, bare = [], []
        for rep in range(3):

            def bare_quick(i: int, rep: int = rep) -> None:
                dest = os.path.join(bare_root, f"r{rep}-{i}")
                os.mkdir(dest)
                shutil.copytree(template, dest, dirs_exist_ok=True)

            a, b = await paired(lambda i: m.create_session({"kind": "quick"}), bare_quick, n)
            ours.append(a)
            bare.append(b)
        report.fig(
            "quick session create (engine)", "ms", [x * 1e3 for x in ours],
            ref_name="os.mkdir + template copy", ref_runs=[x * 1e3 for x in bare],
            target="<= 3x", note="one of each in turn, median per op",
        )  # fmt: skip

        repo = make_repo(os.path.join(root, "repo"))
        wn = 5 if quick else 10
        ours, bare = [], []
        env = {**os.environ, **GIT_ENV}
        for rep in range(3):

            def bare_worktree(i: int, rep: int = rep) -> None:
                dest = os.path.join(bare_root, f"wt{rep}-{i}")
                subprocess.run(
                    ["git", "worktree", "add", "-q", "-b", f"bare/{rep}-{i}", dest, "HEAD"],
                    cwd=repo, env=env, check=True, capture_output=True,
                )  # fmt: skip

            a, b = await paired(
                lambda i: m.create_session({"kind": "worktree", "repo": repo}), bare_worktree, wn
            )
            ours.append(a)
            bare.append(b)
        report.fig(
            "worktree session create (engine)", "ms", [x * 1e3 for x in ours],
            ref_name="git worktree add", ref_runs=[x * 1e3 for x in bare], target="<= 1.3x",
            note="one of each in turn, median per op",
        )  # fmt: skip

        # 1,000 sessions in the store (rows only: listing cost, not workspace cost).
        have = m.store.count_sessions()
        for i in range(1000 - have):
            s = Session(
                id=str(uuid.uuid4()), name=f"listed-{i:04d}", kind="quick",
                workspace=os.path.join(root, "mas-sessions", f"listed-{i:04d}"),
                row_state=ROW_READY, status="active",
            )  # fmt: skip
            m.store.insert_session(s, generate_name=False)
        assert m.store.count_sessions() == 1000
        store_runs, api_runs, cold_runs = [], [], []
        for _ in range(3):
            samples = []
            for _ in range(20):
                t0 = time.perf_counter()
                m.store.list_sessions()
                samples.append(time.perf_counter() - t0)
            store_runs.append(statistics.median(samples) * 1e3)
            samples, cold = [], []
            for _ in range(10):
                t0 = time.perf_counter()
                m.list_sessions()
                samples.append(time.perf_counter() - t0)
                # The manager caches the listing until the store changes: drop the cache to
                # time a rebuild too (what the first request after any change pays).
                if hasattr(m, "_cache"):
                    m._cache = None
                t0 = time.perf_counter()
                m.list_sessions()
                cold.append(time.perf_counter() - t0)
            api_runs.append(statistics.median(samples) * 1e3)
            cold_runs.append(statistics.median(cold) * 1e3)
        report.fig("list 1,000 sessions from the store", "ms", store_runs, target="< 5 ms")
        report.fig(
            "manager.list_sessions() of 1,000, rebuilt (API dicts)", "ms", cold_runs,
            note="what GET /api/mas/sessions computes before JSON after any change",
        )  # fmt: skip
        report.fig(
            "manager.list_sessions() of 1,000, cached", "ms", api_runs,
            note="repeated listing with no change in between",
        )  # fmt: skip
        await m.shutdown()


async def _wait_exit(m: MASManager, worker_id: str, timeout: float) -> None:
    live = m.supervisor.live[worker_id]
    await asyncio.wait_for(live.exited.wait(), timeout)


def _pexpect_read(nbytes: int) -> tuple[float, int]:
    """The reference: pexpect spawns the same program; a plain loop reads it to the end."""
    t0 = time.perf_counter()
    child = pexpect.spawn(
        flood_argv()[0], flood_argv()[1:], env={**os.environ, "FLOOD_BYTES": str(nbytes)},
        encoding=None, dimensions=(40, 120),
    )  # fmt: skip
    got = 0
    while True:
        try:
            got += len(child.read_nonblocking(65536, timeout=30))
        except pexpect.EOF:
            break
    elapsed = time.perf_counter() - t0
    child.close()
    return elapsed, got


async def worker_output(report: Report, quick: bool) -> None:
    """One worker's output through the engine vs a pexpect read loop; CPU per MB; idle RSS."""
    nbytes = (5 if quick else 50) * 1_000_000
    with tempfile.TemporaryDirectory(prefix="mas-bench-") as tmp:
        root = os.path.join(tmp, "root")
        os.makedirs(root)
        m = manager(root, max_workers=256, max_workers_per_session=256)
        await m.create_session({"name": "s"})
        ours, ref, cpu = [], [], []
        for rep in range(3):
            c0 = self_cpu()
            t0 = time.perf_counter()
            w = await m.create_worker(
                "s", {"name": f"f{rep}", "backend": "flood", "env": {"FLOOD_BYTES": str(nbytes)}}
            )
            await _wait_exit(m, w["id"], 120)
            elapsed = time.perf_counter() - t0
            got = m.supervisor.live[w["id"]].ring.total
            cpu.append((self_cpu() - c0) / (got / 1e6))
            ours.append(got / 1e6 / elapsed)
            assert got == expected_pty_bytes(nbytes), (got, expected_pty_bytes(nbytes))
            elapsed, rgot = await asyncio.to_thread(_pexpect_read, nbytes)
            ref.append(rgot / 1e6 / elapsed)
        report.fig(
            "one worker's output: PTY -> ring, screen, transcript", "MB/s", ours,
            ref_name="pexpect read loop", ref_runs=ref, target=">= 0.5x", higher_is_better=True,
            note=f"{nbytes / 1e6:.0f} MB per run",
        )  # fmt: skip
        report.fig("engine CPU per MB of output", "cpu-s/MB", cpu)

        await m.shutdown()
        # Memory of idle shells, in a fresh process (a heap warmed by the floods would hide it).
        count = 10 if quick else 50
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bench.engine", "idle-rss", str(count)],
            capture_output=True, text=True, check=True, timeout=300,
        )  # fmt: skip
        per, ring = json.loads(out.stdout.strip().splitlines()[-1])
        report.fig(
            "server RSS per idle worker (beyond its ring)", "MiB", [(per - ring) / 2**20],
            target="< 3 MiB", note=f"{count} idle bash workers; ring held {ring:.0f} B each",
        )  # fmt: skip


async def _idle_rss(count: int) -> tuple[float, float]:
    """RSS growth of this process per idle shell worker, and the ring bytes each holds."""
    with tempfile.TemporaryDirectory(prefix="mas-bench-") as tmp:
        root = os.path.join(tmp, "root")
        os.makedirs(root)
        m = manager(root, max_workers=256, max_workers_per_session=256)
        await m.create_session({"name": "s"})
        # One worker first, so code paths and caches used by every worker are already loaded.
        await m.create_worker("s", {"name": "warm", "kind": "terminal"})
        await asyncio.sleep(0.3)
        gc.collect()
        before = rss_bytes(os.getpid())
        ids = []
        for i in range(count):
            ids.append((await m.create_worker("s", {"name": f"idle{i}", "kind": "terminal"}))["id"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(b"$ " in m.supervisor.live[i].ring.snapshot() for i in ids):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # activity checks and transcripts settle
        gc.collect()
        after = rss_bytes(os.getpid())
        ring = sum(len(m.supervisor.live[i].ring) for i in ids) / count
        await m.shutdown()
        return (after - before) / count, ring


def gated_flood_argv() -> list[str]:
    """Like flood_argv, but it waits for a line of input first (so all can start at once)."""
    body = f'read -r go; yes "{LINE}" | head -c "$FLOOD_BYTES"'
    return ["bash", "--norc", "--noprofile", "-c", body]


async def many_workers(report: Report, quick: bool) -> None:
    """100 workers streaming at once: longest event-loop block, and complete output.

    The workers are started first (each waits for a line), then all are told to go: the
    streaming phase is measured alone, and the start-up phase separately.
    """
    count = 100
    per = (100 if quick else 1000) * 1000
    with tempfile.TemporaryDirectory(prefix="mas-bench-") as tmp:
        root = os.path.join(tmp, "root")
        os.makedirs(root)
        backends = {"gated": {"argv": gated_flood_argv(), "kind": "terminal"}}
        m = manager(root, max_workers=256, max_workers_per_session=256, backends=backends)
        await m.create_session({"name": "s"})
        lags, turns, spawn_lags, complete, rates = [], [], [], [], []
        want = expected_pty_bytes(per) + 2  # the echo of the line that says go: "\r\n"
        for rep in range(3):
            received: dict[str, int] = {}
            probe = LoopLag().start()
            await asyncio.sleep(0)  # the probe takes its first time stamp
            ids = []
            for i in range(count):
                spec = {"name": f"r{rep}w{i}", "backend": "gated", "env": {"FLOOD_BYTES": str(per)}}
                ids.append((await m.create_worker("s", spec))["id"])
                await asyncio.sleep(0)  # as separate requests would: the loop runs in between
            spawn_lags.append(await probe.stop() * 1e3)
            for wid in ids:
                live = m.supervisor.live[wid]
                received[wid] = live.ring.total

                def count_listener(kind, payload, wid=wid, received=received):
                    if kind == "stdout":
                        received[wid] += len(payload.encode())

                live.attach(count_listener)
            await asyncio.sleep(0.3)  # every shell reached its `read`
            probe = LoopLag().start()
            await asyncio.sleep(0)
            t0 = time.perf_counter()
            for wid in ids:
                m.write_input("s", wid, "\r")
                await asyncio.sleep(0)  # as separate requests would: the loop runs in between
            await asyncio.gather(*(_wait_exit(m, wid, 300) for wid in ids))
            elapsed = time.perf_counter() - t0
            lags.append(await probe.stop() * 1e3)
            turns.append(probe.max_busy * 1e3)
            ok = sum(
                1 for wid in ids
                if m.supervisor.live[wid].ring.total == want and received[wid] == want
            )  # fmt: skip
            complete.append(ok)
            rates.append(count * (want - 2) / 1e6 / elapsed)
            for wid in ids:
                await m.delete_worker("s", wid)
        report.fig(
            "100 workers streaming: longest event-loop block", "ms", turns, target="< 50 ms",
            note=f"{per / 1e6:g} MB each, all started at once; the longest turn of the loop "
            "(select to select) in CPU time of its thread",
        )  # fmt: skip
        report.fig(
            "100 workers streaming: longest timer delay (wall clock)", "ms", lags,
            note="a 5 ms timer's lateness: the loop's turns plus the OS preempting the server "
            "(100 CPU-bound producers share 2 cores with it)",
        )  # fmt: skip
        report.fig(
            "starting 100 workers: longest event-loop block", "ms", spawn_lags,
            note="create_worker x100, one after the other",
        )  # fmt: skip
        report.fig(
            "100 workers streaming: workers with complete output", "of 100", complete,
            target="100",
        )  # fmt: skip
        report.fig("100 workers streaming: aggregate (engine)", "MB/s", rates)
        await m.shutdown()


async def run(report: Report, quick: bool) -> None:
    await sessions(report, quick)
    await worker_output(report, quick)
    await many_workers(report, quick)


if __name__ == "__main__":
    if sys.argv[1:2] == ["idle-rss"]:
        os.environ["PS1"] = "$ "
        print(json.dumps(asyncio.run(_idle_rss(int(sys.argv[2])))))
