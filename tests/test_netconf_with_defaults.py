"""RFC 6243 with-defaults over real SSH NETCONF sessions (ncclient) against the fake runtime: the four
retrieval modes, the wd:default attribute in replies and in edits, and a tagged reply pushed back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from ncclient.operations.retrieve import _get_valid_with_defaults_modes
from ncclient.operations.rpc import RPCError
from ncclient.xml_ import to_ele

from nf_netconf.with_defaults import TAG_NS, WD_NS
from tests.test_netconf_harness import IKE_NS, NC_NS, READER_PASSWORD, SERVER_CONFIG, TWAMP_NS, Rig, rig
from tests.test_netconf_schemas import _error
from tests.test_netconf_yangcli import yangcli

__all__ = ["rig"]

WD_DEFAULT = f"{{{TAG_NS}}}default"
# The server's `servwait` and the reflector's `refwait` both default to 900; refwait is set to it explicitly.
REFLECTOR = f"""<config xmlns="{NC_NS}"><twamp xmlns="{TWAMP_NS}"><session-reflector>
    <refwait>900</refwait><limits><max-test-sessions>5</max-test-sessions></limits>
    </session-reflector></twamp></config>"""


def _twamp(m: Any, mode: str | None, source: str = "running") -> etree._Element:
    reply = etree.fromstring(m.get_config(source, with_defaults=mode).xml.encode())
    found = reply.find(f".//{{{TWAMP_NS}}}twamp")
    assert found is not None
    return found


def _leaf(twamp: etree._Element, path: str) -> etree._Element | None:
    return twamp.find("/".join(f"{{{TWAMP_NS}}}{step}" for step in path.split("/")))


def _configured(m: Any) -> None:
    m.edit_config(target="running", config=SERVER_CONFIG)
    m.edit_config(target="running", config=REFLECTOR)


def test_the_capability_names_every_mode_and_ncclient_reads_it(rig: Rig) -> None:
    m = rig.connect()
    assert ":with-defaults" in m.server_capabilities
    assert set(_get_valid_with_defaults_modes(m.server_capabilities)) == {
        "explicit",
        "report-all",
        "report-all-tagged",
        "trim",
    }


def test_explicit_is_what_was_set(rig: Rig) -> None:
    m = rig.connect()
    _configured(m)
    for mode in (None, "explicit"):
        twamp = _twamp(m, mode)
        assert _leaf(twamp, "session-reflector/refwait") is not None  # set, though equal to its default
        assert _leaf(twamp, "server/servwait") is None  # never set
        assert _leaf(twamp, "server/admin-state") is None


def test_report_all_adds_the_defaults_untagged(rig: Rig) -> None:
    m = rig.connect()
    _configured(m)
    twamp = _twamp(m, "report-all")
    servwait = _leaf(twamp, "server/servwait")
    assert servwait is not None and servwait.text == "900"
    assert _leaf(twamp, "server/admin-state") is not None
    assert _leaf(twamp, "server/count") is not None and _leaf(twamp, "server/count").text == "65536"  # type: ignore[union-attr]
    assert not any(WD_DEFAULT in el.attrib for el in twamp.iter())


def test_report_all_tagged_marks_default_values_in_the_rfc_namespace(rig: Rig) -> None:
    m = rig.connect()
    _configured(m)
    twamp = _twamp(m, "report-all-tagged")
    tagged = {etree.QName(el).localname for el in twamp.iter() if el.get(WD_DEFAULT) == "true"}
    assert {"servwait", "admin-state", "refwait"} <= tagged  # refwait: set explicitly to its default
    assert "count" not in tagged and "max-test-sessions" not in tagged
    assert not any(any(WD_NS in key for key in el.attrib) for el in twamp.iter())  # libyang's mark is moved


def test_trim_drops_values_equal_to_their_default(rig: Rig) -> None:
    m = rig.connect()
    _configured(m)
    twamp = _twamp(m, "trim")
    assert _leaf(twamp, "session-reflector/refwait") is None
    assert _leaf(twamp, "server/servwait") is None
    assert _leaf(twamp, "session-reflector/limits/max-test-sessions") is not None


def test_get_reports_defaults_and_a_filter_selects_one(rig: Rig) -> None:
    m = rig.connect()
    _configured(m)
    selector = f'<twamp xmlns="{TWAMP_NS}"><server><servwait/></server></twamp>'
    plain = etree.fromstring(m.get(filter=("subtree", selector)).xml.encode())
    assert plain.find(f".//{{{TWAMP_NS}}}servwait") is None
    reply = etree.fromstring(m.get(filter=("subtree", selector), with_defaults="report-all").xml.encode())
    assert reply.findtext(f".//{{{TWAMP_NS}}}servwait") == "900"
    assert reply.find(f".//{{{TWAMP_NS}}}count") is None  # the filter still selects


def test_nacm_hides_defaults_of_a_denied_subtree(rig: Rig) -> None:
    admin = rig.connect()
    _configured(admin)
    ike = f"""<config xmlns="{NC_NS}"><ike xmlns="{IKE_NS}">
        <listen-address>127.0.0.1</listen-address></ike></config>"""
    admin.edit_config(target="running", config=ike)

    def ike_and_servwait(m: Any) -> tuple[bool, bool]:
        reply = etree.fromstring(m.get_config("running", with_defaults="report-all").xml.encode())
        return reply.find(f".//{{{IKE_NS}}}ike") is not None, reply.find(
            f".//{{{TWAMP_NS}}}servwait"
        ) is not None

    assert ike_and_servwait(admin) == (True, True)
    assert ike_and_servwait(rig.connect("reader", READER_PASSWORD)) == (False, True)  # ike: denied to readers


def test_an_unknown_mode_is_refused(rig: Rig) -> None:
    m = rig.connect()
    error = _error(
        lambda: m.dispatch(
            to_ele(
                f'<get-config xmlns="{NC_NS}"><source><running/></source>'
                f'<with-defaults xmlns="{WD_NS}">everything</with-defaults></get-config>'
            )
        )
    )
    assert error.tag == "invalid-value" and "with-defaults" in error.message
    error = _error(
        lambda: m.dispatch(to_ele(f'<get xmlns="{NC_NS}"><with-defaults>trim</with-defaults></get>'))
    )
    assert error.tag == "unknown-element"  # the parameter lives in the with-defaults namespace


def _edit(m: Any, refwait: str, operation: str = "merge", attribute: str = 'wd:default="true"') -> None:
    m.edit_config(
        target="running",
        config=f"""<config xmlns="{NC_NS}" xmlns:wd="{TAG_NS}"><twamp xmlns="{TWAMP_NS}"><session-reflector>
        <refwait {attribute} xmlns:nc="{NC_NS}" nc:operation="{operation}">{refwait}</refwait>
        </session-reflector></twamp></config>""",
    )


def test_wd_default_in_an_edit_sets_a_leaf_back_to_its_default(rig: Rig) -> None:
    m = rig.connect()
    _configured(m)
    _edit(m, "900")
    assert _leaf(_twamp(m, None), "session-reflector/refwait") is None  # no longer explicitly set
    assert "refwait" not in rig.runtime.applied[-1]["twamp-nf-twamp:twamp"]["session-reflector"]
    _edit(m, "60", attribute='wd:default="false"')
    assert _leaf(_twamp(m, None), "session-reflector/refwait").text == "60"  # type: ignore[union-attr]
    with pytest.raises(RPCError) as err:
        _edit(m, "900", operation="create")
    assert err.value.tag == "data-exists"
    for value, why in (("61", "must carry the default value 900"), ("nine", "must carry the default value")):
        with pytest.raises(RPCError) as err:
            _edit(m, value)
        assert err.value.tag == "invalid-value" and why in str(err.value)
    assert _leaf(_twamp(m, None), "session-reflector/refwait").text == "60"  # type: ignore[union-attr]
    _edit(m, "900", operation="delete")
    with pytest.raises(RPCError) as err:
        _edit(m, "900", operation="delete")
    assert err.value.tag == "data-missing"
    no_default = f"""<config xmlns="{NC_NS}" xmlns:wd="{TAG_NS}"><twamp xmlns="{TWAMP_NS}"><session-reflector>
        <limits><max-packet-rate wd:default="true">5</max-packet-rate></limits>
        </session-reflector></twamp></config>"""
    with pytest.raises(RPCError) as err:
        m.edit_config(target="running", config=no_default)
    assert err.value.tag == "invalid-value" and "has no YANG default" in str(err.value)


def test_a_tagged_reply_copied_back_keeps_defaults_implicit(rig: Rig) -> None:
    """An orchestrator's read-modify-write with report-all-tagged: the tagged defaults do not become set."""
    m = rig.connect()
    _configured(m)
    reply = etree.fromstring(m.get_config("running", with_defaults="report-all-tagged").xml.encode())
    data = reply.find(f"{{{NC_NS}}}data")
    assert data is not None
    body = "".join(etree.tostring(child, encoding="unicode") for child in data)
    m.dispatch(
        to_ele(
            f'<copy-config xmlns="{NC_NS}"><target><candidate/></target>'
            f"<source><config>{body}</config></source></copy-config>"
        )
    )
    candidate = _twamp(m, None, "candidate")
    assert _leaf(candidate, "server/servwait") is None and _leaf(candidate, "server/admin-state") is None
    assert _leaf(candidate, "session-reflector/refwait") is None  # it was tagged: equal to its default
    assert _leaf(candidate, "server/count").text == "65536"  # type: ignore[union-attr]
    secret = _leaf(candidate, "server/key-chain/secret-key")
    assert secret is None  # write-only secrets are never read back, so a read-modify-write cannot carry them


def test_yangcli_asks_for_report_all(rig: Rig, tmp_path: Path) -> None:
    """A second client (yangcli) sends the with-defaults parameter its own way and gets the defaults."""
    m = rig.connect()
    _configured(m)
    out = yangcli(rig, tmp_path, "sget-config /twamp/server source=running with-defaults=report-all\n")
    assert "<servwait>900</servwait>" in out, out
    assert "<count>65536</count>" in out
    out = yangcli(rig, tmp_path, "sget-config /twamp/server source=running with-defaults=explicit\n")
    assert "<count>65536</count>" in out and "servwait" not in out, out
