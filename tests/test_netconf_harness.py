"""Harness for the NETCONF server tests: a fake runtime speaking docs/control-socket.md on a real Unix socket,
a server on a free loopback port, and ncclient sessions. The harness checks itself here too."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ncclient.transport.session
import pytest
from ncclient import manager

from nf_netconf.server import NetconfApp, ServerConfig
from nf_netconf.users import hash_password

# ncclient polls its send queue every TICK seconds (0.1 by default): see /work/shared/stack.md
ncclient.transport.session.TICK = 0.001

PASSWORD = "correct horse battery staple"
READER_PASSWORD = "reader-pass-1234"
TWAMP_NS = "urn:twamp-nf:yang:twamp-nf-twamp"
IKE_NS = "urn:twamp-nf:yang:twamp-nf-ike"
NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
# Notification namespaces as the RFCs give them (not imported from the server, so a wrong one there fails)
NOTIF_NS = "urn:ietf:params:xml:ns:netconf:notification:1.0"  # RFC 5277 <notification>
NC_NOTIF_NS = "urn:ietf:params:xml:ns:netmod:notification"  # RFC 5277 replayComplete, notificationComplete
NCN_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-notifications"  # RFC 6470
SECRET_B64 = "c2VjcmV0LXNoYXJlZC1rZXktbm90LWZvci15b3U="  # base64 of a 28-octet test secret
WAIT = 30.0

Refusal = Callable[[dict[str, Any]], dict[str, str] | None]


class FakeRuntime:
    """A real Unix-socket server with the runtime's protocol: records applied configs, can refuse them,
    serves a configurable state and pushes events to subscribers."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.applied: list[dict[str, Any]] = []
        self.validated: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {}
        self.refuse: Refusal | None = None
        self.requests: list[dict[str, Any]] = []
        self._subscribers: list[socket.socket] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        os.chmod(path, 0o600)
        self._sock.listen(16)
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._closing = False
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                if self._closing:
                    conn.close()
                    return
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with contextlib.suppress(OSError):
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    request = json.loads(line)
                    reply = self._answer(conn, request)
                    with self._lock:
                        conn.sendall(json.dumps(reply).encode() + b"\n")
                    if request.get("op") == "subscribe":
                        self.subscribed.set()

    def _answer(self, conn: socket.socket, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        op = request.get("op")
        rid = request.get("id")
        if op == "hello":
            return {"id": rid, "ok": True, "version": 1, "modules": ["twamp-nf-twamp", "twamp-nf-ike"]}
        if op in ("validate", "apply"):
            config = request["config"]
            refusal = self.refuse(config) if self.refuse else None
            if refusal is not None:
                return {"id": rid, "ok": False, "error": refusal}
            (self.applied if op == "apply" else self.validated).append(config)
            return {"id": rid, "ok": True}
        if op == "get-state":
            return {"id": rid, "ok": True, "state": self.state}
        if op == "subscribe":
            with self._lock:
                self._subscribers.append(conn)
            return {"id": rid, "ok": True}
        return {"id": rid, "ok": False, "error": {"tag": "operation-failed", "message": f"unknown op {op}"}}

    def emit(self, event: dict[str, Any]) -> None:
        with self._lock:
            for conn in self._subscribers:
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(event).encode() + b"\n")

    def close(self) -> None:
        with self._lock:
            self._closing = True
            conns = list(self._conns)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        self._sock.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in self._threads:
            thread.join(timeout=WAIT)


def netconf_connect(
    port: int, host: str = "127.0.0.1", user: str = "admin", password: str | None = PASSWORD, **kwargs: Any
) -> Any:
    """An ncclient session as an operator opens one: password only, the throwaway host key not checked."""
    return manager.connect(
        host=host,
        port=port,
        username=user,
        password=password,
        hostkey_verify=False,
        allow_agent=False,
        look_for_keys=False,
        timeout=WAIT,
        **kwargs,
    )


