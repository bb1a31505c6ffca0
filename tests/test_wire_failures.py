"""Failures and limits, end to end: `ping` must fail cleanly with the reason in words, `reflect` must keep
running and count the reason (read through --stats-file)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from nf.net.control_connector import (
    ControlClientError,
    ControlConnection,
    MeasurementConfig,
    SessionPlan,
    measure,
)
from nf.twamp.control_client import ClientConfig, SessionRequest
from nf.twamp.control_events import ControlFailure, SessionAccepted, SetupCompleted, StartAcked
from nf.twamp.control_messages import ServerGreeting
from nf.twamp.keysource import KeyChain
from nf.twamp.modes import Accept, Modes, SecurityMode
from tests.conftest import CLI, WAIT, Child, run_cli, split_hostport


def _ping(target: str, *args: str) -> Any:
    return run_cli(["ping", target, "--timeout", "20", *args])


def _connect(address: str, source: str = "127.0.0.1") -> socket.socket:
    host, port = split_hostport(address)
    sock = socket.create_connection((host, port), timeout=WAIT, source_address=(source, 0))
    return sock


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _wait_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (bounded by WAIT)."""
    sock.settimeout(WAIT)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def _refused(data: bytes) -> bool:
    """A Server Greeting with Modes 0 (RFC 4656 s3.1: the server will not talk), then nothing more."""
    return len(data) == 64 and ServerGreeting.decode(data).modes == 0


def test_wrong_key_fails_cleanly_on_both_sides(
    reflector_factory: Any, pfs_keys: Path, tmp_path: Path
) -> None:
    reflector = reflector_factory("--keys", str(pfs_keys))
    wrong = tmp_path / "wrong.pfs"
    wrong.write_text("alice 99999999999999999999999999999999\n")
    result = _ping(reflector.address, "--mode", "authenticated", "--key-id", "alice", "--keys", str(wrong))
    assert result.returncode == 1
    assert "wrong key or unknown key-id 'alice'" in result.stderr
    assert "Accept=1 (failure)" in result.stderr
    assert "99999999" not in result.stderr  # never the secret
    # the reflector is still serving: the right key works afterwards
    good = _ping(
        reflector.address, "--mode", "authenticated", "--key-id", "alice", "--keys", str(pfs_keys), "--json"
    )
    assert good.returncode == 0, good.stderr
    stats = reflector.final_stats()
    assert stats["bad_input"] == {"bad-token": 1}
    assert stats["modes"] == {"authenticated": 1}


def test_unknown_key_id_is_refused(reflector_factory: Any, pfs_keys: Path, tmp_path: Path) -> None:
    reflector = reflector_factory("--keys", str(pfs_keys))
    other = tmp_path / "other.pfs"
    other.write_text("carol 0123456789abcdef0123456789abcdef\n")
    result = _ping(reflector.address, "--mode", "encrypted", "--key-id", "carol", "--keys", str(other))
    assert result.returncode == 1
    assert "rejected the authentication" in result.stderr
    assert reflector.final_stats()["bad_input"] == {"unknown-key-id": 1}


def test_mode_mismatch(reflector_factory: Any, pfs_keys: Path) -> None:
    reflector = reflector_factory("--modes", "unauthenticated")
    result = _ping(reflector.address, "--mode", "encrypted", "--key-id", "alice", "--keys", str(pfs_keys))
    assert result.returncode == 1
    assert "server does not offer mode encrypted" in result.stderr
    assert reflector.final_stats()["bad_input"] == {"client-declined": 1}


def test_feature_not_offered(reflector_factory: Any) -> None:
    reflector = reflector_factory("--modes", "unauthenticated")
    result = _ping(reflector.address, "--symmetric")
    assert result.returncode == 1
    assert "does not offer Symmetrical Size (RFC 6038)" in result.stderr


def test_count_too_large_is_refused_by_the_client(reflector_factory: Any, pfs_keys: Path) -> None:
    reflector = reflector_factory("--keys", str(pfs_keys), "--count-exponent", "16")
    result = _ping(
        reflector.address,
        *("--mode", "authenticated", "--key-id", "alice", "--keys", str(pfs_keys)),
        *("--max-count-exponent", "12"),
    )
    assert result.returncode == 1
    assert "too many PBKDF2 iterations" in result.stderr
    assert "65536" in result.stderr
    assert reflector.final_stats()["bad_input"] == {"client-declined": 1}


