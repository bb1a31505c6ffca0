"""RFC 6470 base notifications on a real SSH NETCONF session: session start and end, config changes of running
(who, and which nodes), confirmed-commit events, NACM and replay; one of each kind checked by yanglint."""

from __future__ import annotations

import base64
import datetime
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError
from ncclient.xml_ import to_ele

from tests.test_netconf_harness import (
    IKE_NS,
    NC_NOTIF_NS,
    NC_NS,
    NCN_NS,
    NOTIF_NS,
    READER_PASSWORD,
    SECRET_B64,
    SERVER_CONFIG,
    TWAMP_NS,
    WAIT,
    Rig,
    rig,
    users_toml,
)
from tests.test_netconf_ordering import PSK_B64, ordering_edit, peer_config, proposal

__all__ = ["rig"]

QUIET = 0.5
ROOT = Path(__file__).resolve().parents[1]
MODULES = {TWAMP_NS: "twamp-nf-twamp", IKE_NS: "twamp-nf-ike"}
SECOND_KEY = (
    f'<config xmlns="{NC_NS}"><twamp xmlns="{TWAMP_NS}"><server><key-chain><key-id>site-b</key-id>'
    f"<secret-key>{SECRET_B64}</secret-key></key-chain></server></twamp></config>"
)
DELETE_SECOND_KEY = (
    f'<config xmlns="{NC_NS}"><twamp xmlns="{TWAMP_NS}"><server>'
    f'<key-chain xmlns:nc="{NC_NS}" nc:operation="delete"><key-id>site-b</key-id></key-chain>'
    "</server></twamp></config>"
)
COUNT_PATH = "/twamp-nf-twamp:twamp/server/count"
SITE_B = "/twamp-nf-twamp:twamp/server/key-chain[key-id='site-b']"


def _count_config(count: int) -> str:
    return SERVER_CONFIG.replace("65536", str(count))


def _subscribe(rig: Rig, m: Any, **kwargs: Any) -> None:
    before = rig.app.hub.subscribers()
    m.create_subscription(**kwargs)
    deadline = time.monotonic() + WAIT
    while rig.app.hub.subscribers() <= before and time.monotonic() < deadline:
        time.sleep(0.01)


def _bodies(m: Any, timeout: float) -> Iterator[etree._Element]:
    while True:
        notification = m.take_notification(timeout=timeout)
        if notification is None:
            return
        root = etree.fromstring(notification.notification_xml.encode())
        assert root.tag == f"{{{NOTIF_NS}}}notification"
        assert root.findtext(f"{{{NOTIF_NS}}}eventTime")
        yield next(child for child in root if child.tag != f"{{{NOTIF_NS}}}eventTime")


def _base(m: Any, name: str) -> etree._Element:
    """The next RFC 6470 notification, which must be `name` (others, the runtime's, are passed over)."""
    for body in _bodies(m, WAIT):
        if etree.QName(body).namespace == NCN_NS:
            assert etree.QName(body).localname == name, etree.tostring(body)
            assert SECRET_B64 not in etree.tostring(body).decode()
            return body
    raise AssertionError(f"no {name} arrived")


def _no_base(m: Any) -> None:
    for body in _bodies(m, QUIET):
        assert etree.QName(body).namespace != NCN_NS, etree.tostring(body)


def _text(body: etree._Element, path: str) -> str | None:
    found: str | None = body.findtext(path.replace("ncn:", f"{{{NCN_NS}}}"))
    return found


def _session(body: etree._Element, where: str = "ncn:") -> tuple[str | None, str | None, str | None]:
    return (
        _text(body, f"{where}username"),
        _text(body, f"{where}session-id"),
        _text(body, f"{where}source-host"),
    )


def _json_path(target: etree._Element) -> str:
    """The XML form of an instance-identifier (YANG prefixes) in RFC 7951 form (module names, a step
    qualified only where the module changes), to compare with the paths the server was given."""
    previous: str | None = None

    def step(match: re.Match[str]) -> str:
        nonlocal previous
        lead, prefix = match.group(1), match.group(2)
        module = MODULES[target.nsmap[prefix]]
        if lead == "[":
            return lead  # a key of a list is in the list's module
        qualified = lead + (f"{module}:" if module != previous else "")
        previous = module
        return qualified

    return re.sub(r"([/\[])([A-Za-z_][\w.-]*):", step, target.text or "")


def _edits(body: etree._Element) -> list[tuple[str, str | None]]:
    edits = []
    for edit in body.findall(f"{{{NCN_NS}}}edit"):
        target = edit.find(f"{{{NCN_NS}}}target")
        assert target is not None
        edits.append((_json_path(target), edit.findtext(f"{{{NCN_NS}}}operation")))
    return edits


