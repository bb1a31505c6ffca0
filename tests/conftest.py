"""Shared fixtures: free ports, the real CLI as subprocesses (always cleaned up), and loopback capture.

Everything here binds loopback only and asks the kernel for ports, so several engineers can run the suite at
once on one machine. Waits are generous and bounded; nothing asserts on speed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "nf.cli"]
WAIT = 30.0  # seconds: generous bound for anything a loaded 2-core machine must finish
LISTENING = re.compile(r"listening on (\S+)")


def free_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_udp_range(host: str = "127.0.0.1", size: int = 8) -> tuple[int, int]:
    """A run of `size` UDP ports that were all free a moment ago (re-checked by binding each)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        base = free_port(host, socket.SOCK_DGRAM)
        if base + size > 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + size):
                s = socket.socket(family, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, port))
            return base, base + size - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port range on loopback")


def split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class _Pump:
    """Drains a pipe in a thread so a chatty child never blocks, and lets tests wait for a line."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        stream.close()

    def wait_for(self, pattern: re.Pattern[str], timeout: float = WAIT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    match = pattern.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    raise TimeoutError(f"no line matching {pattern.pattern!r}; got {self.lines!r}")
                self._cond.wait(min(remaining, 0.5))

    def join(self, timeout: float = WAIT) -> None:
        self._thread.join(timeout)

    @property
    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


class Child:
    """A subprocess with pumped stdout/stderr; stop() is idempotent and always reaps it."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = _Pump(self.proc.stdout)
        self.err = _Pump(self.proc.stderr)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = WAIT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.out.join()
        self.err.join()
        return self.proc.returncode

    def wait(self, timeout: float = WAIT) -> int:
        rc = self.proc.wait(timeout)
        self.out.join()
        self.err.join()
        return rc


class Reflector(Child):
    """`twamp-nf reflect` on a kernel-chosen port, with its counters readable through --stats-file."""

    def __init__(self, args: Sequence[str], stats_file: Path, listen: str = "127.0.0.1:0") -> None:
        self.stats_file = stats_file
        super().__init__([*CLI, "reflect", "--listen", listen, "--stats-file", str(stats_file), *args])
        try:
            match = self.out.wait_for(LISTENING)
        except TimeoutError:
            self.stop(signal.SIGKILL)
            raise AssertionError(f"reflect did not start: {self.err.text}") from None
        self.address = match.group(1)
        self.host, self.port = split_hostport(self.address)

    def stats(self) -> dict[str, Any]:
        """Ask the running reflector for a fresh counter dump (SIGUSR1) and read it."""
        before = self.stats_file.stat().st_mtime_ns if self.stats_file.exists() else -1
        seq_before = self._seq()
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.stats_file.exists() and (
                self.stats_file.stat().st_mtime_ns != before or self._seq() != seq_before
            ):
                data = self._read()
                if data is not None and data.get("dump_seq") != seq_before:
                    return data
            time.sleep(0.05)
        raise TimeoutError("reflect wrote no stats after SIGUSR1")

    def final_stats(self) -> dict[str, Any]:
        rc = self.stop()
        assert rc == 0, f"reflect exited {rc}: {self.err.text}"
        data = self._read()
        assert data is not None
        return data

    def _seq(self) -> Any:
        data = self._read()
        return None if data is None else data.get("dump_seq")

    def _read(self) -> dict[str, Any] | None:
        try:
            loaded: dict[str, Any] = json.loads(self.stats_file.read_text())
            return loaded
        except (FileNotFoundError, json.JSONDecodeError):
            return None


def run_cli(args: Sequence[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Register every started Child here; all are stopped (and reaped) at teardown, pass or fail."""
    started: list[Child] = []
    yield started
    for child in reversed(started):
        child.stop()


@pytest.fixture
def reflector_factory(tmp_path: Path, children: list[Child]) -> Any:
    counter = iter(range(1_000_000))

    def start(*args: str, listen: str = "127.0.0.1:0") -> Reflector:
        reflector = Reflector(args, tmp_path / f"reflect-stats-{next(counter)}.json", listen)
        children.append(reflector)
        return reflector

    return start


@pytest.fixture
def pfs_keys(tmp_path: Path) -> Path:
    """A perfSONAR pfs key file with two test-only keys."""
    path = tmp_path / "keys.pfs"
    path.write_text(
        "# test keys\nalice 0123456789abcdef0123456789abcdef\nbob fedcba9876543210fedcba9876543210\n"
    )
    return path


# ---------------------------------------------------------------- loopback capture


class Capture:
    """dumpcap on lo with a capture filter; stop() flushes and returns the pcapng path."""

    def __init__(self, path: Path, capture_filter: str) -> None:
        self.path = path
        dumpcap = shutil.which("dumpcap") or "/usr/bin/dumpcap"
        self.child = Child([dumpcap, "-q", "-i", "lo", "-f", capture_filter, "-w", str(path)])
        try:
            self.child.err.wait_for(re.compile(r"Capturing on|File:"))
        except TimeoutError:
            self.child.stop(signal.SIGKILL)
            raise

    def stop(self) -> Path:
        time.sleep(0.5)  # let the last frames of the run reach the capture buffer before stopping
        self.child.stop(signal.SIGINT)
        assert self.path.exists(), self.child.err.text
        return self.path


def tshark(args: Sequence[str], timeout: float = 120.0) -> str:
    result = subprocess.run(
        ["tshark", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"tshark {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def can_capture() -> bool:
    """tshark is installed and we may capture on lo (root, or a dumpcap the user can run)."""
    return shutil.which("tshark") is not None and (os.geteuid() == 0 or shutil.which("dumpcap") is not None)


@pytest.fixture
def capture(tmp_path: Path, children: list[Child]) -> Any:
    counter = iter(range(1_000_000))

    def start(capture_filter: str) -> Capture:
        cap = Capture(tmp_path / f"capture-{next(counter)}.pcapng", capture_filter)
        children.append(cap.child)
        return cap

    return start
