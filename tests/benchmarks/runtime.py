"""Benchmark: the runtime behind its control socket (in-process, real Unix socket, TWAMP on loopback).

Prints (a) control-socket request round trips (hello) per second, (b) how long `apply` takes for a
configuration of one Server plus N Control-Client connections to it, each with one test session, and how
long until all N test-session-completed events arrived, (c) the time and size of get-state with N finished
connections, and (d) how long an unchanged re-apply takes (nothing restarts). Run:
    .venv/bin/python -m tests.benchmarks.runtime [--connections N] [--packets N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import tempfile
import time
from typing import Any

from nf.runtime.control_socket import ControlSocketServer
from nf.runtime.daemon import Runtime


def config(port: int, connections: int, packets: int) -> dict[str, Any]:
    names = [f"c{i}" for i in range(connections)]
    return {
        "twamp-nf-twamp:twamp": {
            "server": {
                "server-ip": "127.0.0.1",
                "server-tcp-port": port,
                "modes": "unauthenticated",
                "limits": {"max-ctrl-connections": 1024, "max-ctrl-connections-per-client": 1024},
            },
            "session-reflector": {"limits": {"max-test-sessions": 1024}},
            "client": {
                "mode-preference-chain": [{"priority": 0, "mode": "unauthenticated"}],
                "ctrl-connection": [
                    {
                        "name": name,
                        "server-ip": "127.0.0.1",
                        "server-tcp-port": port,
                        "test-session-request": [{"name": "r", "reflector-ip": "127.0.0.1", "timeout": 1}],
                    }
                    for name in names
                ],
            },
            "session-sender": {
                "test-session": [
                    {
                        "name": f"{name}-s",
                        "ctrl-connection": name,
                        "test-session-request": "r",
                        "number-of-packets": packets,
                        "periodic-interval": "0.010000",
                    }
                    for name in names
                ]
            },
        }
    }


class Client:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb")
        self.next_id = 0

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self.next_id += 1
        self.file.write(json.dumps({"id": self.next_id, "op": op, **fields}).encode() + b"\n")
        self.file.flush()
        while True:
            reply: dict[str, Any] = json.loads(self.file.readline())
            if reply.get("id") == self.next_id:
                return reply

    def read_event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.file.readline())
        return event


async def main(connections: int, packets: int) -> None:
    directory = tempfile.mkdtemp(prefix="rtbench")
    path = os.path.join(directory, "c.sock")
    runtime = Runtime()
    server = ControlSocketServer(runtime, path)
    await server.start()
    try:
        await asyncio.to_thread(measure, path, connections, packets)
    finally:
        await server.close()
        await runtime.close()
        os.rmdir(directory)


def measure(path: str, connections: int, packets: int) -> None:
    control, events = Client(path), Client(path)
    events.request("subscribe")
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        control.request("hello", version=1)
    elapsed = time.perf_counter() - start
    print(f"hello round trips: {rounds / elapsed:,.0f}/s ({elapsed / rounds * 1e6:.0f} us each)")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    document = config(port, connections, packets)
    start = time.perf_counter()
    reply = control.request("apply", config=document)
    applied = time.perf_counter() - start
    assert reply["ok"], reply
    done = 0
    while done < connections:
        event = events.read_event()
        if event.get("event") == "twamp-nf-twamp:test-session-completed":
            done += 1
    finished = time.perf_counter() - start
    print(
        f"apply of 1 server + {connections} connections: {applied * 1e3:.1f} ms; "
        f"all {connections} sessions of {packets} packets completed after {finished:.2f} s"
    )
    start = time.perf_counter()
    state = control.request("get-state")
    took = time.perf_counter() - start
    print(f"get-state with {connections} connections: {took * 1e3:.1f} ms, {len(json.dumps(state)):,} octets")
    start = time.perf_counter()
    assert control.request("apply", config=document)["ok"]
    print(f"unchanged re-apply: {(time.perf_counter() - start) * 1e3:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--packets", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.connections, args.packets))
