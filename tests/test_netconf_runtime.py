"""The NETCONF server on top of the real runtime (`twamp-nf run` in its own process): an edit starts a TWAMP
server, get shows the runtime's state, a TWAMP client's failure arrives as a notification, and a refused
apply (port in use) leaves running unchanged."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError

from nf_netconf.server import NetconfApp, ServerConfig
from tests.test_netconf_harness import (
    NC_NS,
    NOTIF_NS,
    SECRET_B64,
    TWAMP_NS,
    WAIT,
    netconf_connect,
    users_toml,
)
from tests.test_runtime_daemon import RuntimeProcess


class RealStack:
    """`twamp-nf run` in its own process and our NETCONF server in this one, talking over its socket."""

    def __init__(self, tmp: Path) -> None:
        self.sockdir = tempfile.mkdtemp(prefix="ncrun")  # Unix socket paths must stay short
        self.runtime = RuntimeProcess(Path(self.sockdir), "rt")
        self.managers: list[Any] = []
        (tmp / "users.toml").write_text(users_toml())
        self.app = NetconfApp(
            ServerConfig(
                host="127.0.0.1",
                port=0,
                runtime_socket=self.runtime.path,
                host_key=str(tmp / "host_key"),
                users_file=str(tmp / "users.toml"),
            )
        )
        self.app.start()

    def connect(self) -> Any:
        m = netconf_connect(self.app.port)
        self.managers.append(m)
        return m

    def close(self) -> None:
        for m in self.managers:
            with contextlib.suppress(Exception):
                m.close_session()
        self.app.stop()
        self.runtime.stop()
        with contextlib.suppress(OSError):
            os.unlink(self.runtime.path)
        shutil.rmtree(self.sockdir, ignore_errors=True)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RealStack]:
    s = RealStack(tmp_path)
    try:
        yield s
    finally:
        s.close()


def _server_config(port: int) -> str:
    return f"""<config xmlns="{NC_NS}"><twamp xmlns="{TWAMP_NS}"><server>
        <server-ip>127.0.0.1</server-ip><server-tcp-port>{port}</server-tcp-port>
        <modes>unauthenticated authenticated</modes>
        <key-chain><key-id>k1</key-id><secret-key>{SECRET_B64}</secret-key></key-chain>
        </server><session-reflector/></twamp></config>"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_netconf_configures_the_real_runtime(stack: RealStack) -> None:
    m = stack.connect()
    m.create_subscription()
    port = _free_port()
    m.edit_config(target="running", config=_server_config(port))

    # the runtime now runs a TWAMP server there: it greets a client with the modes we configured
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as client:
        greeting = b""
        while len(greeting) < 64:
            chunk = client.recv(64 - len(greeting))
            assert chunk, "the TWAMP server closed before its greeting"
            greeting += chunk
        assert int.from_bytes(greeting[12:16], "big") & 0b11 == 0b11  # unauthenticated | authenticated
        client.sendall(bytes(164))  # Set-Up-Response with Mode 0: the client declines

    notification = m.take_notification(timeout=WAIT)
    assert notification is not None
    root = etree.fromstring(notification.notification_xml.encode())
    while root.find("{urn:ietf:params:xml:ns:yang:ietf-netconf-notifications}*") is not None:
        notification = m.take_notification(timeout=WAIT)  # the server's RFC 6470 config change
        assert notification is not None
        root = etree.fromstring(notification.notification_xml.encode())
    failed = root.find(f"{{{TWAMP_NS}}}ctrl-connection-failed")
    assert failed is not None
    assert failed.findtext(f"{{{TWAMP_NS}}}server-tcp-port") == str(port)
    assert (failed.findtext(f"{{{TWAMP_NS}}}reason") or "").endswith(":control-client-declined")
    assert root.findtext(f"{{{NOTIF_NS}}}eventTime")

    state = etree.fromstring(m.get().xml.encode())
    assert state.findtext(f".//{{{TWAMP_NS}}}server/{{{TWAMP_NS}}}server-tcp-port") == str(port)
    assert SECRET_B64 not in m.get().xml

    # a port another socket holds: the runtime refuses, running keeps the old port
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        with pytest.raises(RPCError) as err:
            m.edit_config(target="running", config=_server_config(taken))
    assert err.value.tag == "resource-denied"
    assert err.value.path == "/twamp-nf-twamp:twamp/server/server-tcp-port"
    config = etree.fromstring(m.get_config("running").xml.encode())
    assert config.findtext(f".//{{{TWAMP_NS}}}server-tcp-port") == str(port)
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT):
        pass  # and the runtime still serves the old one
