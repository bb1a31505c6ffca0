"""The demo's child processes: per instance a `twamp-nf run` and a `twamp-nf netconf` in front of it.

Each child is `sys.executable -m nf.cli ...` with stderr in a log file in the demo directory (its tail is
what a failure report shows) and stdout read only for its one readiness line. Stopping is SIGTERM, a bounded
wait, then SIGKILL: whatever happened, no child outlives the demo.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

STOP_WAIT = 15.0  # seconds a child gets to stop after SIGTERM before SIGKILL
TAIL_LINES = 15


class ChildError(Exception):
    """A child did not start as expected; the message names it (the caller adds its stderr tail)."""


class Child:
    """One child process started with its stderr in `log`."""

    def __init__(self, label: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.label = label
        self.log = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nf.cli", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first stdout line matching `pattern`; ChildError if the child exits or stays silent."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    found = pattern.search(line.decode(errors="replace"))
                    if found:
                        return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ChildError(f"{self.label} not ready after {timeout:.0f} s")
                if not selector.select(remaining):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    self.proc.wait(STOP_WAIT)
                    raise ChildError(f"{self.label} exited with status {self.proc.returncode}")
                buffer += chunk

    def running(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of its stderr, indented, for a failure report ('' when it wrote nothing)."""
        with contextlib.suppress(OSError):
            self._log.flush()
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        tail = [line for line in text.splitlines() if line.strip()][-lines:]
        if not tail:
            return ""
        return f"\n  last lines of {self.label}'s stderr ({self.log.name}):\n" + "\n".join(
            f"    {line}" for line in tail
        )

    def terminate(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """SIGTERM, wait, SIGKILL if it does not go; returns the exit status."""
        self.terminate()
        try:
            self.proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_WAIT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


RUNTIME_READY = re.compile(r"control socket (\S+)")
NETCONF_READY = re.compile(r"listening on (\S+):(\d+)$")


@dataclass
class Instance:
    """One function instance: its addresses and its two processes (once started)."""

    name: str
    host: str
    directory: Path
    runtime: Child | None = None
    netconf: Child | None = None
    netconf_port: int = 0
    children: list[Child] = field(default_factory=list)

    @property
    def socket_path(self) -> str:
        return str(self.directory / f"{self.name}.sock")

    def start_runtime(self) -> None:
        self.runtime = Child(
            f"runtime {self.name}",
            ["run", "--control-socket", self.socket_path],
            self.directory / f"{self.name}-runtime.log",
        )
        self.children.append(self.runtime)

    def start_netconf(self, host_key: Path, users_file: Path) -> None:
        self.netconf = Child(
            f"NETCONF server {self.name}",
            [
                "netconf",
                "--listen",
                f"{self.host}:0",
                "--runtime-socket",
                self.socket_path,
                "--host-key",
                str(host_key),
                "--users",
                str(users_file),
                "--log-level",
                "warning",
            ],
            self.directory / f"{self.name}-netconf.log",
        )
        self.children.append(self.netconf)

    def wait_runtime(self, timeout: float) -> None:
        assert self.runtime is not None
        self.runtime.wait_line(RUNTIME_READY, timeout)

    def wait_netconf(self, timeout: float) -> None:
        assert self.netconf is not None
        self.netconf_port = int(self.netconf.wait_line(NETCONF_READY, timeout).group(2))

    def stderr_tails(self) -> str:
        return "".join(child.stderr_tail() for child in self.children)

    def pids(self) -> list[int]:
        return [child.pid for child in self.children]


def stop_all(instances: list[Instance]) -> None:
    """NETCONF servers first (all at once), then the runtimes in reverse start order, so the client's
    runtime can still delete its IKE SA with a peer that is listening."""
    netconfs = [i.netconf for i in instances if i.netconf is not None]
    for child in netconfs:
        child.terminate()
    for child in netconfs:
        child.stop()
    for instance in reversed(instances):
        if instance.runtime is not None:
            instance.runtime.stop()


def second_loopback_address() -> str:
    """127.0.0.2 when this host can bind it (Linux routes all of 127/8 to lo), else 127.0.0.1."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError:
        return "127.0.0.1"
    return "127.0.0.2"


def free_port(host: str, kind: socket.SocketKind) -> int:
    """A port free on `host` a moment ago; the runtime binds it when configured (and refuses if taken)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
