"""Subtree (RFC 6241 section 6) and XPath (RFC 6241 section 8.9) filters over an lxml data tree.

Written here rather than taken from the `netconf` library, whose helper misreads ncclient's un-namespaced
type="xpath" and fails on a bare top-level selection. Both filters return copies; the tree is not touched.
Subtree filter elements without a namespace match any namespace (as ncclient users often write them).
"""

from __future__ import annotations

import copy

from lxml import etree

from nf_netconf.errors import Reason, RpcError, bad_attribute, bad_element, invalid_value
from nf_netconf.schema import NodeInfo, Schema

NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"


def filter_spec(filter_el: etree._Element | None) -> tuple[str, etree._Element | str | None]:
    """Read a <filter>: ("none", None), ("subtree", element) or ("xpath", select)."""
    if filter_el is None:
        return "none", None
    kind = filter_el.get("type") or filter_el.get(f"{{{NC_NS}}}type") or "subtree"
    if kind == "subtree":
        return "subtree", filter_el
    if kind == "xpath":
        select = filter_el.get("select") or filter_el.get(f"{{{NC_NS}}}select")
        if select is None:
            raise RpcError(
                "missing-attribute",
                "an xpath filter needs a select attribute",
                reason=Reason.MISSING_ELEMENT,
                error_type="protocol",
                info={"bad-attribute": "select", "bad-element": "filter"},
            )
        return "xpath", select
    raise bad_attribute(
        "type", "filter", f"unknown filter type {kind!r}", reason=Reason.BAD_ELEMENT, error_type="protocol"
    )


def apply_filter(data: etree._Element, filter_el: etree._Element | None, schema: Schema) -> etree._Element:
    """A new <data> element holding what the filter selects from `data` (a <data> wrapper)."""
    kind, spec = filter_spec(filter_el)
    if kind == "none":
        return copy.deepcopy(data)
    if kind == "subtree":
        assert isinstance(spec, etree._Element)
        return subtree(data, spec, schema)
    assert isinstance(spec, str)
    assert filter_el is not None
    return xpath(data, spec, dict(filter_el.nsmap), schema)


def _matches(data_tag: str, filter_tag: str) -> bool:
    if filter_tag == data_tag:
        return True
    return not filter_tag.startswith("{") and data_tag.rpartition("}")[2] == filter_tag


def subtree(data: etree._Element, spec: etree._Element, schema: Schema) -> etree._Element:
    out = etree.Element(data.tag, nsmap=data.nsmap)
    selectors = [f for f in spec if isinstance(f.tag, str)]
    if not selectors:
        return out  # an empty filter selects nothing (RFC 6241 section 6.4.2)
    for element in data:
        info = schema.lookup(None, element.tag)
        for selector in selectors:
            if _matches(element.tag, selector.tag):
                result = _select(element, selector, info)
                if result is not None:
                    out.append(result)
                break
    return out


def _is_content_match(selector: etree._Element) -> bool:
    return len(selector) == 0 and bool((selector.text or "").strip())


def _select(
    element: etree._Element, selector: etree._Element, info: NodeInfo | None
) -> etree._Element | None:
    children = [f for f in selector if isinstance(f.tag, str)]
    if not children:
        if _is_content_match(selector):
            return copy.deepcopy(element) if (element.text or "").strip() == selector.text.strip() else None
        return copy.deepcopy(element)  # selection node
    content = [f for f in children if _is_content_match(f)]
    for match in content:
        if not any(
            _matches(c.tag, match.tag) and (c.text or "").strip() == match.text.strip() for c in element
        ):
            return None
    others = [f for f in children if not _is_content_match(f)]
    if not others:
        return copy.deepcopy(element)
    out = etree.Element(element.tag, nsmap=element.nsmap)
    out.text = None
    selected = False
    keys = info.keys if info is not None else ()
    for child in element:
        if not isinstance(child.tag, str):
            continue
        child_info = info.child(child.tag) if info is not None else None
        if child.tag in keys or any(_matches(child.tag, m.tag) for m in content):
            out.append(copy.deepcopy(child))
            continue
        for other in others:
            if _matches(child.tag, other.tag):
                result = _select(child, other, child_info)
                if result is not None:
                    out.append(result)
                    selected = True
                break
    if not selected and not content:
        return None
    if not selected and content and not keys:
        return None
    return out


def xpath(data: etree._Element, select: str, nsmap: dict[str | None, str], schema: Schema) -> etree._Element:
    """Evaluate `select` with the filter element's prefixes (and module names as prefixes, as a convenience)
    on each top-level tree as its own document; return selected nodes with their ancestors and keys."""
    namespaces = {p: ns for p, ns in nsmap.items() if p}
    for module, ns in schema.namespaces.items():
        namespaces.setdefault(module, ns)
    out = etree.Element(data.tag, nsmap=data.nsmap)
    try:
        compiled = etree.XPath(select, namespaces=namespaces)
    except etree.XPathError as exc:
        raise invalid_value(f"invalid xpath select expression: {exc}") from None
    for root in data:
        if not isinstance(root.tag, str):
            continue
        tree = etree.ElementTree(copy.deepcopy(root))
        try:
            found = compiled(tree)
        except etree.XPathError as exc:
            raise invalid_value(f"invalid xpath select expression: {exc}") from None
        if not isinstance(found, list):
            raise bad_element("filter", "the xpath select expression must select nodes")
        selected: list[etree._Element] = []
        for item in found:
            if isinstance(item, etree._Element):
                selected.append(item)
            elif hasattr(item, "getparent") and item.getparent() is not None:
                selected.append(item.getparent())  # a text or attribute result selects its element
        _copy_paths(out, selected, schema)
    return out


def _copy_paths(out: etree._Element, selected: list[etree._Element], schema: Schema) -> None:
    clones: dict[etree._Element, etree._Element] = {}
    chosen = set(selected)

    def clone_of(node: etree._Element) -> etree._Element:
        if node in clones:
            return clones[node]
        parent = node.getparent()
        parent_clone = out if parent is None else clone_of(parent)
        clone = etree.SubElement(parent_clone, node.tag, nsmap=node.nsmap)
        info = _info_of(node, schema)
        if info is not None:
            for key in info.keys:
                key_el = node.find(key)
                if key_el is not None and key_el not in chosen:
                    clone.append(copy.deepcopy(key_el))
        clones[node] = clone
        return clone

    for node in selected:
        if any(anc in chosen for anc in node.iterancestors()):
            continue
        parent = node.getparent()
        parent_clone = out if parent is None else clone_of(parent)
        parent_clone.append(copy.deepcopy(node))
        clones[node] = parent_clone[-1]


def _info_of(node: etree._Element, schema: Schema) -> NodeInfo | None:
    chain = [node, *node.iterancestors()]
    info: NodeInfo | None = None
    for el in reversed(chain):
        info = schema.lookup(info, el.tag)
        if info is None:
            return None
    return info
