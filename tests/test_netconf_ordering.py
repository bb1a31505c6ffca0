"""RFC 7950 insert/key on an ordered-by user list (an IKE peer's proposals, most preferred first) over
real SSH NETCONF sessions (ncclient): placing, moving, replacing in place, the order the runtime gets."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError

from tests.test_netconf_harness import IKE_NS, NC_NS, Rig, rig

__all__ = ["rig"]

YANG_NS = "urn:ietf:params:xml:ns:yang:1"
PSK_B64 = "ZXhhbXBsZS1wc2stbm90LWZvci11c2UtMDAwMQ=="


def proposal(name: str, attributes: str = "", dh: str = "ecp-256") -> str:
    return f"""<proposal {attributes}><name>{name}</name><encryption>aes-gcm-16-256</encryption>
        <prf>hmac-sha2-384</prf><dh-group>{dh}</dh-group></proposal>"""


def ordering_edit(m: Any, proposals: str, peer: str = "gw") -> None:
    m.edit_config(
        target="running",
        config=f"""<config xmlns="{NC_NS}" xmlns:nc="{NC_NS}" xmlns:yang="{YANG_NS}" xmlns:ike="{IKE_NS}">
        <ike xmlns="{IKE_NS}"><peer><name>{peer}</name>{proposals}</peer></ike></config>""",
    )


def _order(rig: Rig, m: Any) -> list[str]:
    """The proposal names as get-config shows them; the runtime was given the same order."""
    reply = etree.fromstring(m.get_config("running").xml.encode())
    names = [
        el.text or "" for el in reply.iter(f"{{{IKE_NS}}}proposal") for el in el.iter(f"{{{IKE_NS}}}name")
    ]
    applied = rig.runtime.applied[-1]["twamp-nf-ike:ike"]["peer"][0]["proposal"]
    assert [p["name"] for p in applied] == names
    return names


def peer_config(*names: str) -> str:
    """An IKE configuration with a PSK identity and peer "gw" offering the named proposals in order."""
    return f"""<config xmlns="{NC_NS}"><ike xmlns="{IKE_NS}">
        <local-identity><name>me</name><id-type>fqdn</id-type><id-value>me.example</id-value>
        <psk>{PSK_B64}</psk></local-identity>
        <peer><name>gw</name><local-identity>me</local-identity><address>192.0.2.1</address>
        <remote-identity><id-type>fqdn</id-type><id-value>gw.example</id-value></remote-identity>
        {"".join(proposal(name) for name in names)}</peer></ike></config>"""


@pytest.fixture
def configured(rig: Rig) -> Any:
    m = rig.connect()
    m.edit_config(target="running", config=peer_config("a", "b"))
    return m


def test_new_entries_go_last_unless_placed(rig: Rig, configured: Any) -> None:
    m = configured
    assert _order(rig, m) == ["a", "b"]
    ordering_edit(m, proposal("c"))
    assert _order(rig, m) == ["a", "b", "c"]
    ordering_edit(m, proposal("d", 'yang:insert="first"'))
    assert _order(rig, m) == ["d", "a", "b", "c"]
    ordering_edit(m, proposal("e", 'yang:insert="after" yang:key="[name=\'a\']"'))
    assert _order(rig, m) == ["d", "a", "e", "b", "c"]
    ordering_edit(m, proposal("f", 'yang:insert="before" yang:key="[ike:name=\'c\']"'))  # a prefixed key
    assert _order(rig, m) == ["d", "a", "e", "b", "f", "c"]
    ordering_edit(m, proposal("g", 'nc:operation="create" yang:insert="last"'))
    assert _order(rig, m) == ["d", "a", "e", "b", "f", "c", "g"]


def test_existing_entries_move_and_a_replace_keeps_its_place(rig: Rig, configured: Any) -> None:
    m = configured
    ordering_edit(m, proposal("c"))
    ordering_edit(
        m, '<proposal yang:insert="before" yang:key="[name=\'a\']"><name>c</name></proposal>'
    )  # merge: move
    assert _order(rig, m) == ["c", "a", "b"]
    ordering_edit(m, '<proposal yang:insert="last"><name>c</name></proposal>')
    assert _order(rig, m) == ["a", "b", "c"]
    ordering_edit(m, proposal("b", 'nc:operation="replace"', dh="ecp-384"))  # replaced where it stood
    assert _order(rig, m) == ["a", "b", "c"]
    applied = rig.runtime.applied[-1]["twamp-nf-ike:ike"]["peer"][0]["proposal"]
    assert applied[1]["dh-group"] == "ecp-384"
    ordering_edit(m, proposal("a", 'nc:operation="replace" yang:insert="after" yang:key="[name=\'c\']"'))
    assert _order(rig, m) == ["b", "c", "a"]
    before = len(rig.runtime.applied)
    ordering_edit(m, '<proposal yang:insert="after" yang:key="[name=\'c\']"><name>a</name></proposal>')
    assert len(rig.runtime.applied) == before  # already there: no change, nothing applied


@pytest.mark.parametrize(
    ("attributes", "tag", "app_tag", "words"),
    [
        ('yang:insert="after" yang:key="[name=\'zz\']"', "bad-attribute", "missing-instance", "no sibling"),
        ('yang:insert="before"', "missing-attribute", None, "needs the key attribute"),
        ('yang:insert="middle"', "bad-attribute", None, "first, last, before or after"),
        ('yang:insert="after" yang:key="name=a"', "bad-attribute", None, "predicates"),
        ('yang:insert="after" yang:key="[id=\'a\']"', "bad-attribute", None, "keys of proposal"),
    ],
)
def test_a_bad_insert_is_refused_and_changes_nothing(
    rig: Rig, configured: Any, attributes: str, tag: str, app_tag: str | None, words: str
) -> None:
    m = configured
    with pytest.raises(RPCError) as err:
        ordering_edit(m, proposal("c", attributes))
    assert err.value.tag == tag and err.value.app_tag == app_tag and words in str(err.value)
    assert _order(rig, m) == ["a", "b"]


def test_insert_on_a_list_the_system_orders_is_refused(rig: Rig, configured: Any) -> None:
    m = configured
    with pytest.raises(RPCError) as err:
        m.edit_config(
            target="running",
            config=f"""<config xmlns="{NC_NS}" xmlns:yang="{YANG_NS}"><ike xmlns="{IKE_NS}">
            <peer yang:insert="first"><name>gw2</name></peer></ike></config>""",
        )
    assert err.value.tag == "bad-attribute" and "not an ordered-by user list" in str(err.value)
