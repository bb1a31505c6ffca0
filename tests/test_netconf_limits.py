"""Limits under pressure: SSH connections that never authenticate cannot lock others out beyond the cap, and
concurrent edits from several sessions leave running equal to what the runtime last applied."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from lxml import etree

from nf_netconf.errors import Reason
from nf_netconf.server import NetconfApp, ServerConfig
from tests.test_netconf_harness import NC_NS, SERVER_CONFIG, TWAMP_NS, WAIT, Rig, rig

__all__ = ["rig"]


def test_silent_tcp_connections_are_capped(tmp_path: Path) -> None:
    harness = Rig(tmp_path, max_sessions=1)  # max SSH connections: 2
    try:
        assert harness.app.config.max_ssh_connections == 0  # the default: twice max_sessions
        silent = [socket.create_connection(("127.0.0.1", harness.app.port), timeout=WAIT) for _ in range(2)]
        deadline = time.monotonic() + WAIT
        while harness.app.counters.get(Reason.SESSION_LIMIT) == 0 and time.monotonic() < deadline:
            extra = socket.create_connection(("127.0.0.1", harness.app.port), timeout=WAIT)
            extra.settimeout(WAIT)
            try:
                closed = extra.recv(256) == b""  # refused: closed without an SSH banner
            except OSError:
                closed = True
            finally:
                extra.close()
            if not closed:
                time.sleep(0.05)  # our connection raced the accept of a silent one; try again
        assert harness.app.counters.get(Reason.SESSION_LIMIT) >= 1
        for conn in silent:
            conn.close()
        deadline = time.monotonic() + WAIT
        while True:  # once the silent handshakes end, a real client gets in
            try:
                m = harness.connect()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert m.session_id is not None
    finally:
        harness.close()


def test_concurrent_edits_keep_running_equal_to_the_runtime(rig: Rig) -> None:
    sessions = [rig.connect() for _ in range(4)]
    errors: list[BaseException] = []

    def edit(index: int) -> None:
        try:
            for n in range(8):
                count = 1024 << ((index + n) % 6)
                sessions[index].edit_config(
                    target="running", config=SERVER_CONFIG.replace("65536", str(count))
                )
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
    assert not errors
    running = etree.fromstring(sessions[0].get_config("running").xml.encode())
    count = running.findtext(f".//{{{TWAMP_NS}}}count")
    assert count is not None
    assert rig.runtime.applied[-1]["twamp-nf-twamp:twamp"]["server"]["count"] == int(count)
    assert len(rig.runtime.applied) >= 1
    assert running.find(f"{{{NC_NS}}}data") is not None


def test_config_rejects_nonsense_limits(tmp_path: Path) -> None:
    (tmp_path / "users.toml").write_text("")
    for bad in ({"max_sessions": 0}, {"max_message_size": 10}):
        with pytest.raises(ValueError):
            NetconfApp(
                ServerConfig(
                    host="127.0.0.1",
                    port=0,
                    runtime_socket="/nonexistent",
                    host_key=str(tmp_path / "k"),
                    users_file=str(tmp_path / "users.toml"),
                    **bad,  # type: ignore[arg-type]
                )
            )