def _by_user(body: etree._Element, m: Any) -> None:
    assert _text(body, "ncn:datastore") == "running"
    assert _session(body, "ncn:changed-by/ncn:") == ("admin", str(m.session_id), "127.0.0.1")
    assert body.find(f"{{{NCN_NS}}}changed-by/{{{NCN_NS}}}server") is None


def test_session_start_and_end_with_the_reason(rig: Rig) -> None:
    watcher = rig.connect()
    _subscribe(rig, watcher)
    other = rig.connect("reader", READER_PASSWORD)
    start = _base(watcher, "netconf-session-start")
    assert _session(start) == ("reader", str(other.session_id), "127.0.0.1")
    other.close_session()
    end = _base(watcher, "netconf-session-end")
    assert _session(end) == ("reader", str(other.session_id), "127.0.0.1")
    assert _text(end, "ncn:termination-reason") == "closed"
    assert _text(end, "ncn:killed-by") is None

    victim = rig.connect()
    assert _session(_base(watcher, "netconf-session-start"))[1] == str(victim.session_id)
    watcher.kill_session(victim.session_id)
    end = _base(watcher, "netconf-session-end")
    assert _session(end) == ("admin", str(victim.session_id), "127.0.0.1")
    assert (_text(end, "ncn:termination-reason"), _text(end, "ncn:killed-by")) == (
        "killed",
        str(watcher.session_id),
    )

    dropped = rig.connect()
    assert _session(_base(watcher, "netconf-session-start"))[1] == str(dropped.session_id)
    dropped._session.close()  # the transport goes away without close-session
    end = _base(watcher, "netconf-session-end")
    assert (_session(end)[1], _text(end, "ncn:termination-reason")) == (str(dropped.session_id), "dropped")


def test_config_change_after_edit_config_names_the_nodes_and_the_session(rig: Rig) -> None:
    watcher = rig.connect()
    _subscribe(rig, watcher)
    m = rig.connect()
    _base(watcher, "netconf-session-start")
    m.edit_config(target="running", config=SERVER_CONFIG)
    change = _base(watcher, "netconf-config-change")
    _by_user(change, m)
    assert _edits(change) == [("/twamp-nf-twamp:twamp", "create")]  # a new subtree is one edit

    m.edit_config(target="running", config=_count_config(4096))
    assert _edits(_base(watcher, "netconf-config-change")) == [(COUNT_PATH, "replace")]
    m.edit_config(target="running", config=SECOND_KEY)
    assert _edits(_base(watcher, "netconf-config-change")) == [(SITE_B, "create")]
    m.edit_config(target="running", config=DELETE_SECOND_KEY)
    change = _base(watcher, "netconf-config-change")
    _by_user(change, m)
    assert _edits(change) == [(SITE_B, "delete")]


def test_a_changed_secret_is_named_by_its_path_only(rig: Rig) -> None:
    watcher = rig.connect()
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    _subscribe(rig, watcher)
    other_secret = base64.b64encode(b"another-28-octet-test-secret").decode()
    m.edit_config(target="running", config=SERVER_CONFIG.replace(SECRET_B64, other_secret))
    change = _base(watcher, "netconf-config-change")
    assert other_secret not in etree.tostring(change).decode()
    assert _edits(change) == [
        ("/twamp-nf-twamp:twamp/server/key-chain[key-id='site-a']/secret-key", "replace")
    ]


def test_a_moved_entry_of_an_ordered_by_user_list_is_replaced(rig: Rig) -> None:
    watcher = rig.connect()
    _subscribe(rig, watcher)
    m = rig.connect()
    _base(watcher, "netconf-session-start")
    m.edit_config(target="running", config=peer_config("a", "b", "c"))
    change = _base(watcher, "netconf-config-change")
    assert _edits(change) == [("/twamp-nf-ike:ike", "create")]
    assert PSK_B64 not in etree.tostring(change).decode()
    ordering_edit(m, proposal("c", 'yang:insert="first"'))
    assert _edits(_base(watcher, "netconf-config-change")) == [
        ("/twamp-nf-ike:ike/peer[name='gw']/proposal[name='c']", "replace")
    ]


