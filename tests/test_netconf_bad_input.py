"""Bad input over a raw SSH channel: malformed XML, missing message-id, unknown operations, oversized
messages, broken chunk framing, in base:1.1 and base:1.0. Each gets the right rpc-error (or, for framing,
the close RFC 6242 requires), is counted, and the server and its configuration carry on."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest
from lxml import etree

from nf_netconf.errors import Reason
from tests.test_netconf_harness import NC_NS, PASSWORD, SERVER_CONFIG, TWAMP_NS, WAIT, Rig, rig

__all__ = ["rig"]

BASE10 = "urn:ietf:params:netconf:base:1.0"
BASE11 = "urn:ietf:params:netconf:base:1.1"


class RawSession:
    """A NETCONF client that writes exactly the bytes a test gives it (paramiko channel, no ncclient)."""

    def __init__(self, port: int, chunked: bool = True, window_size: int | None = None) -> None:
        self.client = paramiko.SSHClient()
        self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        self.client.connect(
            "127.0.0.1",
            port,
            username="admin",
            password=PASSWORD,
            allow_agent=False,
            look_for_keys=False,
            timeout=WAIT,
        )
        transport = self.client.get_transport()
        assert transport is not None
        self.chan = transport.open_session(window_size=window_size)  # None: paramiko's default (2 MB)
        self.chan.settimeout(WAIT)
        self.chan.invoke_subsystem("netconf")
        self.buf = b""
        self.chunked = False
        self.hello = self._read_eom()
        caps = f"<capability>{BASE10}</capability>" + (
            f"<capability>{BASE11}</capability>" if chunked else ""
        )
        self.send(f'<hello xmlns="{NC_NS}"><capabilities>{caps}</capabilities></hello>'.encode())
        self.chunked = chunked

    def _read_eom(self) -> bytes:
        while b"]]>]]>" not in self.buf:
            self._recv()
        msg, _, self.buf = self.buf.partition(b"]]>]]>")
        return msg

    def _recv(self) -> None:
        data = self.chan.recv(65536)
        if not data:
            raise EOFError("server closed the channel")
        self.buf += data

    def read(self) -> etree._Element:
        if not self.chunked:
            return etree.fromstring(self._read_eom().strip())
        parts: list[bytes] = []
        while True:
            while b"\n" not in self.buf[2:] or len(self.buf) < 4:
                self._recv()
            assert self.buf.startswith(b"\n#"), self.buf[:20]
            if self.buf.startswith(b"\n##\n"):
                self.buf = self.buf[4:]
                return etree.fromstring(b"".join(parts))
            header, _, rest = self.buf[2:].partition(b"\n")
            size = int(header)
            self.buf = rest
            while len(self.buf) < size:
                self._recv()
            parts.append(self.buf[:size])
            self.buf = self.buf[size:]

    def send_raw(self, data: bytes) -> None:
        self.chan.sendall(data)

    def send(self, message: bytes) -> None:
        if self.chunked:
            self.send_raw(b"\n#%d\n" % len(message) + message + b"\n##\n")
        else:
            self.send_raw(message + b"]]>]]>")

    def rpc(self, body: str, message_id: str = "1") -> etree._Element:
        self.send(f'<rpc xmlns="{NC_NS}" message-id="{message_id}">{body}</rpc>'.encode())
        return self.read()

    def closed_by_server(self) -> bool:
        try:
            return bool(self.chan.recv(1) == b"")
        except (TimeoutError, OSError):
            return False

    def close(self) -> None:
        self.client.close()


def _tag(reply: etree._Element) -> str | None:
    tag = reply.findtext(f"{{{NC_NS}}}rpc-error/{{{NC_NS}}}error-tag")
    return None if tag is None else str(tag)


@pytest.fixture
def raw(rig: Rig) -> RawSession:
    session = RawSession(rig.app.port)
    rig.managers.append(_Closer(session))
    return session


class _Closer:
    """Lets the rig close raw sessions with its ncclient managers."""

    def __init__(self, session: RawSession) -> None:
        self.session = session
        self.connected = True

    def close_session(self) -> None:
        self.session.close()


GET_CONFIG = "<get-config><source><running/></source></get-config>"


@pytest.mark.parametrize("chunked", [True, False], ids=["base1.1", "base1.0"])
def test_malformed_xml_gets_malformed_message_and_session_goes_on(rig: Rig, chunked: bool) -> None:
    session = RawSession(rig.app.port, chunked=chunked)
    rig.managers.append(_Closer(session))
    assert b"urn:ietf:params:netconf:capability:candidate:1.0" in session.hello
    session.send(b"<rpc xmlns='" + NC_NS.encode() + b"' message-id='1'><get-config><source>")
    assert _tag(session.read()) == "malformed-message"
    session.send(b"\xff\xfe not even utf-8")
    assert _tag(session.read()) == "malformed-message"
    session.send(b'<!DOCTYPE x [<!ENTITY a "aaaa">]><rpc xmlns="' + NC_NS.encode() + b'" message-id="2"/>')
    assert _tag(session.read()) == "malformed-message"
    reply = session.rpc(GET_CONFIG, "3")
    assert reply.get("message-id") == "3" and reply.find(f"{{{NC_NS}}}data") is not None
    assert rig.app.counters.get(Reason.MALFORMED_MESSAGE) == 3


def test_rpc_shape_errors(rig: Rig, raw: RawSession) -> None:
    raw.send(f'<rpc xmlns="{NC_NS}">{GET_CONFIG}</rpc>'.encode())
    reply = raw.read()
    assert _tag(reply) == "missing-attribute"
    assert _tag(raw.rpc("<frobnicate/>")) == "operation-not-supported"
    assert _tag(raw.rpc(GET_CONFIG + GET_CONFIG)) == "malformed-message"
    assert _tag(raw.rpc("<get-config><source><startup/></source></get-config>")) == "bad-element"
    assert _tag(raw.rpc("<get-config><source><running/></source><bogus/></get-config>")) == "unknown-element"
    assert _tag(raw.rpc("<get-config/>")) == "missing-element"
    bad_filter = '<get><filter type="regex">.*</filter></get>'
    assert _tag(raw.rpc(bad_filter)) == "bad-attribute"
    bad_xpath = '<get-config><source><running/></source><filter type="xpath" select="///["/></get-config>'
    assert _tag(raw.rpc(bad_xpath)) == "invalid-value"
    edit = "<edit-config><target><running/></target><default-operation>smash</default-operation>"
    edit += f"{SERVER_CONFIG}</edit-config>"
    assert _tag(raw.rpc(edit)) == "invalid-value"
    assert rig.runtime.applied == []
    assert rig.app.counters.get(Reason.UNKNOWN_OPERATION) == 1


def test_oversized_message_gets_too_big_and_config_survives(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_message_size=4096)
    try:
        m = rig.connect()
        m.edit_config(target="running", config=SERVER_CONFIG)
        raw = RawSession(rig.app.port)
        try:
            padding = "<!--" + "x" * 10000 + "-->"
            raw.send(f'<rpc xmlns="{NC_NS}" message-id="9">{padding}{GET_CONFIG}</rpc>'.encode())
            reply = raw.read()
            assert _tag(reply) == "too-big"
            # many small chunks adding up past the limit count as one message too
            for _ in range(10):
                raw.send_raw(b"\n#1000\n" + b" " * 1000)
            raw.send_raw(b"\n##\n")
            assert _tag(raw.read()) == "too-big"
            reply = raw.rpc(GET_CONFIG, "10")
            assert reply.findtext(f".//{{{TWAMP_NS}}}count") == "65536"
        finally:
            raw.close()
        assert rig.app.counters.get(Reason.TOO_BIG) == 2
    finally:
        rig.close()


def test_broken_chunk_framing_closes_only_that_session(rig: Rig, raw: RawSession) -> None:
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    raw.send_raw(b"\n#abc\n<rpc/>\n##\n")
    assert raw.closed_by_server()
    assert rig.app.counters.get(Reason.FRAMING_ERROR) == 1
    assert m.get_config("running").xml.count("65536") == 1  # the other session and the config are fine
