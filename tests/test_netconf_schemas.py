"""RFC 6022 over a real SSH NETCONF session (ncclient): the schema list in <get> and <get-schema>, whose texts
must be the very files libyang loads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError

from nf_netconf.monitoring import MON_NS, find_schema
from nf_netconf.schema import ModuleSource
from nf_netconf.server import default_yang_dirs
from tests.test_netconf_harness import (
    READER_PASSWORD,
    SERVER_CONFIG,
    TWAMP_NS,
    Rig,
    one_connection_state,
    rig,
    users_toml,
)
from tests.test_netconf_yangcli import yangcli

__all__ = ["rig"]

YANG = Path(default_yang_dirs()[0])
IETF = Path(default_yang_dirs()[1])
OURS = ("twamp-nf-twamp", "twamp-nf-ike", "twamp-nf-ike-binding")
SCHEMAS_FILTER = f'<netconf-state xmlns="{MON_NS}"><schemas/></netconf-state>'


def _revision(path: Path) -> str:
    match = re.search(r"^\s*revision\s+\"?([0-9-]+)\"?", path.read_text(), re.MULTILINE)
    assert match is not None
    return match.group(1)


def _schemas(reply: Any) -> dict[str, etree._Element]:
    root = etree.fromstring(reply.xml.encode())
    return {
        entry.findtext(f"{{{MON_NS}}}identifier") or "": entry for entry in root.iter(f"{{{MON_NS}}}schema")
    }


def _error(call: Any) -> RPCError:
    with pytest.raises(RPCError) as err:
        call()
    return err.value


def test_hello_advertises_monitoring_and_our_modules(rig: Rig) -> None:
    caps = set(rig.connect().server_capabilities)
    assert MON_NS in caps
    for name in OURS:
        text = (YANG / f"{name}.yang").read_text()
        ns = re.search(r'namespace\s+"([^"]+)"', text)
        assert ns is not None
        assert any(
            c.startswith(f"{ns.group(1)}?module={name}&revision={_revision(YANG / f'{name}.yang')}")
            for c in caps
        ), caps


def test_get_schema_returns_the_files_libyang_loads(rig: Rig) -> None:
    m = rig.connect()
    for name in OURS:
        assert m.get_schema(name).data == (YANG / f"{name}.yang").read_text()
    # an imported module we take from pyang's bundled set comes from that same file
    assert m.get_schema("ietf-netconf-acm").data == (IETF / "ietf-netconf-acm.yang").read_text()
    # a module libyang carries built in is still served (libyang's print of it), so imports resolve
    assert "module ietf-inet-types" in m.get_schema("ietf-inet-types").data


def test_get_schema_with_version_and_format(rig: Rig) -> None:
    m = rig.connect()
    path = YANG / "twamp-nf-ike.yang"
    assert m.get_schema("twamp-nf-ike", version=_revision(path), format="yang").data == path.read_text()
    assert m.get_schema("twamp-nf-ike", version="").data == path.read_text()  # empty version: any


def test_get_schema_errors_are_specific(rig: Rig) -> None:
    m = rig.connect()
    err = _error(lambda: m.get_schema("no-such-module"))
    assert err.tag == "invalid-value"
    assert "no-such-module" in err.message
    err = _error(lambda: m.get_schema("twamp-nf-twamp", version="1999-01-01"))
    assert err.tag == "invalid-value"
    assert "1999-01-01" in err.message
    err = _error(lambda: m.get_schema("twamp-nf-twamp", format="yin"))
    assert err.tag == "invalid-value"
    assert "yin" in err.message
    err = _error(lambda: m.get_schema(None))
    assert err.tag == "missing-element"
    # the session goes on
    assert m.get_schema("twamp-nf-twamp").data == (YANG / "twamp-nf-twamp.yang").read_text()


def test_more_than_one_match_without_version_is_data_not_unique() -> None:
    # libyang holds one revision of a module per context, so two are built here directly
    sources = [
        ModuleSource("m", "2020-01-01", "urn:m", "module m {}"),
        ModuleSource("m", "2021-01-01", "urn:m", "module m { revision 2021-01-01; }"),
    ]
    ident = etree.Element(f"{{{MON_NS}}}identifier")
    ident.text = "m"
    with pytest.raises(Exception) as err:
        find_schema(sources, ident, None, None)
    assert getattr(err.value, "tag", None) == "operation-failed"
    assert getattr(err.value, "app_tag", None) == "data-not-unique"
    version = etree.Element(f"{{{MON_NS}}}version")
    version.text = "2021-01-01"
    assert find_schema(sources, ident, version, None) is sources[1]


def test_schema_list_in_get_with_subtree_and_xpath_filters(rig: Rig) -> None:
    m = rig.connect()
    before = len(rig.runtime.requests)
    entries = _schemas(m.get(filter=("subtree", SCHEMAS_FILTER)))
    assert len(rig.runtime.requests) == before  # the server's own state: the runtime is not asked
    assert set(OURS) | {"ietf-netconf-monitoring", "ietf-netconf-acm"} <= set(entries)
    entry = entries["twamp-nf-twamp"]
    assert entry.findtext(f"{{{MON_NS}}}version") == _revision(YANG / "twamp-nf-twamp.yang")
    assert entry.findtext(f"{{{MON_NS}}}namespace") == TWAMP_NS
    assert [el.text for el in entry.findall(f"{{{MON_NS}}}location")] == ["NETCONF"]
    fmt = entry.find(f"{{{MON_NS}}}format")
    assert fmt is not None and fmt.text is not None
    prefix, _, name = fmt.text.rpartition(":")
    assert name == "yang" and fmt.nsmap.get(prefix or None) == MON_NS
    # every listed schema can be fetched at its version
    for ident, el in entries.items():
        assert m.get_schema(ident, version=el.findtext(f"{{{MON_NS}}}version")).data

    one = _schemas(
        m.get(
            filter=(
                "subtree",
                f'<netconf-state xmlns="{MON_NS}"><schemas><schema><identifier>twamp-nf-ike</identifier>'
                "</schema></schemas></netconf-state>",
            )
        )
    )
    assert list(one) == ["twamp-nf-ike"]
    xp = _schemas(
        m.get(
            filter=(
                "xpath",
                "/ietf-netconf-monitoring:netconf-state/ietf-netconf-monitoring:schemas"
                "/ietf-netconf-monitoring:schema[ietf-netconf-monitoring:identifier='twamp-nf-ike']",
            )
        )
    )
    assert list(xp) == ["twamp-nf-ike"]
    assert xp["twamp-nf-ike"].findtext(f"{{{MON_NS}}}version")  # keys come with the selection

    # no filter: the runtime's state and the schema list in one reply
    rig.runtime.state = one_connection_state()
    full = etree.fromstring(m.get().xml.encode())
    assert "paths" not in rig.runtime.requests[-1]
    assert full.find(f".//{{{MON_NS}}}schema") is not None
    assert full.find(f".//{{{TWAMP_NS}}}twamp") is not None


def test_nacm_governs_get_schema_and_the_schema_list(tmp_path: Path) -> None:
    extra = (
        '\n[[nacm.rule]]\ngroups = ["readers"]\nmodule = "ietf-netconf-monitoring"\nrpc = "get-schema"\n'
        'access = ["exec"]\naction = "deny"\n'
        '\n[[nacm.rule]]\ngroups = ["readers"]\npath = "/ietf-netconf-monitoring:netconf-state"\n'
        'access = ["read"]\naction = "deny"\n'
    )
    r = Rig(tmp_path, users=users_toml(extra))
    try:
        reader = r.connect("reader", READER_PASSWORD)
        assert _error(lambda: reader.get_schema("twamp-nf-twamp")).tag == "access-denied"
        assert _schemas(reader.get(filter=("subtree", SCHEMAS_FILTER))) == {}
        admin = r.connect()
        assert admin.get_schema("twamp-nf-twamp").data == (YANG / "twamp-nf-twamp.yang").read_text()
        assert "twamp-nf-twamp" in _schemas(admin.get(filter=("subtree", SCHEMAS_FILTER)))
    finally:
        r.close()


def test_yangcli_fetches_our_modules_with_get_schema(rig: Rig, tmp_path: Path) -> None:
    """No --modpath: yangcli (yuma123) learns /twamp only by autoloading the modules over get-schema."""
    rig.connect().edit_config(target="running", config=SERVER_CONFIG)
    out = yangcli(rig, tmp_path, "sget-config /twamp/server/count source=running\n", modpath=False)
    assert "<count>65536</count>" in out, out