def test_commit_and_copy_config_report_the_difference_candidate_edits_nothing(rig: Rig) -> None:
    watcher = rig.connect()
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    _subscribe(rig, watcher)
    m.edit_config(target="candidate", config=_count_config(2048))
    m.edit_config(target="candidate", config=SECOND_KEY)
    _no_base(watcher)  # RFC 6470's datastore is running (or startup): candidate edits are not reported
    m.commit()
    change = _base(watcher, "netconf-config-change")
    _by_user(change, m)
    assert sorted(_edits(change)) == sorted([(COUNT_PATH, "replace"), (SITE_B, "create")])

    m.copy_config(source="running", target="candidate")
    _no_base(watcher)
    body = SERVER_CONFIG.replace(f'<config xmlns="{NC_NS}">', "<config>", 1)
    copy = f'<copy-config xmlns="{NC_NS}"><target><running/></target><source>{body}</source></copy-config>'
    m.dispatch(to_ele(copy))
    change = _base(watcher, "netconf-config-change")
    _by_user(change, m)
    assert sorted(_edits(change)) == sorted([(COUNT_PATH, "replace"), (SITE_B, "delete")])


def test_test_only_refused_and_empty_edits_emit_nothing(rig: Rig) -> None:
    watcher = rig.connect()
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    _subscribe(rig, watcher)
    m.edit_config(target="running", config=_count_config(1024), test_option="test-only")
    m.edit_config(target="running", config=SERVER_CONFIG)  # changes nothing
    rig.runtime.refuse = lambda config: {"tag": "operation-failed", "message": "no"}
    with pytest.raises(RPCError):
        m.edit_config(target="running", config=_count_config(1024))
    with pytest.raises(RPCError):
        m.copy_config(source="candidate", target="running")
    reader = rig.connect("reader", READER_PASSWORD)  # write is denied to readers by NACM
    _base(watcher, "netconf-session-start")
    with pytest.raises(RPCError):
        reader.edit_config(target="running", config=_count_config(1024))
    rig.runtime.refuse = None
    _no_base(watcher)
    m.edit_config(target="running", config=_count_config(8192))  # the next one is the next real change
    assert _edits(_base(watcher, "netconf-config-change")) == [(COUNT_PATH, "replace")]


def test_confirmed_commit_start_extend_complete(rig: Rig) -> None:
    watcher = rig.connect()
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    _subscribe(rig, watcher)
    m.edit_config(target="candidate", config=_count_config(4096))
    m.commit(confirmed=True, timeout="60")
    assert _edits(_base(watcher, "netconf-config-change")) == [(COUNT_PATH, "replace")]
    start = _base(watcher, "netconf-confirmed-commit")
    assert _session(start) == ("admin", str(m.session_id), "127.0.0.1")
    assert (_text(start, "ncn:confirm-event"), _text(start, "ncn:timeout")) == ("start", "60")
    m.commit(confirmed=True, timeout="120")  # nothing new in the candidate: no config change
    extend = _base(watcher, "netconf-confirmed-commit")
    assert (_text(extend, "ncn:confirm-event"), _text(extend, "ncn:timeout")) == ("extend", "120")
    m.commit()
    complete = _base(watcher, "netconf-confirmed-commit")
    assert _session(complete)[1] == str(m.session_id)
    assert (_text(complete, "ncn:confirm-event"), _text(complete, "ncn:timeout")) == ("complete", None)
    _no_base(watcher)


def test_confirmed_commit_timeout_is_a_change_by_the_server(rig: Rig) -> None:
    watcher = rig.connect()
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    _subscribe(rig, watcher)
    m.edit_config(target="candidate", config=SECOND_KEY)
    m.commit(confirmed=True, timeout="1")
    assert _edits(_base(watcher, "netconf-config-change")) == [(SITE_B, "create")]
    assert _text(_base(watcher, "netconf-confirmed-commit"), "ncn:confirm-event") == "start"
    rollback = _base(watcher, "netconf-config-change")  # the timer's rollback
    assert rollback.find(f"{{{NCN_NS}}}changed-by/{{{NCN_NS}}}server") is not None
    assert _session(rollback, "ncn:changed-by/ncn:") == (None, None, None)
    assert _edits(rollback) == [(SITE_B, "delete")]
    timeout = _base(watcher, "netconf-confirmed-commit")
    assert _text(timeout, "ncn:confirm-event") == "timeout"
    assert _session(timeout) == (None, None, None)  # RFC 6470: no session for a timeout


