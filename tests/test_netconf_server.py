"""The NETCONF server over real SSH sessions (ncclient) against a fake runtime on a real Unix socket."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError
from ncclient.xml_ import to_ele

from nf_netconf.errors import Reason
from tests.test_netconf_harness import (
    IKE_NS,
    NC_NS,
    NCN_NS,
    NOTIF_NS,
    PASSWORD,
    READER_PASSWORD,
    SECRET_B64,
    SERVER_CONFIG,
    TWAMP_NS,
    WAIT,
    FakeRuntime,
    Rig,
    one_connection_state,
    rig,
)

__all__ = ["rig"]

PSK_B64 = "ZXhhbXBsZS1wc2stbm90LWZvci11c2UtMDAwMQ=="
IKE_CONFIG = f"""
<config xmlns="{NC_NS}">
  <ike xmlns="{IKE_NS}">
    <local-identity>
      <name>host-b</name>
      <id-type>fqdn</id-type>
      <id-value>host-b.example.net</id-value>
      <psk>{PSK_B64}</psk>
    </local-identity>
  </ike>
</config>
"""


def _xml(reply: Any) -> etree._Element:
    return etree.fromstring(reply.xml.encode())


def _config_xml(m: Any, source: str = "running", filter: Any = None) -> str:
    return str(m.get_config(source, filter=filter).xml)


def _count(m: Any) -> str | None:
    found = _xml(m.get_config("running")).find(f".//{{{TWAMP_NS}}}count")
    return None if found is None else found.text


def test_hello_advertises_capabilities_and_modules(rig: Rig) -> None:
    m = rig.connect()
    caps = set(m.server_capabilities)
    for cap in (
        "urn:ietf:params:netconf:base:1.0",
        "urn:ietf:params:netconf:base:1.1",
        "urn:ietf:params:netconf:capability:candidate:1.0",
        "urn:ietf:params:netconf:capability:validate:1.1",
        "urn:ietf:params:netconf:capability:xpath:1.0",
        "urn:ietf:params:netconf:capability:notification:1.0",
        "urn:ietf:params:netconf:capability:rollback-on-error:1.0",
    ):
        assert cap in caps
    modules = {c.split("module=")[1].split("&")[0] for c in caps if "module=" in c}
    assert modules == {"twamp-nf-twamp", "twamp-nf-ike", "twamp-nf-ike-binding", "ietf-netconf-with-defaults"}
    assert m.session_id is not None and int(m.session_id) >= 1


def test_edit_get_config_round_trip_applies_whole_config_to_runtime(rig: Rig) -> None:
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    assert _count(m) == "65536"
    applied = rig.runtime.applied[-1]
    server = applied["twamp-nf-twamp:twamp"]["server"]
    assert server["count"] == 65536
    assert server["key-chain"] == [{"key-id": "site-a", "secret-key": SECRET_B64}]
    # a second edit sends the whole configuration again, not a diff
    m.edit_config(target="running", config=IKE_CONFIG)
    applied = rig.runtime.applied[-1]
    assert set(applied) == {"twamp-nf-twamp:twamp", "twamp-nf-ike:ike"}
    assert applied["twamp-nf-ike:ike"]["local-identity"][0]["psk"] == PSK_B64


def test_edit_operations_merge_replace_create_delete_remove(rig: Rig) -> None:
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    merge = f"""<config xmlns="{NC_NS}"><twamp xmlns="{TWAMP_NS}"><server>
        <count>2048</count></server></twamp></config>"""
    m.edit_config(target="running", config=merge)
    assert _count(m) == "2048"
    assert "site-a" in _config_xml(m)  # merge kept the rest

    create_again = f"""<config xmlns="{NC_NS}" xmlns:nc="{NC_NS}"><twamp xmlns="{TWAMP_NS}"><server>
        <key-chain nc:operation="create"><key-id>site-a</key-id><secret-key>{SECRET_B64}</secret-key>
        </key-chain></server></twamp></config>"""
    with pytest.raises(RPCError) as err:
        m.edit_config(target="running", config=create_again)
    assert err.value.tag == "data-exists"

    delete = f"""<config xmlns="{NC_NS}" xmlns:nc="{NC_NS}"><twamp xmlns="{TWAMP_NS}"><server>
        <count nc:operation="delete"/></server></twamp></config>"""
    m.edit_config(target="running", config=delete)
    assert _count(m) is None
    with pytest.raises(RPCError) as err:
        m.edit_config(target="running", config=delete)
    assert err.value.tag == "data-missing"
    remove = delete.replace('"delete"', '"remove"')
    m.edit_config(target="running", config=remove)  # remove of a missing node is not an error

    replace = f"""<config xmlns="{NC_NS}" xmlns:nc="{NC_NS}"><twamp xmlns="{TWAMP_NS}">
        <server nc:operation="replace"><modes>unauthenticated</modes></server></twamp></config>"""
    m.edit_config(target="running", config=replace)
    assert "site-a" not in _config_xml(m)
    assert _xml(m.get_config("running")).findtext(f".//{{{TWAMP_NS}}}modes") == "unauthenticated"
    assert "key-chain" not in json.dumps(rig.runtime.applied[-1])


def test_default_operation_none_and_test_only(rig: Rig) -> None:
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    applied_before = len(rig.runtime.applied)
    none_edit = f"""<config xmlns="{NC_NS}"><twamp xmlns="{TWAMP_NS}"><server><count>1024</count>
        </server></twamp></config>"""
    m.edit_config(target="running", config=none_edit, default_operation="none")
    assert _count(m) == "65536"
    m.edit_config(target="running", config=none_edit, test_option="test-only")
    assert _count(m) == "65536"
    assert len(rig.runtime.applied) == applied_before
    assert rig.runtime.validated, "test-only asks the runtime to validate"


def test_candidate_commit_and_discard(rig: Rig) -> None:
    m = rig.connect()
    m.edit_config(target="candidate", config=SERVER_CONFIG)
    assert rig.runtime.applied == []
    assert _count(m) is None
    assert "65536" in _config_xml(m, "candidate")
    m.commit()
    assert _count(m) == "65536"
    assert rig.runtime.applied[-1]["twamp-nf-twamp:twamp"]["server"]["count"] == 65536

    m.edit_config(
        target="candidate",
        config=SERVER_CONFIG.replace("65536", "4096"),
    )
    m.discard_changes()
    assert "65536" in _config_xml(m, "candidate")
    assert _count(m) == "65536"
    assert len(rig.runtime.applied) == 1


def test_validate_rpc_runs_yang_and_runtime_checks(rig: Rig) -> None:
    m = rig.connect()
    # a must-statement is checked by validation, not when the candidate is edited
    m.edit_config(
        target="candidate", config=SERVER_CONFIG.replace("<max-count-exponent>16", "<max-count-exponent>15")
    )
    with pytest.raises(RPCError) as err:
        m.validate(source="candidate")
    assert err.value.tag == "invalid-value"
    assert "max-count-exponent" in err.value.message
    with pytest.raises(RPCError):
        m.commit()
    assert rig.runtime.applied == []
    m.discard_changes()
    m.edit_config(target="candidate", config=SERVER_CONFIG)
    m.validate(source="candidate")
    assert rig.runtime.validated


def test_invalid_value_has_error_path_and_leaves_config(rig: Rig) -> None:
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    with pytest.raises(RPCError) as err:
        m.edit_config(target="running", config=SERVER_CONFIG.replace("65536", "65537"))
    assert err.value.tag == "invalid-value"
    assert err.value.path == "/twamp-nf-twamp:twamp/server/count"
    assert "power of two" in err.value.message
    assert _count(m) == "65536"
    assert len(rig.runtime.applied) == 1
    assert rig.app.counters.get(Reason.INVALID_VALUE) == 1


def test_unknown_element_is_refused_with_its_name(rig: Rig) -> None:
    m = rig.connect()
    bad = f"""<config xmlns="{NC_NS}"><twamp xmlns="{TWAMP_NS}"><server><cuont>1024</cuont>
        </server></twamp></config>"""
    with pytest.raises(RPCError) as err:
        m.edit_config(target="running", config=bad)
    assert err.value.tag == "unknown-element"
    assert err.value.info is not None and "cuont" in err.value.info
    assert err.value.path == "/twamp-nf-twamp:twamp/server"
    state_leaf = f"""<config xmlns="{NC_NS}"><twamp xmlns="{TWAMP_NS}"><server><ctrl-connection>
        <client-ip>192.0.2.1</client-ip><client-tcp-port>1</client-tcp-port><server-ip>192.0.2.2</server-ip>
        <server-tcp-port>862</server-tcp-port></ctrl-connection></server></twamp></config>"""
    with pytest.raises(RPCError) as err:
        m.edit_config(target="running", config=state_leaf)
    assert err.value.tag == "invalid-value"
    assert rig.runtime.applied == []


def test_runtime_refusal_leaves_datastore_unchanged(rig: Rig) -> None:
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)

    def refuse(config: dict[str, Any]) -> dict[str, str] | None:
        if config.get("twamp-nf-twamp:twamp", {}).get("server", {}).get("count") == 4096:
            return {
                "tag": "resource-denied",
                "path": "/twamp-nf-twamp:twamp/server/server-tcp-port",
                "message": "cannot bind [::]:862: address in use",
            }
        return None

    rig.runtime.refuse = refuse
    with pytest.raises(RPCError) as err:
        m.edit_config(target="running", config=SERVER_CONFIG.replace("65536", "4096"))
    assert err.value.tag == "resource-denied"
    assert err.value.path == "/twamp-nf-twamp:twamp/server/server-tcp-port"
    assert err.value.message == "cannot bind [::]:862: address in use"
    assert _count(m) == "65536"
    # commit from the candidate is refused the same way and the candidate keeps its edit
    m.edit_config(target="candidate", config=SERVER_CONFIG.replace("65536", "4096"))
    with pytest.raises(RPCError) as err:
        m.commit()
    assert err.value.tag == "resource-denied"
    assert _count(m) == "65536"
    assert "4096" in _config_xml(m, "candidate")
    assert rig.app.counters.get(Reason.RUNTIME_REFUSED) == 2


def test_secrets_are_never_returned(rig: Rig) -> None:
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    m.edit_config(target="running", config=IKE_CONFIG)
    rig.runtime.state = {"twamp-nf-twamp:twamp": {"server": {"count": 65536}}}
    secret_filter = f'<twamp xmlns="{TWAMP_NS}"><server><key-chain><secret-key/></key-chain></server></twamp>'
    content_probe = (
        f'<twamp xmlns="{TWAMP_NS}"><server><key-chain><secret-key>{SECRET_B64}</secret-key>'
        "</key-chain></server></twamp>"
    )
    replies = [
        _config_xml(m),
        _config_xml(m, "candidate"),
        str(m.get().xml),
        _config_xml(m, filter=("subtree", secret_filter)),
        _config_xml(m, filter=("subtree", content_probe)),
        _config_xml(m, filter=("xpath", "//*[local-name()='secret-key' or local-name()='psk']")),
        str(m.get(filter=("xpath", "/twamp-nf-ike:ike/twamp-nf-ike:local-identity")).xml),
    ]
    for reply in replies:
        assert SECRET_B64 not in reply and PSK_B64 not in reply
        assert "secret-key>" not in reply and "psk>" not in reply
    assert "site-a" in replies[0] and "host-b" in replies[0]
    # a bad secret value is refused without quoting it
    bad_secret = SERVER_CONFIG.replace(SECRET_B64, "not*base64*secret*value")
    with pytest.raises(RPCError) as err:
        m.edit_config(target="running", config=bad_secret)
    assert "not*base64" not in str(err.value) and "not*base64" not in (err.value.message or "")


def test_subtree_and_xpath_filters(rig: Rig) -> None:
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    m.edit_config(target="running", config=IKE_CONFIG)
    only_twamp = _xml(m.get_config("running", filter=("subtree", f'<twamp xmlns="{TWAMP_NS}"/>')))
    data = only_twamp.find(f"{{{NC_NS}}}data")
    assert data is not None and [child.tag for child in data] == [f"{{{TWAMP_NS}}}twamp"]
    count_only = _xml(
        m.get_config(
            "running", filter=("subtree", f'<twamp xmlns="{TWAMP_NS}"><server><count/></server></twamp>')
        )
    )
    server = count_only.find(f".//{{{TWAMP_NS}}}server")
    assert server is not None and [etree.QName(c).localname for c in server] == ["count"]
    by_key = _xml(
        m.get_config(
            "running",
            filter=(
                "subtree",
                f'<ike xmlns="{IKE_NS}"><local-identity><name>nobody</name></local-identity></ike>',
            ),
        )
    )
    assert by_key.find(f".//{{{IKE_NS}}}local-identity") is None
    xp = _xml(
        m.get_config(
            "running", filter=("xpath", "/twamp-nf-twamp:twamp/twamp-nf-twamp:server/twamp-nf-twamp:modes")
        )
    )
    server = xp.find(f".//{{{TWAMP_NS}}}server")
    assert server is not None and [etree.QName(c).localname for c in server] == ["modes"]
    keyed = _xml(m.get_config("running", filter=("xpath", "//*[local-name()='id-value']")))
    identity = keyed.find(f".//{{{IKE_NS}}}local-identity")
    assert identity is not None
    assert [etree.QName(c).localname for c in identity] == ["name", "id-value"]  # the key comes along


def test_get_merges_runtime_state(rig: Rig) -> None:
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    rig.runtime.state = one_connection_state()
    reply = _xml(m.get())
    assert "paths" not in rig.runtime.requests[-1]
    m.get(filter=("subtree", f'<twamp xmlns="{TWAMP_NS}"><server/></twamp>'))
    assert rig.runtime.requests[-1]["paths"] == ["twamp-nf-twamp:twamp"]  # the runtime collects only that
    server = reply.find(f".//{{{TWAMP_NS}}}server")
    assert server is not None
    assert server.findtext(f"{{{TWAMP_NS}}}count") == "65536"
    assert server.findtext(f"{{{TWAMP_NS}}}ctrl-connection/{{{TWAMP_NS}}}state") == "active"
    assert len(reply.findall(f".//{{{TWAMP_NS}}}server")) == 1


def test_nacm_reader_cannot_write_or_read_denied_subtree(rig: Rig) -> None:
    admin = rig.connect()
    admin.edit_config(target="running", config=SERVER_CONFIG)
    admin.edit_config(target="running", config=IKE_CONFIG)
    reader = rig.connect("reader", READER_PASSWORD)
    with pytest.raises(RPCError) as err:
        reader.edit_config(target="running", config=SERVER_CONFIG.replace("65536", "2048"))
    assert err.value.tag == "access-denied"
    assert _count(admin) == "65536"
    text = _config_xml(reader)
    assert "65536" in text
    assert "host-b" not in text  # the ike subtree is denied to readers
    assert "host-b" in _config_xml(admin)
    with pytest.raises(RPCError) as err:
        reader.kill_session(admin.session_id)
    assert err.value.tag == "access-denied"


def test_locks_keep_other_sessions_out(rig: Rig) -> None:
    first = rig.connect()
    second = rig.connect()
    first.lock("running")
    with pytest.raises(RPCError) as err:
        second.edit_config(target="running", config=SERVER_CONFIG)
    assert err.value.tag == "in-use"
    with pytest.raises(RPCError) as err:
        second.lock("running")
    assert err.value.tag == "lock-denied"
    first.edit_config(target="running", config=SERVER_CONFIG)
    first.unlock("running")
    second.edit_config(target="running", config=SERVER_CONFIG.replace("65536", "2048"))
    assert _count(first) == "2048"
    # a candidate lock dies with its session, and the uncommitted candidate with it
    first.lock("candidate")
    first.edit_config(target="candidate", config=SERVER_CONFIG)
    first.close_session()
    deadline = time.monotonic() + WAIT
    while rig.app.datastores.locks["candidate"] and time.monotonic() < deadline:
        time.sleep(0.01)
    second.lock("candidate")
    assert "2048" in _config_xml(second, "candidate")


def test_notifications_are_forwarded_with_event_time(rig: Rig) -> None:
    m = rig.connect()
    m.create_subscription()
    deadline = time.monotonic() + WAIT
    while rig.app.hub.subscribers() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rig.runtime.subscribed.wait(WAIT)
    rig.runtime.emit(
        {
            "event": "twamp-nf-ike:ike-sa-down",
            "time": "2026-11-23T19:40:00.123456Z",
            "data": {
                "spi-i": "8f2c4a1be07d3956",
                "spi-r": "51d0e9a3c47b2f18",
                "peer": "host-b",
                "reason": "deleted-by-peer",
            },
        }
    )
    notification = m.take_notification(timeout=WAIT)
    assert notification is not None
    root = etree.fromstring(notification.notification_xml.encode())
    assert root.tag == f"{{{NOTIF_NS}}}notification"
    assert root.findtext(f"{{{NOTIF_NS}}}eventTime") == "2026-11-23T19:40:00.123456Z"
    body = root.find(f"{{{IKE_NS}}}ike-sa-down")
    assert body is not None and body.findtext(f"{{{IKE_NS}}}peer") == "host-b"
    # the session still answers RPCs while subscribed (interleave)
    assert _count(m) is None


def test_session_limit_is_enforced(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_sessions=1)
    try:
        first = rig.connect()
        with pytest.raises(Exception):  # noqa: B017 (ncclient raises transport-specific errors)
            rig.connect()
        assert rig.app.counters.get(Reason.SESSION_LIMIT) >= 1
        first.close_session()
        deadline = time.monotonic() + WAIT
        while rig.app.session_count() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rig.connect().session_id is not None
    finally:
        rig.close()


def test_wrong_password_is_refused_and_counted(rig: Rig) -> None:
    with pytest.raises(Exception):  # noqa: B017 (ncclient's AuthenticationError)
        rig.connect("admin", PASSWORD + "x")
    assert rig.app.counters.get(Reason.AUTH_FAILED) >= 1


def test_public_key_authentication(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tests.test_netconf_harness import users_toml

    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "id_ed25519"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    rig = Rig(tmp_path, users=users_toml(reader_key=public.decode()))
    try:
        m = rig.connect("reader", None, key_filename=str(key_file))
        assert "data" in m.get_config("running").xml
        other = Ed25519PrivateKey.generate()
        (tmp_path / "other").write_bytes(
            other.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            )
        )
        with pytest.raises(Exception):  # noqa: B017 (ncclient's AuthenticationError)
            rig.connect("reader", None, key_filename=str(tmp_path / "other"))
    finally:
        rig.close()


def test_runtime_restart_gets_running_config_again(rig: Rig) -> None:
    m = rig.connect()
    assert rig.runtime.subscribed.wait(WAIT)
    m.edit_config(target="running", config=SERVER_CONFIG)
    rig.runtime.close()
    os.unlink(rig.runtime_path)
    rig.runtime = FakeRuntime(rig.runtime_path)  # a fresh, empty runtime at the same path
    deadline = time.monotonic() + WAIT
    while not rig.runtime.applied and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (
        rig.runtime.applied[0]["twamp-nf-twamp:twamp"]["server"]["key-chain"][0]["secret-key"] == SECRET_B64
    )
    m.edit_config(target="running", config=SERVER_CONFIG.replace("65536", "2048"))
    assert rig.runtime.applied[-1]["twamp-nf-twamp:twamp"]["server"]["count"] == 2048


def test_authenticated_client_without_hello_is_dropped(tmp_path: Path) -> None:
    import paramiko

    rig = Rig(tmp_path, hello_timeout=0.5)
    try:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(
            "127.0.0.1",
            rig.app.port,
            username="admin",
            password=PASSWORD,
            allow_agent=False,
            look_for_keys=False,
            timeout=WAIT,
        )
        transport = client.get_transport()
        assert transport is not None
        channel = transport.open_session()
        channel.settimeout(WAIT)
        channel.invoke_subsystem("netconf")
        received = b""
        while True:
            data = channel.recv(65536)
            if not data:
                break
            received += data
        assert b"urn:ietf:params:netconf:base:1.1" in received  # our hello, then EOF
        deadline = time.monotonic() + WAIT
        while rig.app.session_count() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rig.app.session_count() == 0
        client.close()
    finally:
        rig.close()


def _server_event(notification: Any) -> bool:
    """An RFC 6470 notification of the server itself (session start and end, config change)."""
    root = etree.fromstring(notification.notification_xml.encode())
    return any(etree.QName(child).namespace == NCN_NS for child in root)


def test_notifications_follow_nacm_module_read_rules(tmp_path: Path) -> None:
    from tests.test_netconf_harness import users_toml

    extra = (
        '\n[[nacm.rule]]\ngroups = ["readers"]\nmodule = "twamp-nf-ike"\naccess = ["read"]\naction = "deny"\n'
    )
    rig = Rig(tmp_path, users=users_toml(extra))
    try:
        admin = rig.connect()
        reader = rig.connect("reader", READER_PASSWORD)
        admin.create_subscription()
        reader.create_subscription()
        assert rig.runtime.subscribed.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while rig.app.hub.subscribers() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        rig.runtime.emit(
            {
                "event": "twamp-nf-ike:ike-sa-down",
                "time": "2026-11-23T19:40:00Z",
                "data": {
                    "spi-i": "8f2c4a1be07d3956",
                    "spi-r": "51d0e9a3c47b2f18",
                    "peer": "host-b",
                    "reason": "deleted-by-peer",
                },
            }
        )
        rig.runtime.emit(
            {
                "event": "twamp-nf-twamp:ctrl-connection-failed",
                "time": "2026-11-23T19:40:01Z",
                "data": {"role": "server", "reason": "twamp-nf-twamp:control-client-declined"},
            }
        )

        def runtime_event(m: Any) -> Any:  # the server's own RFC 6470 ones are passed over
            while True:
                notification = m.take_notification(timeout=WAIT)
                if notification is None or not _server_event(notification):
                    return notification

        first_admin = runtime_event(admin)
        second_admin = runtime_event(admin)
        first_reader = runtime_event(reader)
        assert "ike-sa-down" in first_admin.notification_xml
        assert "ctrl-connection-failed" in second_admin.notification_xml
        assert "ctrl-connection-failed" in first_reader.notification_xml  # the IKE one was withheld
        reason = etree.fromstring(first_reader.notification_xml.encode()).find(f".//{{{TWAMP_NS}}}reason")
        assert reason is not None and reason.text is not None
        prefix, _, identity = reason.text.partition(":")
        assert reason.nsmap[prefix] == TWAMP_NS and identity == "control-client-declined"
    finally:
        rig.close()


def test_server_logs_never_carry_secrets(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    m.edit_config(target="running", config=IKE_CONFIG)
    for bad in (
        SERVER_CONFIG.replace("65536", "3"),
        SERVER_CONFIG.replace("<key-id>", "<nonsense/><key-id>"),
        IKE_CONFIG.replace(PSK_B64, PSK_B64[:8] + "*" + PSK_B64[9:]),
        IKE_CONFIG.replace(PSK_B64, "c2hvcnQ="),
    ):
        with pytest.raises(RPCError):
            m.edit_config(target="running", config=bad)
    rig.runtime.refuse = lambda config: {"tag": "operation-failed", "message": "no"}
    with pytest.raises(RPCError):
        m.edit_config(target="running", config=SERVER_CONFIG.replace("65536", "2048"))
    m.get()
    server_side = [r for r in caplog.records if r.name.split(".")[0] in ("nf_netconf", "netconf", "sshutil")]
    assert server_side, "expected the server to log the refusals"
    for record in server_side:
        text = record.getMessage()
        assert SECRET_B64 not in text and PSK_B64 not in text and PSK_B64[:8] not in text


def test_notifications_never_interleave_with_large_replies(rig: Rig) -> None:
    import threading

    m = rig.connect()
    entries = "".join(
        f"<key-chain><key-id>key-{n:04d}</key-id><secret-key>{SECRET_B64}</secret-key></key-chain>"
        for n in range(300)
    )
    m.edit_config(
        target="running",
        config=f'<config xmlns="{NC_NS}"><twamp xmlns="{TWAMP_NS}"><server><modes>authenticated</modes>'
        f"{entries}</server></twamp></config>",
    )
    m.create_subscription()
    assert rig.runtime.subscribed.wait(WAIT)
    deadline = time.monotonic() + WAIT
    while rig.app.hub.subscribers() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    events = 200

    def emit() -> None:
        for n in range(events):
            rig.runtime.emit(
                {
                    "event": "twamp-nf-twamp:ctrl-connection-failed",
                    "time": f"2026-11-23T19:40:{n % 60:02d}Z",
                    "data": {
                        "role": "server",
                        "reason": "twamp-nf-twamp:control-client-declined",
                        "client-tcp-port": n + 1,
                    },
                }
            )

    emitter = threading.Thread(target=emit)
    emitter.start()
    for _ in range(20):
        reply = _xml(m.get_config("running"))  # each reply is over one 16 KiB chunk
        assert len(reply.findall(f".//{{{TWAMP_NS}}}key-chain")) == 300
    emitter.join(WAIT)
    ports = set()
    for _ in range(events):
        notification = m.take_notification(timeout=WAIT)
        assert notification is not None
        root = etree.fromstring(notification.notification_xml.encode())
        ports.add(root.findtext(f".//{{{TWAMP_NS}}}client-tcp-port"))
    assert ports == {str(n + 1) for n in range(events)}


def test_copy_config_inline_to_candidate_then_candidate_to_running(rig: Rig) -> None:
    m = rig.connect()

    def copy_inline(config: str, target: str) -> None:
        body = config.replace(f'<config xmlns="{NC_NS}">', "<config>", 1).replace(
            f'<config xmlns="{NC_NS}"/>', "<config/>"
        )
        m.dispatch(
            to_ele(
                f'<copy-config xmlns="{NC_NS}"><target><{target}/></target>'
                f"<source>{body}</source></copy-config>"
            )
        )

    copy_inline(SERVER_CONFIG, "candidate")
    assert rig.runtime.applied == []
    assert "65536" in _config_xml(m, "candidate")
    m.copy_config(source="candidate", target="running")
    assert _count(m) == "65536"
    assert SECRET_B64 in json.dumps(rig.runtime.applied[-1])
    reader = rig.connect("reader", READER_PASSWORD)
    with pytest.raises(RPCError) as err:
        reader.copy_config(source="candidate", target="running")
    assert err.value.tag == "access-denied"
    copy_inline(f'<config xmlns="{NC_NS}"/>', "running")  # an empty config empties running
    assert _count(m) is None
    assert rig.runtime.applied[-1] == {}