def test_sessions_per_connection_limit(reflector_factory: Any) -> None:
    reflector = reflector_factory("--max-sessions", "2")
    result = _ping(reflector.address, "--sessions", "3", "--count", "2")
    assert result.returncode == 1
    assert "Accept=4 (permanent resource limitation)" in result.stderr
    stats = reflector.final_stats()
    assert stats["bad_input"] == {"session-limit": 1}
    assert stats["sessions"]["accepted"] == 2


def test_packet_rate_limit(reflector_factory: Any) -> None:
    reflector = reflector_factory("--max-pps", "20")
    result = _ping(reflector.address, "--count", "80", "--interval", "0", "--json", "--wait", "1")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["lost"] > 0
    stats = reflector.final_stats()
    dropped = stats["reflector"]["dropped"]["rate-limited"]
    assert dropped > 0
    assert stats["reflector"]["reflected"] + dropped == 80


def test_total_connection_limit(reflector_factory: Any) -> None:
    reflector = reflector_factory("--max-connections", "2")
    held = [_connect(reflector.address) for _ in range(2)]
    try:
        for sock in held:
            assert len(_read_exactly(sock, 64)) == 64  # both got a Server Greeting
        with _connect(reflector.address) as third:
            assert _refused(_wait_closed(third))
        result = _ping(reflector.address, "--count", "2")
        assert result.returncode == 1
        assert "offers no modes (connection limit reached or not allowed)" in result.stderr
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)  # let the server see the two closes before counting
    stats = reflector.final_stats()
    assert stats["connections"]["refused_too_many_connections"] == 2
    assert stats["connections"]["accepted"] == 2


def test_per_client_connection_limit(reflector_factory: Any) -> None:
    reflector = reflector_factory("--max-connections-per-client", "1")
    first = _connect(reflector.address)
    try:
        assert len(_read_exactly(first, 64)) == 64
        with _connect(reflector.address) as second:
            assert _refused(_wait_closed(second))
        with _connect(reflector.address, source="127.0.0.2") as other_client:
            assert len(_read_exactly(other_client, 64)) == 64
    finally:
        first.close()
    stats = reflector.final_stats()
    assert stats["connections"]["refused_too_many_connections_from_client"] == 1
    assert stats["connections"]["accepted"] == 2


def test_servwait_closes_an_idle_control_connection(reflector_factory: Any) -> None:
    reflector = reflector_factory("--servwait", "1")
    with _connect(reflector.address) as sock:
        data = _wait_closed(sock)
    assert len(data) == 64  # the greeting, then silence from us, then the server closed
    stats = reflector.final_stats()
    assert stats["connections"]["servwait_timeout"] == 1


async def _one_session_accepted(config: MeasurementConfig) -> ControlConnection:
    """A control connection, set up, with one test session requested and accepted (not started)."""
    control = ControlConnection(config, os.urandom)
    await control.connect()
    try:
        assert control.machine is not None
        await control.expect((SetupCompleted,), "setup")
        control.machine.request_session(
            SessionRequest(sender_port=40000, reflector_port=0, start_time=time.time(), timeout=1)
        )
        await control.expect((SessionAccepted,), "Accept-Session")
    except BaseException:
        await control.close()
        raise
    return control


def test_refwait_ends_a_session_nobody_started(reflector_factory: Any) -> None:
    reflector = reflector_factory("--refwait", "1")
    host, port = split_hostport(reflector.address)
    config = MeasurementConfig(host=host, port=port, mode=SecurityMode.UNAUTHENTICATED)

    async def scenario() -> StartAcked:
        control = await _one_session_accepted(config)
        try:
            assert control.machine is not None
            deadline = time.monotonic() + WAIT
            while reflector.stats()["reflector"]["sessions"] and time.monotonic() < deadline:
                await asyncio.sleep(0.2)  # REFWAIT (1 s) passes with no test packet
            control.machine.start_sessions()
            ack = await control.expect((StartAcked,), "Start-Ack")
            assert isinstance(ack, StartAcked)
            return ack
        finally:
            await control.close()

    ack = asyncio.run(scenario())
    assert ack.accept is Accept.FAILURE
    stats = reflector.final_stats()
    assert stats["sessions"]["start_failed"] == 1
    assert "started" not in stats["sessions"]


