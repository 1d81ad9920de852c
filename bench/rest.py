"""REST through a real server (issues 4 and 7): listing sessions vs the cheapest request.

`GET /api/status` is the cost of a trivial authenticated request on the same server, measured
interleaved with the listing so both see the same machine.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

from .client import Api
from .report import Report, percentile
from .server import JupyterServer

SLEEPER = {"argv": ["sleep", "1000000"], "kind": "terminal"}


async def grow_to(api: Api, count: int, with_workers: int, have: int) -> None:
    """Create sessions until there are `count`; the first `with_workers` get 3 workers each."""
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        spec: dict = {"name": f"r{i:04d}"}
        if i < with_workers:
            spec["workers"] = [{"name": n, "backend": "sleeper"} for n in ("a", "b", "c")]
        async with sem:
            await api.ok("POST", "sessions", spec)

    await asyncio.gather(*(one(i) for i in range(have, count)))


async def concurrent_rate(api: Api, path: str, clients: int, seconds: float) -> float:
    """Requests per second of `clients` loops calling GET path for `seconds`."""
    done = 0
    deadline = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await api.timed_get(path)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    return done / (time.perf_counter() - t0)


async def run(report: Report, quick: bool) -> None:
    levels = (10, 50, 200) if quick else (10, 200, 1000)
    with_workers = 200
    with tempfile.TemporaryDirectory(prefix="mas-bench-") as tmp:
        config = {
            "MASManager": {
                "max_sessions": 2000,
                "max_workers": 1000,
                "backends": {"sleeper": SLEEPER},
            }
        }
        server = JupyterServer(os.path.join(tmp, "root"), config, base=os.path.join(tmp, "srv"))
        server.start()
        api = Api(server, max_clients=16)
        try:
            have = 0
            for level in levels:
                t0 = time.perf_counter()
                await grow_to(api, level, with_workers, have)
                have = level
                report.note(
                    f"{level} sessions ({min(level, with_workers) * 3} workers) made in "
                    f"{time.perf_counter() - t0:.1f} s; server RSS {server.rss() / 2**20:.0f} MiB"
                )
                samples = 30 if level >= 1000 else 100
                p50, p99, s50, s99 = [], [], [], []
                for _ in range(3):
                    ours, status = [], []
                    for _ in range(samples):
                        ours.append(await api.timed_get("/api/mas/sessions"))
                        status.append(await api.timed_get("/api/status"))
                    p50.append(percentile(ours, 50) * 1e3)
                    p99.append(percentile(ours, 99) * 1e3)
                    s50.append(percentile(status, 50) * 1e3)
                    s99.append(percentile(status, 99) * 1e3)
                workers = min(level, with_workers) * 3
                note = f"{level} sessions, {workers} workers; {samples} requests per run"
                report.fig(
                    f"GET /api/mas/sessions p50 ({level} sessions)", "ms", p50,
                    ref_name="GET /api/status p50", ref_runs=s50, note=note,
                )  # fmt: skip
                report.fig(
                    f"GET /api/mas/sessions p99 ({level} sessions)", "ms", p99,
                    ref_name="GET /api/status p99", ref_runs=s99,
                    target="<= 2x" if level == 200 else "",
                )  # fmt: skip
                if level == 200:
                    seconds = 1.0 if quick else 3.0
                    ours_rate, status_rate = [], []
                    for _ in range(3):
                        ours_rate.append(
                            await concurrent_rate(api, "/api/mas/sessions", 8, seconds)
                        )
                        status_rate.append(await concurrent_rate(api, "/api/status", 8, seconds))
                    report.fig(
                        "GET /api/mas/sessions, 8 concurrent clients (200 sessions)", "req/s",
                        ours_rate, ref_name="GET /api/status, 8 clients", ref_runs=status_rate,
                        higher_is_better=True,
                    )  # fmt: skip
        finally:
            api.close()
            server.close()
