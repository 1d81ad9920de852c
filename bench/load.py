"""Background streams, in their own process: `python -m bench.load URL TOKEN PATH...`.

Connects a console to each path, types a command that prints without end, and reads and drops
everything, so the measuring process is not also the one busy reading 50 streams. Prints
"ready" once every stream flows, then on each SIGUSR1 a line "received <characters>" (the
streams' output so far); runs until killed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

STREAM = 'yes "streaming 0123456789abcdefghijklmnopqrstuvwxyz"\r'
received = 0


async def stream(url: str, token: str, path: str, started: asyncio.Queue) -> None:
    global received
    req = HTTPRequest(f"{url}/{path}", headers={"Authorization": f"token {token}"})
    conn = await websocket_connect(req, max_message_size=256 * 1024 * 1024)
    seen = 0
    sent = False
    while True:
        msg = await conn.read_message()
        if msg is None:
            return
        data = json.loads(msg)
        if data[0] != "stdout":
            continue
        if not sent and "$ " in data[1]:
            conn.write_message(json.dumps(["stdin", STREAM]))
            sent = True
        elif sent:
            received += len(data[1])
            seen += len(data[1])
            if seen > 100_000 and seen - len(data[1]) <= 100_000:
                started.put_nowait(path)


async def main(url: str, token: str, paths: list[str]) -> None:
    started: asyncio.Queue = asyncio.Queue()
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGUSR1, lambda: print(f"received {received}", flush=True)
    )
    tasks = [asyncio.ensure_future(stream(url, token, p, started)) for p in paths]
    for _ in paths:
        await started.get()
    print("ready", flush=True)
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