def test_server_dying_mid_test_is_a_clean_failure(reflector_factory: Any, children: list[Child]) -> None:
    reflector = reflector_factory()
    ping = Child([*CLI, "ping", reflector.address, "--count", "150", "--interval", "0.02", "--wait", "1"])
    children.append(ping)
    deadline = time.monotonic() + WAIT
    while not reflector.stats()["sessions"].get("started") and time.monotonic() < deadline:
        time.sleep(0.1)  # kill it only once the test is running
    reflector.stop(signal.SIGKILL)
    assert ping.wait(60) == 1
    assert "server closed the control connection during the test" in ping.err.text
    assert "Traceback" not in ping.err.text


def test_silent_server_times_out_with_a_reason() -> None:
    with socket.socket() as silent:  # accepts TCP (kernel backlog) but never speaks TWAMP
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        result = run_cli(["ping", f"127.0.0.1:{port}", "--timeout", "1"], timeout=60)
    assert result.returncode == 1
    assert "timed out after 1 s waiting for the Server Greeting and Server-Start" in result.stderr


def test_servwait_is_suspended_while_a_session_runs(reflector_factory: Any) -> None:
    reflector = reflector_factory("--servwait", "1")
    result = _ping(reflector.address, "--count", "30", "--interval", "0.1", "--json")  # 3 s, control silent
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["received"] > 0
    stats = reflector.final_stats()
    assert "servwait_timeout" not in stats["connections"]
    assert stats["sessions"]["stopped"] == 1


def test_servwait_still_applies_while_a_session_waits_for_its_start(reflector_factory: Any) -> None:
    """Only a started session suspends SERVWAIT: before Start-Sessions no test packet can belong to the
    connection, so a client that requests a session and then falls silent is closed after SERVWAIT, long
    before REFWAIT would end the session (owamp's twampd stops its control timer at Start-Sessions too)."""
    reflector = reflector_factory("--servwait", "1", "--refwait", "60")
    host, port = split_hostport(reflector.address)
    config = MeasurementConfig(host=host, port=port, mode=SecurityMode.UNAUTHENTICATED, timeout=20)

    async def scenario() -> float:
        control = await _one_session_accepted(config)
        try:
            assert control.machine is not None
            accepted = time.monotonic()
            with pytest.raises(ControlClientError, match="server closed the control connection"):
                await control.expect((StartAcked,), "the server to close")  # we send nothing more
            return time.monotonic() - accepted
        finally:
            await control.close()

    silent_for = asyncio.run(scenario())
    assert silent_for < 20  # SERVWAIT (1 s) closed it, not REFWAIT (60 s)
    stats = reflector.final_stats()
    assert stats["connections"]["servwait_timeout"] == 1
    assert "started" not in stats["sessions"]


def _chain_config(address: str, keys: Path, chain: tuple[Modes, ...]) -> MeasurementConfig:
    """`mode` says encrypted, but the given ClientConfig (an RFC 8913 chain) is what goes on the wire."""
    host, port = split_hostport(address)
    client = ClientConfig(
        mode_preference=chain, key_id=b"alice", key_source=KeyChain.from_pfs_file(str(keys))
    )
    plan = SessionPlan(count=3, interval=0.01, wait=1.0)
    return MeasurementConfig(host=host, port=port, mode=SecurityMode.ENCRYPTED, client=client, plan=plan)


def test_a_given_client_config_replaces_the_derived_one(reflector_factory: Any, pfs_keys: Path) -> None:
    reflector = reflector_factory("--modes", "unauthenticated,authenticated", "--keys", str(pfs_keys))
    config = _chain_config(reflector.address, pfs_keys, (Modes.ENCRYPTED, Modes.AUTHENTICATED))
    records = asyncio.run(measure(config))
    assert [r.sent for r in records] == [3] and len(records[0].replies) == 3
    assert reflector.final_stats()["modes"] == {"authenticated": 1}


def test_a_given_chain_nothing_of_which_is_offered_names_the_chain(
    reflector_factory: Any, pfs_keys: Path
) -> None:
    reflector = reflector_factory("--modes", "unauthenticated,authenticated", "--keys", str(pfs_keys))
    config = _chain_config(reflector.address, pfs_keys, (Modes.ENCRYPTED, Modes.MIXED))
    with pytest.raises(ControlClientError) as failure:
        asyncio.run(measure(config))
    assert failure.value.reason is ControlFailure.NO_COMMON_MODE
    assert "server does not offer any mode of the chain 4, 8" in str(failure.value)
    assert reflector.final_stats()["bad_input"] == {"client-declined": 1}
