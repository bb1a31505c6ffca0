"""Where an entry of an ordered-by user list or leaf-list goes (RFC 7950 s7.7.9, s7.8.6: the `insert`,
`key` and `value` attributes of edit-config).

Such an order carries meaning (IKE proposals are offered most preferred first), so an orchestrator must be
able to put a new entry, or move an existing one, first, last, or before or after a named sibling; without
`insert` a new entry goes last and an existing one keeps its place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

from nf_netconf.errors import Reason, RpcError, bad_attribute
from nf_netconf.schema import NodeInfo

YANG_NS = "urn:ietf:params:xml:ns:yang:1"
INSERT = f"{{{YANG_NS}}}insert"
KEY = f"{{{YANG_NS}}}key"
VALUE = f"{{{YANG_NS}}}value"
ATTRIBUTES = (INSERT, KEY, VALUE)
_PREDICATE = re.compile(r"\s*\[\s*(?:([\w.-]+):)?([\w.-]+)\s*=\s*(?:'([^']*)'|\"([^\"]*)\")\s*\]\s*")


@dataclass(frozen=True)
class Place:
    """first | last | before | after (anchor: the sibling) | at (index: where a replaced entry stood)."""

    kind: str
    anchor: etree._Element | None = None
    index: int = 0


def _bad(info: NodeInfo, attribute: str, message: str, app_tag: str | None = None) -> RpcError:
    return bad_attribute(attribute, info.name, message, app_tag=app_tag)


def requested_place(
    element: etree._Element,
    info: NodeInfo,
    inst: str,
    find: Callable[[etree._Element], etree._Element | None],
) -> Place | None:
    """The place an edit asks for (None: no `insert`); `find` looks up a sibling like the edit element."""
    insert = element.get(INSERT)
    if insert is None:
        return None
    if not info.user_ordered:
        raise _bad(info, "insert", f"{inst} is not an ordered-by user list or leaf-list: no insert there")
    if insert in ("first", "last"):
        return Place(insert)
    if insert not in ("before", "after"):
        raise _bad(info, "insert", f"insert must be first, last, before or after, not {insert!r}")
    attribute = KEY if info.kind == "list" else VALUE
    name = attribute.rpartition("}")[2]
    reference = element.get(attribute)
    if reference is None:
        raise RpcError(
            "missing-attribute",
            f"insert={insert} needs the {name} attribute naming the sibling",
            reason=Reason.MISSING_ELEMENT,
            info={"bad-attribute": name, "bad-element": info.name},
        )
    probe = etree.Element(element.tag)
    if info.kind == "list":
        for tag, value in _keys(reference, info, element).items():
            etree.SubElement(probe, tag).text = value
    else:
        probe.text = reference
    anchor = find(probe)
    if anchor is None:
        raise _bad(info, name, f"no sibling {reference} to insert {insert}", app_tag="missing-instance")
    return Place(insert, anchor)


def _keys(reference: str, info: NodeInfo, element: etree._Element) -> dict[str, str]:
    """The key values of a `key` attribute such as [name='p2'] (prefixes resolved in the element's scope)."""
    values: dict[str, str] = {}
    position = 0
    by_name = {tag.rpartition("}")[2]: tag for tag in info.keys}
    while position < len(reference):
        match = _PREDICATE.match(reference, position)
        if match is None:
            raise _bad(info, "key", f"key must be predicates such as [name='x'], not {reference!r}")
        prefix, name, single, double = match.groups()
        tag = by_name.get(name)
        namespace = element.nsmap.get(prefix) if prefix else None
        if tag is None or (prefix and namespace != tag[1:].partition("}")[0]) or tag in values:
            raise _bad(info, "key", f"key {reference!r} does not name the keys of {info.name} once each")
        values[tag] = single if single is not None else double
        position = match.end()
    if set(values) != set(info.keys):
        raise _bad(info, "key", f"key {reference!r} does not name every key of {info.name}")
    return values


def place(target: etree._Element, node: etree._Element, where: Place | None) -> None:
    """Puts `node` (new, or already a child of `target`: then it moves) where asked; None: last."""
    if where is None or where.kind == "last":
        siblings = [child for child in target if child.tag == node.tag and child is not node]
        if siblings:
            siblings[-1].addnext(node)
        else:
            target.append(node)
    elif where.kind == "first":
        first = next((child for child in target if child.tag == node.tag and child is not node), None)
        if first is not None:
            first.addprevious(node)
        else:
            target.append(node)
    elif where.kind == "at":
        target.insert(where.index, node)
    elif where.anchor is not None and where.anchor is not node:
        if where.kind == "before":
            where.anchor.addprevious(node)
        else:
            where.anchor.addnext(node)


def strip(node: etree._Element) -> None:
    """No ordering attribute is stored: inside new data, entries keep the order they were sent in."""
    for element in node.iter():
        for attribute in ATTRIBUTES:
            element.attrib.pop(attribute, None)
