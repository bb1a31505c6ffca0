"""Reflector throughput and turnaround on loopback: prints figures, asserts nothing.

    python -m tests.benchmarks.reflector [--seconds 2] [--max-rate 400000] [--no-pin] [--priority 0]
        [--busy-poll 50] [--receive-batch 16] [--send-batch 1] [--compare-rate 30000] [--no-compare]
        [--turnaround-trials 3] [--flood-rates 50000,100000]

For unauthenticated and authenticated sessions it finds the highest packet rate the reflector sustains with
zero loss (every packet sent came back), then measures the turnaround T3 - T2 (from the reply fields, with
kernel receive timestamps for T2) at half that rate, over several trials (the median p99 is the result:
one trial's tail is at the mercy of the host). The reflector runs in this process, its port thread
pinned to CPU 0 and (by default) given SCHED_FIFO priority 10; the load generator is a separate process
(and a forked receiver process) pinned to the other CPUs, bounded in packets and time. Loopback only.
Trials last long enough (2 s) that the 4 MB receive buffer cannot hide a reflector slower than the load.

Other work on a shared host skews wall-clock figures, so every trial also prints the reflector thread's own
CPU time per reflected packet (its CPU clock, user + kernel) and the load average at that moment, and the
result line turns that CPU cost into the rate one whole core would sustain (wake-ups included, so a lower
bound). A fixed rate (--compare-rate) is run with the pure-Python loop (recvmsg + sendto, receive_batch 1)
and the C loop (recvmmsg + sendto, and recvmmsg + sendmmsg), alternated, to compare their CPU per packet;
the host's system-call floor is printed first. Last, floods of packets the reflector must drop (an unknown
sender; a bad HMAC) at rising rates (--flood-rates) show how fast it counts them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import multiprocessing.connection
import os
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from nf.net.reflector import Reflector, ReflectorConfig
from nf.twamp.modes import SecurityMode
from nf.twamp.test_keys import TestSessionKeys
from nf.twamp.test_packets import SenderPacket, TestPacketCodec, ntp_from_unix
from nf.twamp.test_session import TestSessionParams

HOST = "127.0.0.1"
PADDING = 64
PREBUILT = 1024


@dataclass(frozen=True)
class Trial:
    rate: float  # asked for
    achieved: float  # what the generator managed (sent / sending time)
    sent: int
    received: int
    reflected: int
    turnarounds_us: list[float]
    cpu_seconds: float  # CPU time of the reflector's port thread during the trial
    load: float  # 1-minute load average at the end of the trial

    @property
    def cpu_us_per_packet(self) -> float:
        return self.cpu_seconds / self.reflected * 1e6 if self.reflected else float("nan")

    @property
    def lossless(self) -> bool:
        return self.sent > 0 and self.received == self.sent


def _packets(mode: SecurityMode, keys: TestSessionKeys | None) -> list[bytes]:
    codec = TestPacketCodec(mode, keys)
    now = ntp_from_unix(time.time())
    return [codec.encode_sender(SenderPacket(i, now, 0x8001, bytes(PADDING))) for i in range(PREBUILT)]


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_Iovec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("hdr", _Msghdr), ("len", ctypes.c_uint))


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
MSG_WAITFORONE = 0x10000


class _Batch:
    """sendmmsg/recvmmsg on a connected socket, so the load generator is not the bottleneck it measures.

    The generator is test tooling: Python's socket module has no batched calls, and one sendto per packet
    in the generator would cap the load below what the reflector can take.
    """

    def __init__(self, sock: socket.socket, payloads: list[bytes], slot: int = 2048) -> None:
        self.fd = sock.fileno()
        self.size = len(payloads)
        self._buffers = [ctypes.create_string_buffer(max(slot, len(p))) for p in payloads]
        for buffer, payload in zip(self._buffers, payloads, strict=True):
            ctypes.memmove(buffer, payload, len(payload))
        lengths = [len(p) if p else slot for p in payloads]
        self._iov = (_Iovec * self.size)(
            *[_Iovec(ctypes.cast(b, ctypes.c_void_p), n) for b, n in zip(self._buffers, lengths, strict=True)]
        )
        self.msgs = (_Mmsghdr * self.size)()
        for i in range(self.size):
            self.msgs[i].hdr.iov = ctypes.pointer(self._iov[i])
            self.msgs[i].hdr.iovlen = 1

    def send(self, count: int) -> int:
        return int(_LIBC.sendmmsg(self.fd, self.msgs, min(count, self.size), 0))

    def receive(self) -> int:
        """Blocks for at least one datagram (SO_RCVTIMEO bounds it); -1 on timeout."""
        return int(_LIBC.recvmmsg(self.fd, self.msgs, self.size, MSG_WAITFORONE, None))

    def datagram(self, i: int) -> bytes:
        return self._buffers[i].raw[: self.msgs[i].len]


def _receiver(
    sock: socket.socket, count_out: multiprocessing.connection.Connection, offsets: tuple[int, int]
) -> None:
    """Counts replies until 0.5 s of silence after the sender is done; collects T3 - T2 when asked."""
    t3_at, t2_at = offsets
    collect = count_out.recv()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@qq", 0, 500_000))
    batch = _Batch(sock, [b""] * 64)
    received = 0
    turnarounds: list[float] = []
    unpack = struct.Struct("!Q").unpack_from
    while True:
        got = batch.receive()
        if got < 0:
            if count_out.poll():
                break
            continue
        received += got
        if collect:
            for i in range(got):
                data = batch.datagram(i)
                if len(data) >= t2_at + 8:
                    turnarounds.append((unpack(data, t3_at)[0] - unpack(data, t2_at)[0]) / 4294.967296)
    count_out.send((received, turnarounds))


def _generator(
    port: int,
    mode_value: str,
    key_material: tuple[bytes, bytes] | None,
    control: multiprocessing.connection.Connection,
    cpus: set[int],
) -> None:
    """Separate process: binds, reports its port, then runs the trials the parent asks for."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    mode = SecurityMode(mode_value)
    keys = TestSessionKeys(*key_material) if key_material else None
    packets = _packets(mode, keys)
    codec = TestPacketCodec(mode, keys)
    layout = codec.reflector_layout
    offsets = (layout.offsets["timestamp"], layout.offsets["receive_timestamp"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, 33, 64 * 1024 * 1024)  # SO_RCVBUFFORCE; root on the test machines
    sock.bind((HOST, 0))
    sock.connect((HOST, port))
    control.send(sock.getsockname()[1])
    bursts = _Batch(sock, packets[:32])
    fork = multiprocessing.get_context("fork")
    while True:
        request = control.recv()
        if request is None:
            break
        rate, seconds, collect = request
        here, there = fork.Pipe()
        receiver = fork.Process(target=_receiver, args=(sock, there, offsets), daemon=True)
        receiver.start()
        here.send(collect)
        count = int(rate * seconds)
        send = sock.send
        start = time.perf_counter()
        sent = 0
        # Throughput trials send bursts of up to 32 with sendmmsg; the turnaround trial sends one at a time
        # so that queueing behind a burst does not count as reflector turnaround.
        burst = 1 if collect else max(1, min(32, int(rate / 5000)))
        deadline = start + seconds * 3 + 2  # bound even when the machine is slower than asked
        while sent < count:
            due = start + sent / rate
            now = time.perf_counter()
            if now > deadline:
                break
            if now < due:
                continue
            if burst == 1:
                if now - due > 0.5 / rate:
                    # Late by more than half an interval (this Python loop's own jitter, or other load on
                    # its CPU): re-anchor instead of catching up with packets back to back, which would
                    # queue at the reflector and count as its turnaround.
                    start += now - due
                with contextlib.suppress(OSError):  # ENOBUFS: sent-but-lost, which is what it is
                    send(packets[sent % PREBUILT])
                sent += 1
            else:
                sent += max(0, bursts.send(min(burst, count - sent)))
        elapsed = time.perf_counter() - start
        here.send("done")
        received, turnarounds = here.recv()
        receiver.join(10)
        control.send((sent, received, turnarounds, elapsed))
    sock.close()


class Bench:
    def __init__(
        self,
        mode: SecurityMode,
        pin: bool,
        priority: int | None,
        busy_poll: float,
        receive_batch: int,
        send_batch: int = 1,
        flood: str | None = None,
    ) -> None:
        """flood: "unknown-sender" (the session names another sender port) or "bad-hmac" (the session has
        other keys than the generator): every packet is one the reflector must drop and count."""
        self.mode = mode
        self.keys_material = (os.urandom(16), os.urandom(32)) if mode.test_is_protected else None
        reflector_keys = (os.urandom(16), os.urandom(32)) if flood == "bad-hmac" else self.keys_material
        keys = TestSessionKeys(*reflector_keys) if reflector_keys else None
        config = ReflectorConfig(
            realtime_priority=priority,
            busy_poll=busy_poll,
            receive_batch=receive_batch,
            send_batch=send_batch,
        )
        self.reflector = Reflector(config)
        port = self.reflector.reserve_port(HOST, 0)
        thread = next(t for t in threading.enumerate() if t.name == f"twamp-reflector-{port}")
        assert thread.ident is not None
        self.cpu_clock = time.pthread_getcpuclockid(thread.ident)
        cpus = set(range(os.cpu_count() or 1))
        if pin and len(cpus) > 1 and thread.native_id is not None:
            os.sched_setaffinity(thread.native_id, {0})
        generator_cpus = cpus - {0} if pin and len(cpus) > 1 else set()
        spawn = multiprocessing.get_context("spawn")
        self.control, child = spawn.Pipe()
        self.process = spawn.Process(
            target=_generator, args=(port, mode.value, self.keys_material, child, generator_cpus)
        )
        self.process.start()
        sender_port = self.control.recv()
        self.params = TestSessionParams(
            os.urandom(16),
            mode,
            HOST,
            sender_port + 1 if flood == "unknown-sender" else sender_port,
            HOST,
            port,
            PADDING,
            time.time(),
            1.0,
            0,
            0,
            b"\0\0",
            False,
            keys,
        )
        self.reflector.add_session(self.params)
        self.reflector.start_session(self.params.sid)

    def trial(self, rate: float, seconds: float, collect: bool = False) -> Trial:
        before = self._reflected()
        cpu_before = time.clock_gettime(self.cpu_clock)
        self.control.send((rate, seconds, collect))
        sent, received, turnarounds, elapsed = self.control.recv()
        cpu = time.clock_gettime(self.cpu_clock) - cpu_before
        achieved = sent / elapsed if elapsed > 0 else 0.0
        reflected = self._reflected() - before
        return Trial(rate, achieved, sent, received, reflected, turnarounds, cpu, os.getloadavg()[0])

    def dropped(self) -> int:
        return sum(self.reflector.totals().dropped.values())

    def _reflected(self) -> int:
        counters = self.reflector.counters(self.params.sid)
        return counters.reflected if counters else 0

    def close(self) -> None:
        self.control.send(None)
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.reflector.close()


def find_max_rate(bench: Bench, seconds: float, max_rate: float) -> Trial | None:
    """Bisection on the lossless rate; one retry per rate absorbs a hiccup from other load on the host.

    A lossless trial where the generator fell short of the asked rate counts at the rate it achieved, and
    caps the search: beyond it the generator, not the reflector, is the limit.
    """
    low, high = 0.0, max_rate
    best: Trial | None = None
    rate = min(100_000.0, max_rate)
    for _ in range(9):
        trial = bench.trial(rate, seconds)
        if not trial.lossless:
            trial = bench.trial(rate, seconds)
        verdict = "lossless" if trial.lossless else "LOSS"
        print(
            f"  {bench.mode.value} asked {rate:>9.0f} pps, sent at {trial.achieved:>9.0f} pps: "
            f"sent {trial.sent} received {trial.received} reflected {trial.reflected} -> {verdict}; "
            f"reflector CPU {trial.cpu_us_per_packet:.1f} us/packet, load {trial.load:.2f}",
            flush=True,
        )
        if trial.lossless:
            if best is None or trial.achieved > best.achieved:
                best = trial
            low = rate
            if trial.achieved < rate * 0.97:
                high = rate
        else:
            high = rate
        if high - low < max(2000.0, low * 0.03):
            break
        rate = (low + high) / 2 if high < max_rate else min(max_rate, rate * 1.5)
    return best


def flood_absorption(args: argparse.Namespace) -> None:
    """How fast the port thread counts (and rate-limit-logs) packets it must drop: the C loop hands them back
    to Python, so this is the rate of a flood of bad packets it keeps up with, every one counted."""
    logging.disable(logging.WARNING)  # the rate-limited drop log lines, a few per second
    try:
        for flood, mode in (
            ("unknown-sender", SecurityMode.UNAUTHENTICATED),
            ("bad-hmac", SecurityMode.AUTHENTICATED),
        ):
            bench = Bench(mode, not args.no_pin, args.priority or None, 0.0, args.receive_batch, flood=flood)
            best = 0.0
            try:
                for rate in args.flood_rates:
                    before = bench.dropped()
                    trial = bench.trial(rate, args.seconds)
                    time.sleep(0.2)  # the last batch's hand-back
                    counted = bench.dropped() - before
                    cpu = trial.cpu_seconds / counted * 1e6 if counted else float("nan")
                    print(
                        f"  {flood} flood at {trial.achieved:>9.0f} pps: sent {trial.sent} counted {counted} "
                        f"(uncounted {trial.sent - counted}); port thread CPU {cpu:.1f} us/packet",
                        flush=True,
                    )
                    if counted == trial.sent:
                        best = max(best, trial.achieved)
                    else:
                        break
            finally:
                bench.close()
            print(f"RESULT {flood} flood: every packet counted up to {best:,.0f} pps", flush=True)
    finally:
        logging.disable(logging.NOTSET)


def per_packet_costs() -> None:
    """The reflector's own work per packet (reply building, no sockets), in Python and in the C fast path,
    and the system-call floor beside it."""
    import functools
    import timeit

    from nf.net.reflector import native_session
    from nf.twamp.test_reflector import SessionReflector

    costs = []
    native_costs = []
    for mode in (SecurityMode.UNAUTHENTICATED, SecurityMode.AUTHENTICATED, SecurityMode.ENCRYPTED):
        keys = TestSessionKeys(os.urandom(16), os.urandom(32)) if mode.test_is_protected else None
        params = TestSessionParams(
            bytes(16), mode, HOST, 1, HOST, 2, PADDING, 0.0, 1.0, 0, 0, b"\0\0", False, keys
        )
        engine = SessionReflector(params, 0x8001)
        wire = TestPacketCodec(mode, keys).encode_sender(SenderPacket(1, 2, 3, bytes(PADDING)))
        buf = bytearray(65536)
        buf[: len(wire)] = wire
        view = memoryview(buf)
        n = 20000
        seconds = min(
            timeit.repeat(
                functools.partial(engine.reflect, view, len(wire), 1, 64, lambda: 2),
                number=n,
                repeat=3,
                timer=time.thread_time,
            )
        )
        costs.append(f"{mode.value} {seconds / n * 1e6:.1f} us")
        fast = native_session(params, None, 1.0)
        seconds = min(
            timeit.repeat(
                functools.partial(fast.reflect, wire, 1, 64, 2), number=n, repeat=3, timer=time.thread_time
            )
        )
        native_costs.append(f"{mode.value} {seconds / n * 1e6:.2f} us")
    print(f"per packet, CPU time: Python reflect() {', '.join(costs)}", flush=True)
    print(f"per packet, CPU time: C reflect() {', '.join(native_costs)} (a Python call included)", flush=True)
    syscall_floor()


def syscall_floor() -> None:
    """CPU per datagram of the system calls alone on this host (loopback, 105-octet replies, no reader)."""
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with a, b:
        a.bind((HOST, 0))
        b.bind((HOST, 0))
        b.setsockopt(socket.SOL_SOCKET, 33, 256 * 1024 * 1024)
        b.setsockopt(socket.SOL_SOCKET, 35, 1)
        b.setsockopt(socket.IPPROTO_IP, 12, 1)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@qq", 1, 0))
        payload = bytes(105)
        target = b.getsockname()
        n = 16 * 1000
        clock = time.thread_time
        sendto = min(timeit_cpu(lambda: a.sendto(payload, target), n, clock)) / n
        a.connect(target)
        batch = _Batch(a, [payload] * 16)
        sendmmsg = min(timeit_cpu(lambda: batch.send(16), n // 16, clock)) / n
        buf = bytearray(2048)
        recvmsg = min(timeit_cpu(lambda: b.recvmsg_into([buf], 256), n, clock)) / n
        receiver = _Batch(b, [b""] * 16)
        recvmmsg = min(timeit_cpu(receiver.receive, n // 16, clock)) / n
    print(
        f"per datagram, CPU time of the system calls on this host: sendto {sendto * 1e6:.1f} us, "
        f"sendmmsg x16 {sendmmsg * 1e6:.1f} us, recvmsg_into {recvmsg * 1e6:.1f} us, "
        f"recvmmsg x16 {recvmmsg * 1e6:.1f} us",
        flush=True,
    )


def timeit_cpu(function: Callable[[], object], number: int, clock: Callable[[], float]) -> list[float]:
    """Three runs of `number` calls, each timed with `clock`; the datagram queues hold all six runs."""
    runs = []
    for _ in range(3):
        start = clock()
        for _ in range(number):
            function()
        runs.append(clock() - start)
    return runs


def compare_receive(mode: SecurityMode, args: argparse.Namespace) -> None:
    """CPU per packet at one fixed rate with each way of doing the I/O, alternated to share the noise."""
    variants = {
        "Python loop, recvmsg+sendto": (1, 1),
        "C loop, recvmmsg+sendto": (16, 1),
        "C loop, recvmmsg+sendmmsg": (16, 16),
    }
    figures: dict[str, list[str]] = {name: [] for name in variants}
    for _ in range(2):
        for name, (receive_batch, send_batch) in variants.items():
            bench = Bench(
                mode, not args.no_pin, args.priority or None, args.busy_poll / 1e6, receive_batch, send_batch
            )
            try:
                calls = bench.reflector.totals()
                trial = bench.trial(args.compare_rate, args.seconds)
                after = bench.reflector.totals()
            finally:
                bench.close()
            loss = trial.sent - trial.received
            per_receive = trial.reflected / max(1, after.receive_calls - calls.receive_calls)
            per_send = trial.reflected / max(1, after.send_calls - calls.send_calls)
            figures[name].append(
                f"{trial.cpu_us_per_packet:.1f} (loss {loss}, {per_receive:.1f}/recv, {per_send:.1f}/send, "
                f"load {trial.load:.2f})"
            )
    print(f"{mode.value} at {args.compare_rate:,.0f} pps, reflector CPU us/packet:", flush=True)
    for name, runs in figures.items():
        print(f"    {name}: {'; '.join(runs)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each trial")
    parser.add_argument("--max-rate", type=float, default=400_000)
    parser.add_argument("--no-pin", action="store_true", help="do not pin the reflector thread to CPU 0")
    parser.add_argument("--busy-poll", type=float, default=0.0, help="reflector busy polling, microseconds")
    parser.add_argument(
        "--priority", type=int, default=10, help="SCHED_FIFO priority of the reflector; 0: none"
    )
    parser.add_argument(
        "--receive-batch", type=int, default=ReflectorConfig().receive_batch, help="datagrams per recvmmsg"
    )
    parser.add_argument("--send-batch", type=int, default=1, help="replies per sendmmsg (1: sendto each)")
    parser.add_argument(
        "--compare-rate", type=float, default=30_000, help="rate of the single/batched receive comparison"
    )
    parser.add_argument("--turnaround-trials", type=int, default=3, help="turnaround trials at half rate")
    parser.add_argument("--no-compare", action="store_true", help="skip the I/O variants comparison")
    parser.add_argument(
        "--flood-rates",
        type=lambda text: [float(x) for x in text.split(",") if x],
        default=[50_000, 100_000, 150_000, 200_000, 250_000],
        help="rates of the bad-packet floods (comma-separated; empty: skip them)",
    )
    args = parser.parse_args()
    print(
        f"reflector benchmark: loopback {HOST}, {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}, padding {PADDING}, trials of {args.seconds} s, "
        f"reflector thread {'unpinned' if args.no_pin else 'pinned to CPU 0'}, "
        f"SCHED_FIFO {args.priority or 'off'}, busy poll {args.busy_poll:g} us, "
        "generator in its own processes"
    )
    per_packet_costs()
    for mode in (SecurityMode.UNAUTHENTICATED, SecurityMode.AUTHENTICATED):
        if not args.no_compare:
            compare_receive(mode, args)
        bench = Bench(
            mode,
            not args.no_pin,
            args.priority or None,
            args.busy_poll / 1e6,
            args.receive_batch,
            args.send_batch,
        )
        try:
            timestamps = bench.reflector.totals().kernel_timestamps
            best = find_max_rate(bench, args.seconds, args.max_rate)
            if best is None:
                print(f"{mode.value}: no lossless rate found")
                continue
            print(
                f"RESULT {mode.value}: max lossless {best.achieved:,.0f} pps "
                f"(kernel receive timestamps: {timestamps}; reflector CPU {best.cpu_us_per_packet:.1f} "
                f"us/packet, i.e. {1e6 / best.cpu_us_per_packet:,.0f} pps if it had a core to itself; "
                f"load {best.load:.2f})",
                flush=True,
            )
            # Turnaround at half that rate, over several trials: one trial's tail is at the mercy of the host.
            p99s = []
            for _ in range(args.turnaround_trials):
                half = bench.trial(best.achieved / 2, args.seconds, collect=True)
                turn = sorted(half.turnarounds_us)
                if not turn:
                    continue
                p99s.append(turn[int(len(turn) * 0.99)])
                print(
                    f"  {mode.value} at {half.achieved:,.0f} pps: turnaround T3-T2 "
                    f"p50 {statistics.median(turn):.1f} us, p99 {p99s[-1]:.1f} us, "
                    f"p99.9 {turn[int(len(turn) * 0.999)]:.1f} us, max {turn[-1]:.1f} us over {len(turn)} "
                    f"replies (loss {half.sent - half.received}; CPU {half.cpu_us_per_packet:.1f} us/packet, "
                    f"load {half.load:.2f})",
                    flush=True,
                )
            if p99s:
                print(
                    f"RESULT {mode.value}: turnaround T3-T2 p99 at half the lossless rate, median of "
                    f"{len(p99s)} trials: {statistics.median(p99s):.1f} us",
                    flush=True,
                )
        finally:
            bench.close()
    if args.flood_rates:
        flood_absorption(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
