"""The receive path alone: CPU per frame message for websocket server candidates (issue 25).

Each candidate is its own process that reads camera-like frame messages (480x360, ~330 KB of
JSON with the base64 PNG) from one websocket and does the least any receiver does with one:
parse the JSON and decode the base64. Nothing is stored, so the figure is the receive path's
own cost: the event loop, the websocket library's framing, unmasking and message assembly,
and the bytes-or-str hand-over to the JSON parser.

- ``websockets``: the receiver's today (websockets 17 asyncio, ``recv()`` -> str)
- ``websockets-bytes``: the same with ``recv(decode=False)`` and orjson on the bytes
- ``websockets-uvloop``: ``websockets`` on uvloop's event loop
- ``picows``: picows (Cython websocket framing over asyncio), payload as a memoryview
- ``picows-uvloop``: picows on uvloop

The load comes from this process (websockets client, as fast as the server reads). Rounds
alternate the candidates; CPU per message is the server's user + system time from /proc over
the round, divided by the messages, each candidate's median against ``websockets`` in the same
round. Candidates whose library is not installed are skipped.

    python -m bench.receive_path [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

from . import ROOT, Row, proc_stats

CANDIDATES = ("websockets", "websockets-bytes", "websockets-uvloop", "picows", "picows-uvloop")

SERVER = r'''
import asyncio, json, os, sys
import orjson, pybase64
name = sys.argv[1]
loop_kind = "uvloop" if name.endswith("-uvloop") else "asyncio"
count = 0

def handle(message):
    global count
    body = orjson.loads(message)
    pybase64.b64decode(body["data"]["data"]["buffer"], validate=True)
    count += 1

async def main():
    ready = asyncio.get_running_loop().create_future()
    if name.startswith("picows"):
        from picows import WSListener, WSMsgType, ws_create_server

        class Listener(WSListener):
            def on_ws_frame(self, transport, frame):
                if frame.msg_type == WSMsgType.TEXT:
                    handle(frame.get_payload_as_memoryview())
                elif frame.msg_type == WSMsgType.CLOSE:
                    transport.send_close(frame.get_close_code())
                    transport.disconnect()

        server = await ws_create_server(lambda request: Listener(), "127.0.0.1", 0,
                                        max_frame_size=16 * 1024 * 1024)
    else:
        from websockets.asyncio.server import serve
        decode = False if name == "websockets-bytes" else None

        async def serve_one(ws):
            while True:
                try:
                    handle(await ws.recv(decode=decode))
                except Exception:
                    return

        server = await serve(serve_one, "127.0.0.1", 0, max_size=16 * 1024 * 1024, compression=None)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    await asyncio.Event().wait()

if loop_kind == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
'''


def _available(name: str) -> bool:
    try:
        if name.startswith("picows"):
            import picows  # noqa: F401
        if name.endswith("uvloop"):
            import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


async def _send(port: int, messages: list[str], n: int) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/", max_size=None, compression=None) as ws:
        for k in range(n):
            await ws.send(messages[k % len(messages)])


def _idle(pid: int, settle: float = 0.3, timeout: float = 30.0) -> dict:
    """The server's /proc stats once its CPU stops moving (every message read and handled)."""
    deadline = time.monotonic() + timeout
    last = proc_stats(pid)
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = proc_stats(pid)
        if now["cpu_seconds"] == last["cpu_seconds"]:
            return now
        last = now
    return last


def run(quick: bool = False) -> tuple[list[Row], dict]:
    from framesink.synthetic import frame_message, make_png

    names = [n for n in CANDIDATES if _available(n)]
    n = 300 if quick else 1000
    rounds = 2 if quick else 5
    messages = [frame_message(make_png(480, 360, seed=s), recording_id="bench", participant_id=100 + s,
                              relative=s / 2) for s in range(4)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "lambdas")])}
    procs = {}
    per_msg: dict[str, list[float]] = {name: [] for name in names}
    try:
        for name in names:
            proc = subprocess.Popen([sys.executable, "-c", SERVER, name], stdout=subprocess.PIPE, env=env, text=True)
            procs[name] = (proc, json.loads(proc.stdout.readline())["port"])
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                proc, port = procs[name]
                before = _idle(proc.pid)
                asyncio.run(_send(port, messages, n))
                after = _idle(proc.pid)
                per_msg[name].append((after["cpu_seconds"] - before["cpu_seconds"]) * 1000 / n)
    finally:
        for proc, _ in procs.values():
            proc.kill()
    base = "websockets"
    med = {name: statistics.median(v) for name, v in per_msg.items()}
    rows = []
    for name in names:
        paired = [a / b for a, b in zip(per_msg[name], per_msg[base])]
        rows.append(Row("receive_path", f"{name}: CPU per 480x360 frame message (parse + base64, nothing stored)",
                        med[name], "ms", baseline=med[base], baseline_name="websockets recv() -> str",
                        paired_ratio=statistics.median(paired),
                        note=f"rounds {min(paired):.2f}-{max(paired):.2f}x, message {len(messages[0]) / 1024:.0f} KB"))
    details = {"cpu_ms_per_message": {k: [round(x, 3) for x in v] for k, v in per_msg.items()},
               "messages_per_round": n, "rounds": rounds, "message_bytes": len(messages[0]),
               "skipped": [c for c in CANDIDATES if c not in names]}
    return rows, details


if __name__ == "__main__":
    from .__main__ import print_table

    result_rows, result = run(quick="--quick" in sys.argv)
    print_table(result_rows)
    print(json.dumps(result, indent=2))