def test_cancel_commit_and_session_end_cancel(rig: Rig) -> None:
    watcher = rig.connect()
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    _subscribe(rig, watcher)
    m.edit_config(target="candidate", config=_count_config(2048))
    m.commit(confirmed=True)
    _base(watcher, "netconf-config-change")
    _base(watcher, "netconf-confirmed-commit")
    m.cancel_commit()
    rollback = _base(watcher, "netconf-config-change")
    _by_user(rollback, m)  # asked for over the wire: the session's change
    assert _edits(rollback) == [(COUNT_PATH, "replace")]
    cancel = _base(watcher, "netconf-confirmed-commit")
    assert (_text(cancel, "ncn:confirm-event"), _session(cancel)[1]) == ("cancel", str(m.session_id))

    m.edit_config(target="candidate", config=_count_config(2048))
    m.commit(confirmed=True)
    _base(watcher, "netconf-config-change")
    _base(watcher, "netconf-confirmed-commit")
    m.close_session()  # a confirmed commit bound to the session: rolled back by the server
    assert _text(_base(watcher, "netconf-session-end"), "ncn:termination-reason") == "closed"
    rollback = _base(watcher, "netconf-config-change")
    assert rollback.find(f"{{{NCN_NS}}}changed-by/{{{NCN_NS}}}server") is not None
    cancel = _base(watcher, "netconf-confirmed-commit")
    assert (_text(cancel, "ncn:confirm-event"), _session(cancel)[1]) == ("cancel", str(m.session_id))


def test_nacm_read_of_the_module_decides(tmp_path: Path) -> None:
    extra = (
        '\n[[nacm.rule]]\ngroups = ["readers"]\nmodule = "ietf-netconf-notifications"\naccess = ["read"]\n'
        'action = "deny"\n'
    )
    rig = Rig(tmp_path, users=users_toml(extra))
    try:
        admin = rig.connect()
        reader = rig.connect("reader", READER_PASSWORD)
        _subscribe(rig, reader)  # first: its session-start is then published before admin subscribes
        _subscribe(rig, admin)
        admin.edit_config(target="running", config=SERVER_CONFIG)
        _base(admin, "netconf-config-change")
        assert rig.runtime.subscribed.wait(WAIT)
        rig.runtime.emit(
            {
                "event": "twamp-nf-twamp:ctrl-connection-failed",
                "time": "2026-11-23T19:40:01Z",
                "data": {"role": "server", "reason": "twamp-nf-twamp:control-client-declined"},
            }
        )
        first = next(_bodies(reader, WAIT))  # the runtime's event; the config change was withheld
        assert etree.QName(first).namespace == TWAMP_NS
        _no_base(reader)
    finally:
        rig.close()


def test_replay_brings_them_back(rig: Rig) -> None:
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    m.close_session()
    deadline = time.monotonic() + WAIT
    while rig.app.hub.published < 3 and time.monotonic() < deadline:  # start, change, end
        time.sleep(0.01)
    late = rig.connect()
    late.create_subscription(start_time=start.isoformat().replace("+00:00", "Z"))
    names = []
    for body in _bodies(late, WAIT):
        names.append(etree.QName(body).localname)
        if etree.QName(body).namespace == NC_NOTIF_NS:
            break
    assert names == [
        "netconf-session-start",
        "netconf-config-change",
        "netconf-session-end",
        "netconf-session-start",  # late's own: published before the subscription
        "replayComplete",
    ]


def test_yanglint_accepts_each_kind(rig: Rig, tmp_path: Path) -> None:
    if shutil.which("yanglint") is None:
        pytest.fail("yanglint is missing: tests/setup --test installs libyang2-tools")
    watcher = rig.connect()
    _subscribe(rig, watcher)
    m = rig.connect()
    bodies = [_base(watcher, "netconf-session-start")]
    m.edit_config(target="running", config=_count_config(4096))
    bodies.append(_base(watcher, "netconf-config-change"))
    m.edit_config(target="candidate", config=SERVER_CONFIG)
    m.commit(confirmed=True, timeout="1")
    bodies.append(_base(watcher, "netconf-config-change"))
    bodies.append(_base(watcher, "netconf-confirmed-commit"))  # start, with its timeout
    _base(watcher, "netconf-config-change")  # the rollback: its targets are gone from running
    bodies.append(_base(watcher, "netconf-confirmed-commit"))  # timeout, without a session
    watcher.kill_session(m.session_id)
    bodies.append(_base(watcher, "netconf-session-end"))
    # instance-identifiers require their instance: the data they point into is running as SERVER_CONFIG
    config = etree.fromstring(SERVER_CONFIG.encode())
    running = tmp_path / "running.xml"
    running.write_bytes(b"".join(etree.tostring(child) for child in config))
    ietf = Path(sys.prefix) / "share" / "yang" / "modules" / "ietf"
    for n, body in enumerate(bodies):
        path = tmp_path / f"notification-{n}.xml"
        path.write_bytes(etree.tostring(body))
        result = subprocess.run(
            [
                "yanglint",
                "-p",
                str(ROOT / "yang"),
                "-p",
                str(ietf),
                "-t",
                "notif",
                "-O",
                str(running),
                str(ietf / "ietf-netconf-notifications.yang"),
                str(ROOT / "yang" / "twamp-nf-twamp.yang"),
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert result.returncode == 0, f"{etree.tostring(body).decode()}\n{result.stderr}"
