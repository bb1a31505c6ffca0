"""The whole product path: ncclient -> NETCONF server (nf_netconf) -> control socket -> `twamp-nf run`.

One runtime is both TWAMP Server and Control-Client (to itself, on loopback, authenticated with a key
chain), configured by edit-config alone; the test session's completion arrives as a NETCONF notification and
its results in <get>. A configuration the runtime refuses (a missing certificate file) comes back as an
rpc-error naming the node, and the running datastore and the runtime keep the previous configuration.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from ncclient.operations import RPCError

from nf_netconf.server import NetconfApp, ServerConfig
from tests.conftest import free_port
from tests.test_netconf_harness import netconf_connect, users_toml
from tests.test_runtime_daemon import RuntimeProcess

pytestmark = pytest.mark.timeout(600)  # two processes on a loaded machine: bounded, generously
TWAMP_NS = "urn:twamp-nf:yang:twamp-nf-twamp"
IKE_NS = "urn:twamp-nf:yang:twamp-nf-ike"
NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
SECRET_B64 = "cnVudGltZS1uZXRjb25mLXRlc3Qtc2VjcmV0LWtleQ=="  # a test secret, never to be returned
NS = {"t": TWAMP_NS, "i": IKE_NS}


@pytest.fixture
def product(tmp_path: Path) -> Iterator[tuple[RuntimeProcess, Any]]:
    socket_dir = Path(tempfile.mkdtemp(prefix="rtnc"))  # Unix socket paths must stay short
    runtime = RuntimeProcess(socket_dir, "rt")
    (tmp_path / "users.toml").write_text(users_toml())
    app = NetconfApp(
        ServerConfig(
            host="127.0.0.1",
            port=0,
            runtime_socket=runtime.path,
            host_key=str(tmp_path / "host_key"),
            users_file=str(tmp_path / "users.toml"),
        )
    )
    app.start()
    session: Any = None
    try:
        session = netconf_connect(app.port)
        yield runtime, session
    finally:
        if session is not None:
            with contextlib.suppress(Exception):
                session.close_session()
        app.stop()
        runtime.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


def loopback_config(port: int) -> str:
    return f"""
<config xmlns="{NC_NS}">
  <twamp xmlns="{TWAMP_NS}">
    <server>
      <server-ip>127.0.0.1</server-ip>
      <server-tcp-port>{port}</server-tcp-port>
      <count>1024</count>
      <modes>unauthenticated authenticated</modes>
      <key-chain><key-id>site-a</key-id><secret-key>{SECRET_B64}</secret-key></key-chain>
    </server>
    <session-reflector><refwait>60</refwait></session-reflector>
    <client>
      <mode-preference-chain><priority>0</priority><mode>authenticated</mode></mode-preference-chain>
      <key-chain><key-id>site-a</key-id><secret-key>{SECRET_B64}</secret-key></key-chain>
      <ctrl-connection>
        <name>self</name>
        <server-ip>127.0.0.1</server-ip>
        <server-tcp-port>{port}</server-tcp-port>
        <key-id>site-a</key-id>
        <test-session-request>
          <name>r1</name>
          <reflector-ip>127.0.0.1</reflector-ip>
          <timeout>1</timeout>
        </test-session-request>
      </ctrl-connection>
    </client>
    <session-sender>
      <test-session>
        <name>s1</name>
        <ctrl-connection>self</ctrl-connection>
        <test-session-request>r1</test-session-request>
        <number-of-packets>10</number-of-packets>
        <periodic-interval>0.01</periodic-interval>
      </test-session>
    </session-sender>
  </twamp>
</config>
"""


def certificate_config(missing: Path) -> str:
    return f"""
<config xmlns="{NC_NS}">
  <ike xmlns="{IKE_NS}">
    <local-identity>
      <name>me</name><id-type>fqdn</id-type><id-value>me.example</id-value>
      <certificate-file>{missing}</certificate-file>
      <private-key-file>{missing}</private-key-file>
    </local-identity>
    <peer>
      <name>gw</name><local-identity>me</local-identity><address>192.0.2.1</address>
      <remote-identity><id-type>fqdn</id-type><id-value>gw.example</id-value></remote-identity>
      <trust-anchor>{missing}</trust-anchor>
      <proposal>
        <name>p</name><encryption>aes-gcm-16-256</encryption><prf>hmac-sha2-256</prf><dh-group>ecp-256</dh-group>
      </proposal>
    </peer>
  </ike>
</config>
"""


def completed_notification(session: Any) -> etree._Element:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        notification = session.take_notification(timeout=5)
        if notification is None:
            continue
        root = etree.fromstring(notification.notification_xml.encode())
        found = root.find(f".//{{{TWAMP_NS}}}test-session-completed")
        if found is not None:
            return found
    raise AssertionError("no test-session-completed notification")


def test_netconf_configures_the_runtime_end_to_end(
    product: tuple[RuntimeProcess, Any], tmp_path: Path
) -> None:
    runtime, session = product
    session.create_subscription()
    port = free_port()
    session.edit_config(target="running", config=loopback_config(port))

    completed = completed_notification(session)
    assert completed.findtext("t:test-session", namespaces=NS) == "s1"
    assert completed.findtext("t:outcome", namespaces=NS) == "completed"
    assert completed.findtext("t:results/t:sent", namespaces=NS) == "10"
    assert int(completed.findtext("t:results/t:received", namespaces=NS) or "0") > 0

    reply = str(session.get().xml)
    assert SECRET_B64 not in reply
    data = etree.fromstring(reply.encode())
    test_session = data.find(".//t:session-sender/t:test-session", NS)
    assert test_session is not None and test_session.findtext("t:state", namespaces=NS) == "completed"
    connection = data.find(".//t:client/t:ctrl-connection", NS)
    assert connection is not None
    assert connection.findtext("t:selected-mode", namespaces=NS) == "authenticated"
    assert connection.findtext("t:key-source/t:key-id", namespaces=NS) == "site-a"

    missing = tmp_path / "no-such-dir" / "me.pem"
    with pytest.raises(RPCError) as refused:
        session.edit_config(target="running", config=certificate_config(missing))
    assert "certificate-file" in (refused.value.path or "")
    assert str(missing) in (refused.value.message or "")
    running = etree.fromstring(str(session.get_config("running").xml).encode())
    assert running.find(".//i:local-identity", NS) is None
    assert running.findtext(".//t:server/t:server-tcp-port", namespaces=NS) == str(port)
    state = etree.fromstring(str(session.get().xml).encode())
    assert state.find(".//t:server", NS) is not None  # the runtime kept its server
    assert SECRET_B64 not in runtime.stderr()
