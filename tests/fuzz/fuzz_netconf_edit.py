"""Fuzz target: client XML into the NETCONF edit and filter engines (nf_netconf.edit, nf_netconf.filters) on
the real YANG schema. Whatever the XML (wd:default marks of RFC 6243 included), they only ever raise
RpcError, an accepted edit either validates or is refused by libyang with an RpcError too, and what is
stored prints in every with-defaults mode."""

from __future__ import annotations

import contextlib

from lxml import etree

from nf_netconf.edit import apply_edit
from nf_netconf.errors import RpcError
from nf_netconf.filters import apply_filter
from nf_netconf.schema import Schema, safe_parser
from nf_netconf.server import default_yang_dirs
from nf_netconf.with_defaults import MODES, TAG_NS

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
TW = "urn:twamp-nf:yang:twamp-nf-twamp"
SCHEMA = Schema(default_yang_dirs())
PREFIX = (
    f'<config xmlns="{NC}" xmlns:nc="{NC}" xmlns:wd="{TAG_NS}" xmlns:yang="urn:ietf:params:xml:ns:yang:1">'
    f'<twamp xmlns="{TW}">'
).encode()
SUFFIX = b"</twamp></config>"
BASE = (
    f'<data xmlns="{NC}"><twamp xmlns="{TW}"><server><modes>authenticated</modes>'
    "<key-chain><key-id>a</key-id><secret-key>AAAA</secret-key></key-chain></server></twamp></data>"
).encode()


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    ops = ("merge", "replace", "none")
    try:
        element = etree.fromstring(PREFIX + data[1:] + SUFFIX, parser=safe_parser())
    except (etree.XMLSyntaxError, ValueError):
        return
    tree = etree.fromstring(BASE)
    try:
        apply_edit(tree, element, SCHEMA, ops[data[0] % 3])
        roots, _ = SCHEMA.check_config(list(tree), full=bool(data[0] & 4))
        SCHEMA.with_defaults(roots, MODES[(data[0] >> 3) % len(MODES)])  # RFC 6243 views of what was stored
    except RpcError:
        pass
    filter_el = etree.Element(f"{{{NC}}}filter")
    filter_el.extend(list(element))
    with contextlib.suppress(RpcError):
        apply_filter(etree.fromstring(BASE), filter_el, SCHEMA)
