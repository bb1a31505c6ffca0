"""RFC 6241 section 8.4 confirmed commit over real SSH sessions (ncclient) against the fake runtime: the
timer, the session binding, persist tokens, cancel-commit, and rollbacks the runtime takes (or refuses)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError
from ncclient.xml_ import to_ele

from nf_netconf.errors import Reason
from tests.test_netconf_harness import NC_NS, SERVER_CONFIG, TWAMP_NS, WAIT, Rig, rig, users_toml

__all__ = ["rig"]

CAPABILITY = "urn:ietf:params:netconf:capability:confirmed-commit:1.1"
TOKEN = "orchestrator-token-7f3a9c"
CONFIG_B = SERVER_CONFIG.replace("65536", "4096")
CONFIG_C = SERVER_CONFIG.replace("65536", "1024")


def _count(m: Any, source: str = "running") -> str | None:
    found = etree.fromstring(m.get_config(source).xml.encode()).find(f".//{{{TWAMP_NS}}}count")
    return None if found is None else found.text


def _applied_count(config: dict[str, Any]) -> int | None:
    server = config.get("twamp-nf-twamp:twamp", {}).get("server", {})
    count = server.get("count")
    return None if count is None else int(count)


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _start(rig: Rig) -> tuple[Any, dict[str, Any]]:
    """A session with running at count 65536 (config A) and the candidate at 4096 (config B)."""
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    applied_a = rig.runtime.applied[-1]
    m.edit_config(target="candidate", config=CONFIG_B)
    return m, applied_a


def _raw(m: Any, xml: str) -> Any:
    return m.dispatch(to_ele(xml))


def test_capability_is_advertised(rig: Rig) -> None:
    m = rig.connect()
    assert CAPABILITY in set(m.server_capabilities)


def test_confirming_commit_keeps_the_configuration(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nf_netconf")
    m, _ = _start(rig)
    m.commit(confirmed=True, timeout="1")
    assert _count(m) == "4096"
    assert _applied_count(rig.runtime.applied[-1]) == 4096
    assert rig.app.datastores.confirm_pending
    m.commit()
    assert not rig.app.datastores.confirm_pending
    applied = len(rig.runtime.applied)
    time.sleep(1.3)  # past the confirm timeout: nothing may happen now
    assert len(rig.runtime.applied) == applied
    assert _count(m) == "4096" and _count(m, "candidate") == "4096"
    messages = [r.getMessage() for r in caplog.records]
    assert any("confirmed commit started" in msg for msg in messages)
    assert any("confirmed commit confirmed" in msg for msg in messages)


def test_timeout_rolls_back_datastores_and_runtime(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nf_netconf")
    m, applied_a = _start(rig)
    started = time.monotonic()
    m.commit(confirmed=True, timeout="1")
    assert _count(m) == "4096"
    _wait_until(lambda: not rig.app.datastores.confirm_pending, "the rollback")
    assert time.monotonic() - started >= 0.9
    assert rig.runtime.applied[-1] == applied_a  # the runtime was given the old configuration again
    assert _count(m) == "65536"
    assert _count(m, "candidate") == "65536"
    assert any("confirm timeout expired" in r.getMessage() for r in caplog.records)
    assert any("rolled back" in r.getMessage() for r in caplog.records)
    m.commit()  # nothing is pending any more: a plain commit is just a commit
    assert _count(m) == "65536"


def test_rollback_to_an_empty_running(rig: Rig) -> None:
    m = rig.connect()
    m.edit_config(target="candidate", config=SERVER_CONFIG)
    m.commit(confirmed=True, timeout="1")
    assert _applied_count(rig.runtime.applied[-1]) == 65536
    _wait_until(lambda: not rig.app.datastores.confirm_pending, "the rollback")
    assert rig.runtime.applied[-1] == {}
    assert _count(m) is None and _count(m, "candidate") is None


@pytest.mark.parametrize("end", ["close-session", "kill-session", "dropped"])
def test_session_end_without_persist_rolls_back(rig: Rig, end: str) -> None:
    m, applied_a = _start(rig)
    m.commit(confirmed=True)  # the default timeout (600 s) is far away
    assert _applied_count(rig.runtime.applied[-1]) == 4096
    other = rig.connect()
    if end == "close-session":
        m.close_session()
    elif end == "kill-session":
        other.kill_session(m.session_id)
    else:
        m._session._transport.close()  # the client vanishes without a word
    _wait_until(lambda: not rig.app.datastores.confirm_pending, "the rollback")
    assert rig.runtime.applied[-1] == applied_a
    assert _count(other) == "65536" and _count(other, "candidate") == "65536"


def test_persist_survives_the_session_and_is_confirmed_from_another(rig: Rig) -> None:
    m, _ = _start(rig)
    m.commit(confirmed=True, persist=TOKEN)
    m.close_session()
    _wait_until(lambda: rig.app.session_count() == 0, "the session to end")
    assert rig.app.datastores.confirm_pending
    applied = len(rig.runtime.applied)
    other = rig.connect()
    assert _count(other) == "4096"
    with pytest.raises(RPCError) as err:
        other.commit()  # a persistent confirmed commit needs its token
    assert err.value.tag == "missing-element"
    with pytest.raises(RPCError) as err:
        other.commit(persist_id="not-the-token")
    assert err.value.tag == "invalid-value"
    assert TOKEN not in err.value.message
    with pytest.raises(RPCError) as err:
        other.cancel_commit(persist_id="not-the-token")
    assert err.value.tag == "invalid-value"
    assert rig.app.datastores.confirm_pending
    assert len(rig.runtime.applied) == applied  # the refusals changed nothing
    other.commit(persist_id=TOKEN)
    assert not rig.app.datastores.confirm_pending
    assert _count(other) == "4096"
    assert rig.app.counters.get(Reason.CONFIRMED_COMMIT) == 3


def test_persist_id_without_a_pending_confirmed_commit_is_invalid(rig: Rig) -> None:
    m, _ = _start(rig)
    with pytest.raises(RPCError) as err:
        m.commit(persist_id=TOKEN)
    assert err.value.tag == "invalid-value"
    assert _count(m) == "65536"
    m.commit(confirmed=True)  # not persistent: a persist-id cannot match it
    with pytest.raises(RPCError) as err:
        m.commit(persist_id=TOKEN)
    assert err.value.tag == "invalid-value"
    m.commit()


def test_cancel_commit(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nf_netconf")
    m, applied_a = _start(rig)
    with pytest.raises(RPCError) as err:
        m.cancel_commit()
    assert err.value.tag == "operation-failed"  # nothing pending
    m.commit(confirmed=True)
    other = rig.connect()
    with pytest.raises(RPCError) as err:
        other.cancel_commit()  # not the session that issued it
    assert err.value.tag == "in-use"
    with pytest.raises(RPCError) as err:
        other.commit()
    assert err.value.tag == "in-use"
    m.cancel_commit()
    assert not rig.app.datastores.confirm_pending
    assert rig.runtime.applied[-1] == applied_a
    assert _count(m) == "65536" and _count(m, "candidate") == "65536"
    assert any("cancelled by session" in r.getMessage() for r in caplog.records)
    with pytest.raises(RPCError) as err:
        m.cancel_commit()
    assert err.value.tag == "operation-failed"

    # a persistent one is cancelled from any session with its token
    m.edit_config(target="candidate", config=CONFIG_B)
    m.commit(confirmed=True, persist=TOKEN)
    with pytest.raises(RPCError) as err:
        m.cancel_commit()  # even its own session must give the token
    assert err.value.tag == "missing-element"
    other.cancel_commit(persist_id=TOKEN)
    assert rig.runtime.applied[-1] == applied_a
    assert _count(other) == "65536"
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_follow_up_confirmed_commit_keeps_the_first_rollback_point(rig: Rig) -> None:
    m, applied_a = _start(rig)
    m.commit(confirmed=True)  # 600 s
    m.edit_config(target="candidate", config=CONFIG_C)
    m.commit(confirmed=True, timeout="1")  # the follow-up resets the timer to 1 s
    assert _applied_count(rig.runtime.applied[-1]) == 1024
    _wait_until(lambda: not rig.app.datastores.confirm_pending, "the rollback")
    assert rig.runtime.applied[-1] == applied_a  # back before the first one, not to 4096
    assert _count(m) == "65536"


def test_persistent_follow_up_from_another_session(rig: Rig) -> None:
    m, applied_a = _start(rig)
    m.commit(confirmed=True, persist=TOKEN)
    m.close_session()
    other = rig.connect()
    other.edit_config(target="candidate", config=CONFIG_C)
    other.commit(confirmed=True, timeout="1", persist_id=TOKEN)
    assert _count(other) == "1024"
    _wait_until(lambda: not rig.app.datastores.confirm_pending, "the rollback")
    assert rig.runtime.applied[-1] == applied_a
    assert _count(other) == "65536"


def test_running_is_reserved_while_a_confirmed_commit_is_pending(rig: Rig) -> None:
    m, applied_a = _start(rig)
    m.commit(confirmed=True)
    other = rig.connect()
    for session in (m, other):
        with pytest.raises(RPCError) as err:
            session.edit_config(target="running", config=CONFIG_C)
        assert err.value.tag == "in-use"
        with pytest.raises(RPCError) as err:
            session.copy_config(source="candidate", target="running")
        assert err.value.tag == "in-use"
    session_info = etree.fromstring(err.value.info.encode()).findtext(f"{{{NC_NS}}}session-id")
    assert session_info == str(m.session_id)
    # the candidate stays open: that is how a follow-up confirmed commit gets its changes
    m.edit_config(target="candidate", config=CONFIG_C)
    m.discard_changes()
    assert _count(m, "candidate") == "4096"
    m.edit_config(target="running", config=CONFIG_C, test_option="test-only")
    m.cancel_commit()
    assert rig.runtime.applied[-1] == applied_a
    m.edit_config(target="running", config=CONFIG_C)  # free again
    assert _count(m) == "1024"


def test_runtime_refusing_the_rollback_is_logged_and_running_stays(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nf_netconf")
    m, _ = _start(rig)
    m.commit(confirmed=True, timeout="1")

    def refuse_a(config: dict[str, Any]) -> dict[str, str] | None:
        if _applied_count(config) == 65536:
            return {"tag": "operation-failed", "message": "address in use"}
        return None

    rig.runtime.refuse = refuse_a
    _wait_until(lambda: not rig.app.datastores.confirm_pending, "the rollback attempt")
    failed = [r for r in caplog.records if "ROLLBACK FAILED" in r.getMessage()]
    assert failed and failed[0].levelno == logging.ERROR
    assert "address in use" in failed[0].getMessage()
    assert _applied_count(rig.runtime.applied[-1]) == 4096  # what the runtime still runs ...
    assert _count(m) == "4096"  # ... is what running says


def test_cancel_commit_refused_by_the_runtime_stays_pending(rig: Rig) -> None:
    m, applied_a = _start(rig)
    m.commit(confirmed=True)
    rig.runtime.refuse = lambda config: (
        {"tag": "operation-failed", "message": "busy"} if _applied_count(config) == 65536 else None
    )
    with pytest.raises(RPCError) as err:
        m.cancel_commit()
    assert err.value.tag == "operation-failed" and "busy" in err.value.message
    assert rig.app.datastores.confirm_pending
    assert _count(m) == "4096"
    rig.runtime.refuse = None
    m.cancel_commit()
    assert rig.runtime.applied[-1] == applied_a


def test_bad_parameters(rig: Rig) -> None:
    m, _ = _start(rig)
    for value in ("0", "-1", "4294967296", "ten"):
        with pytest.raises(RPCError) as err:
            m.commit(confirmed=True, timeout=value)
        assert err.value.tag == "invalid-value", value
    with pytest.raises(RPCError) as err:
        _raw(m, f'<commit xmlns="{NC_NS}"><persist>{TOKEN}</persist></commit>')
    assert err.value.tag == "missing-element"
    with pytest.raises(RPCError) as err:
        _raw(m, f'<commit xmlns="{NC_NS}"><confirm-timeout>5</confirm-timeout></commit>')
    assert err.value.tag == "missing-element"
    with pytest.raises(RPCError) as err:
        _raw(m, f'<cancel-commit xmlns="{NC_NS}"><confirmed/></cancel-commit>')
    assert err.value.tag == "unknown-element"
    assert not rig.app.datastores.confirm_pending
    assert _count(m) == "65536"


def test_cancel_commit_is_subject_to_nacm_exec(tmp_path: Path) -> None:
    # rules are ordered and the first match decides: this deny comes before the admin's permit-all
    deny = '[[nacm.rule]]\ngroups = ["admin"]\nrpc = "cancel-commit"\naccess = ["exec"]\naction = "deny"\n\n'
    users = users_toml().replace("[[nacm.rule]]", deny + "[[nacm.rule]]", 1)
    r = Rig(tmp_path, users=users)
    try:
        m, _ = _start(r)
        m.commit(confirmed=True)
        with pytest.raises(RPCError) as err:
            m.cancel_commit()
        assert err.value.tag == "access-denied"
        assert r.app.datastores.confirm_pending
        m.commit()
    finally:
        r.close()


def test_server_stop_rolls_back_and_cancels_the_timer(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    try:
        m, applied_a = _start(r)
        m.commit(confirmed=True, persist=TOKEN)
        assert any(t.name == "confirmed-commit-timer" for t in threading.enumerate())
    finally:
        r.close()
    assert r.runtime.applied[-1] == applied_a
    assert not r.app.datastores.confirm_pending
    _wait_until(
        lambda: not any(t.name == "confirmed-commit-timer" for t in threading.enumerate()), "the timer to end"
    )
