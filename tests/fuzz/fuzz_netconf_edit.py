"""Fuzz target: client XML into the NETCONF edit and filter engines (nf_netconf.edit, nf_netconf.filters) on
the real YANG schema. Whatever the XML, they only ever raise RpcError, and an accepted edit either
validates or is refused by libyang with an RpcError too."""

from __future__ import annotations

import contextlib

from lxml import etree

from nf_netconf.edit import apply_edit
from nf_netconf.errors import RpcError
from nf_netconf.filters import apply_filter
from nf_netconf.schema import Schema, safe_parser
from nf_netconf.server import default_yang_dirs

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
TW = "urn:twamp-nf:yang:twamp-nf-twamp"
SCHEMA = Schema(default_yang_dirs())
PREFIX = f'<config xmlns="{NC}" xmlns:nc="{NC}"><twamp xmlns="{TW}">'.encode()
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
        SCHEMA.check_config(list(tree), full=bool(data[0] & 4))
    except RpcError:
        pass
    filter_el = etree.Element(f"{{{NC}}}filter")
    filter_el.extend(list(element))
    with contextlib.suppress(RpcError):
        apply_filter(etree.fromstring(BASE), filter_el, SCHEMA)
