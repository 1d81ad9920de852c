"""Run the benchmarks: `python -m bench [--quick] [--only NAME ...]`.

Prints one JSON line per figure as it is measured, then a table of every figure with its
reference and ratio. See bench/README.md for what each figure means and a reference run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time

from . import console, engine, lifecycle, rest
from .report import Report

SCENARIOS = {
    "engine": engine.run,
    "console": console.run,
    "rest": rest.run,
    "lifecycle": lifecycle.run,
}


def machine() -> dict:
    """What the figures were measured on."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "uname": " ".join(platform.uname()),
        "python": sys.version.split()[0],
    }


async def main(names: list[str], quick: bool) -> Report:
    report = Report()
    # One prompt for every shell started here too (references), as in the server.
    os.environ["PS1"] = "$ "
    print(json.dumps({"machine": machine(), "quick": quick}), flush=True)
    for name in names:
        t0 = time.perf_counter()
        try:
            await SCENARIOS[name](report, quick)
        except Exception as exc:  # keep going: one broken scenario must not hide the others
            report.note(f"scenario {name} failed: {type(exc).__name__}: {exc}")
            import traceback

            traceback.print_exc()
        report.note(f"scenario {name} took {time.perf_counter() - t0:.0f} s")
    return report


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="run only these")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    t0 = time.perf_counter()
    report = asyncio.run(main(names, args.quick))
    print()
    print(report.table())
    print(f"\n{len(report.figures)} figures in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