def users_toml(extra: str = "", reader_key: str | None = None) -> str:
    keys = f'authorized-keys = ["{reader_key}"]\n' if reader_key else ""
    return (
        f'[users.admin]\npassword-hash = "{hash_password(PASSWORD)}"\ngroups = ["admin"]\n\n'
        f'[users.reader]\npassword-hash = "{hash_password(READER_PASSWORD)}"\n{keys}groups = ["readers"]\n\n'
        '[nacm]\nread-default = "permit"\nwrite-default = "deny"\n\n'
        '[[nacm.rule]]\ngroups = ["admin"]\naccess = "*"\naction = "permit"\n\n'
        '[[nacm.rule]]\ngroups = ["readers"]\npath = "/twamp-nf-ike:ike"\n'
        'access = ["read"]\naction = "deny"\n' + extra
    )


class Rig:
    def __init__(
        self,
        tmp: Path,
        *,
        max_sessions: int = 8,
        max_message_size: int = 1024 * 1024,
        users: str | None = None,
        hello_timeout: float = 60.0,
        replay_events: int = 1000,
        replay_max_age: float | None = None,
        notification_queue: int = 10_000,
    ) -> None:
        self.tmp = tmp
        # Unix socket paths are limited to ~100 octets: keep them short
        self.sockdir = tempfile.mkdtemp(prefix="ncrt")
        self.runtime_path = os.path.join(self.sockdir, "rt.sock")
        self.runtime = FakeRuntime(self.runtime_path)
        (tmp / "users.toml").write_text(users if users is not None else users_toml())
        self.app = NetconfApp(
            ServerConfig(
                host="127.0.0.1",
                port=0,
                runtime_socket=self.runtime_path,
                host_key=str(tmp / "host_key"),
                users_file=str(tmp / "users.toml"),
                max_sessions=max_sessions,
                max_message_size=max_message_size,
                hello_timeout=hello_timeout,
                replay_events=replay_events,
                replay_max_age=replay_max_age,
                notification_queue=notification_queue,
            )
        )
        self.app.start()
        self.managers: list[Any] = []

    def connect(self, user: str = "admin", password: str | None = PASSWORD, **kwargs: Any) -> Any:
        m = netconf_connect(self.app.port, user=user, password=password, **kwargs)
        self.managers.append(m)
        return m

    def close(self) -> None:
        for m in self.managers:
            with contextlib.suppress(Exception):
                if m.connected:
                    m.close_session()
        self.app.stop()
        self.runtime.close()
        with contextlib.suppress(OSError):
            os.unlink(self.runtime_path)
        os.rmdir(self.sockdir)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def one_connection_state() -> dict[str, Any]:
    """Runtime state with one active control connection at the Server: what a test's fake runtime returns."""
    connection = {
        "client-ip": "192.0.2.1",
        "client-tcp-port": 40000,
        "server-ip": "192.0.2.2",
        "server-tcp-port": 862,
        "state": "active",
    }
    return {"twamp-nf-twamp:twamp": {"server": {"ctrl-connection": [connection]}}}


SERVER_CONFIG = f"""
<config xmlns="{NC_NS}">
  <twamp xmlns="{TWAMP_NS}">
    <server>
      <count>65536</count>
      <max-count-exponent>16</max-count-exponent>
      <modes>unauthenticated authenticated</modes>
      <key-chain>
        <key-id>site-a</key-id>
        <secret-key>{SECRET_B64}</secret-key>
      </key-chain>
    </server>
  </twamp>
</config>
"""


def test_fake_runtime_answers_the_contract(tmp_path: Path) -> None:
    path = os.path.join(tempfile.mkdtemp(prefix="ncrt"), "rt.sock")
    runtime = FakeRuntime(path)
    try:
        runtime.refuse = lambda config: {"tag": "invalid-value", "message": "no"} if config else None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            s.sendall(b'{"id":1,"op":"hello","version":1}\n{"id":2,"op":"apply","config":{"a:b":{}}}\n')
            f = s.makefile("rb")
            assert json.loads(f.readline())["ok"] is True
            second = json.loads(f.readline())
            assert second == {"id": 2, "ok": False, "error": {"tag": "invalid-value", "message": "no"}}
        assert os.stat(path).st_mode & 0o777 == 0o600
    finally:
        runtime.close()
        os.unlink(path)
        os.rmdir(os.path.dirname(path))


def test_server_starts_and_stops_cleanly(rig: Rig) -> None:
    m = rig.connect()
    assert m.session_id is not None
    assert rig.app.session_count() == 1
    m.close_session()
    assert rig.runtime.subscribed.wait(WAIT)
