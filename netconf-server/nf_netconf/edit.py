"""edit-config (RFC 6241 section 7.2) on an lxml datastore tree: merge, replace, create, delete, remove.

The edit runs on a copy of the target; the caller validates the result with libyang and swaps it in only
when everything (validation, NACM, the runtime) accepted it, which is what makes rollback-on-error free.
Every effective change is reported as a `Change` so NACM can check write access node by node.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from lxml import etree

from nf_netconf.errors import Reason, RpcError, bad_attribute, invalid_value, unknown_element
from nf_netconf.ordering import Place, place, requested_place, strip
from nf_netconf.schema import NodeInfo, Schema
from nf_netconf.with_defaults import TAG, asks_for_default, same_value

NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
OPERATION = f"{{{NC_NS}}}operation"
OPERATIONS = frozenset({"merge", "replace", "create", "delete", "remove"})
DEFAULT_OPERATIONS = frozenset({"merge", "replace", "none"})


@dataclass(frozen=True)
class Change:
    """One node created, updated or deleted by an edit; `path` is its data path without predicates."""

    op: str  # create | update | delete
    info: NodeInfo
    instance: str  # the instance path with key predicates, for error-path


def apply_edit(data: etree._Element, config: etree._Element, schema: Schema, default_op: str) -> list[Change]:
    """Apply the children of `config` to the children of `data` in place; return the changes made."""
    if default_op not in DEFAULT_OPERATIONS:
        raise invalid_value(f"default-operation must be one of {', '.join(sorted(DEFAULT_OPERATIONS))}")
    changes: list[Change] = []
    _Editor(schema, changes).children(data, config, None, "", default_op)
    return changes


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


class _Editor:
    def __init__(self, schema: Schema, changes: list[Change]) -> None:
        self.schema = schema
        self.changes = changes

    def children(
        self, target: etree._Element, edit: etree._Element, parent: NodeInfo | None, parent_inst: str, op: str
    ) -> None:
        for element in edit:
            if not isinstance(element.tag, str):
                continue
            info = self.schema.lookup(parent, element.tag)
            if info is None:
                raise unknown_element(
                    _local(element.tag),
                    f"unknown element {_local(element.tag)!r}"
                    + (f" in {parent.path}" if parent else " (no such top-level node in the served modules)"),
                    path=parent_inst or None,
                )
            if parent is not None and parent.kind == "list" and element.tag in parent.keys:
                continue  # a key identifies its entry; it cannot be edited on its own
            own = element.get(OPERATION)
            if own is not None and own not in OPERATIONS:
                raise bad_attribute("operation", info.name, f"unknown operation {own!r}", error_type="rpc")
            inst = parent_inst + "/" + self._step(parent, info, element)
            if not info.config:
                raise invalid_value(f"{info.path} is state data (config false) and cannot be edited", inst)
            self.node(target, element, info, inst, own or op)

    def _step(self, parent: NodeInfo | None, info: NodeInfo, element: etree._Element) -> str:
        step = (
            info.name if parent is not None and parent.module == info.module else f"{info.module}:{info.name}"
        )
        if info.kind == "list":
            for key in info.keys:
                value = element.findtext(key)
                if value is None:
                    raise RpcError(
                        "missing-element",
                        f"list entry {info.path} needs its key {_local(key)!r}",
                        reason=Reason.MISSING_ELEMENT,
                        info={"bad-element": _local(key)},
                    )
                step += f"[{_local(key)}={_quote(value.strip())}]"
        elif info.kind == "leaf-list":
            step += f"[.={_quote((element.text or '').strip())}]"
        return step

    def _find(self, target: etree._Element, element: etree._Element, info: NodeInfo) -> etree._Element | None:
        for candidate in target.iterchildren(element.tag):
            if info.kind == "list":
                if all(
                    (candidate.findtext(key) or "").strip() == (element.findtext(key) or "").strip()
                    for key in info.keys
                ):
                    return candidate
            elif info.kind == "leaf-list":
                if (candidate.text or "").strip() == (element.text or "").strip():
                    return candidate
            else:
                return candidate
        return None

    def node(
        self, target: etree._Element, element: etree._Element, info: NodeInfo, inst: str, op: str
    ) -> None:
        existing = self._find(target, element, info)
        if asks_for_default(element):
            self._back_to_default(target, existing, element, info, inst, op)
            return
        where = None
        if op in ("create", "merge", "replace"):
            where = requested_place(element, info, inst, lambda probe: self._find(target, probe, info))
        if op == "create":
            if existing is not None:
                raise RpcError("data-exists", f"{inst} already exists", reason=Reason.DATA_EXISTS, path=inst)
            self._insert(target, element, info, inst, "create", where)
        elif op == "delete":
            if existing is None:
                raise RpcError(
                    "data-missing", f"{inst} does not exist", reason=Reason.DATA_MISSING, path=inst
                )
            self._remove(target, existing, info, inst)
        elif op == "remove":
            if existing is not None:
                self._remove(target, existing, info, inst)
        elif op == "replace":
            if existing is not None:
                if where is None or where.anchor is existing:  # a replaced entry keeps its place
                    where = Place("at", index=target.index(existing))
                self._remove(target, existing, info, inst, record=False)
            self._insert(target, element, info, inst, "update" if existing is not None else "create", where)
        elif op == "merge":
            if info.kind in ("leaf", "anydata"):
                if existing is None:
                    self._insert(target, element, info, inst, "create")
                elif _text(existing) != _text(element) or info.kind == "anydata":
                    self._remove(target, existing, info, inst, record=False)
                    self._insert(target, element, info, inst, "update")
            elif info.kind == "leaf-list":
                if existing is None:
                    self._insert(target, element, info, inst, "create", where)
                elif where is not None:
                    self._move(target, existing, info, inst, where)
            else:
                if existing is None:
                    existing = self._skeleton(target, element, info, inst, where)
                elif where is not None:
                    self._move(target, existing, info, inst, where)
                self.children(existing, element, info, inst, "merge")
        else:  # none: descend without changing, unless an operation below asks for a change
            if info.kind in ("leaf", "leaf-list", "anydata"):
                return
            if existing is None:
                if not _creates(element):
                    if _deletes(element):
                        raise RpcError(
                            "data-missing", f"{inst} does not exist", reason=Reason.DATA_MISSING, path=inst
                        )
                    return
                existing = self._skeleton(target, element, info, inst)
            self.children(existing, element, info, inst, "none")

    def _back_to_default(
        self,
        target: etree._Element,
        existing: etree._Element | None,
        element: etree._Element,
        info: NodeInfo,
        inst: str,
        op: str,
    ) -> None:
        """A leaf marked wd:default="true" (RFC 6243 s4.5.2): its default takes effect, which the explicit
        datastore holds as no leaf at all; create and delete keep their existence checks."""
        check_default(element, info, inst)
        if op == "create" and existing is not None:
            raise RpcError("data-exists", f"{inst} already exists", reason=Reason.DATA_EXISTS, path=inst)
        if op == "delete" and existing is None:
            raise RpcError("data-missing", f"{inst} does not exist", reason=Reason.DATA_MISSING, path=inst)
        if existing is not None and op != "none":
            self._remove(target, existing, info, inst)

    def _move(
        self, target: etree._Element, existing: etree._Element, info: NodeInfo, inst: str, where: Place
    ) -> None:
        """An existing entry of an ordered-by user list moves: an update of it (NACM checks write)."""
        before = list(target).index(existing)
        place(target, existing, where)
        if list(target).index(existing) != before:
            self.changes.append(Change("update", info, inst))

    def _skeleton(
        self,
        target: etree._Element,
        element: etree._Element,
        info: NodeInfo,
        inst: str,
        where: Place | None = None,
    ) -> etree._Element:
        node = etree.Element(element.tag)
        place(target, node, where)
        for key in info.keys:
            etree.SubElement(node, key).text = (element.findtext(key) or "").strip()
        self.changes.append(Change("create", info, inst))
        return node

    def _insert(
        self,
        target: etree._Element,
        element: etree._Element,
        info: NodeInfo,
        inst: str,
        change: str,
        where: Place | None = None,
    ) -> None:
        node = _clean_copy(element)
        drop_default_marks(node, info, inst)
        place(target, node, where)
        self._record_subtree(node, info, inst, change)

    def _remove(
        self,
        target: etree._Element,
        existing: etree._Element,
        info: NodeInfo,
        inst: str,
        *,
        record: bool = True,
    ) -> None:
        target.remove(existing)
        if record:
            self._record_subtree(existing, info, inst, "delete")

    def _record_subtree(self, node: etree._Element, info: NodeInfo, inst: str, change: str) -> None:
        self.changes.append(Change(change, info, inst))
        for child in node:
            if not isinstance(child.tag, str):
                continue
            child_info = info.child(child.tag)
            if child_info is None:
                raise unknown_element(
                    _local(child.tag), f"unknown element {_local(child.tag)!r} in {info.path}", path=inst
                )
            if not child_info.config:
                raise invalid_value(
                    f"{child_info.path} is state data (config false) and cannot be edited", inst
                )
            if info.kind == "list" and child.tag in info.keys:
                continue
            child_inst = inst + "/" + self._step(info, child_info, child)
            self._record_subtree(child, child_info, child_inst, "create" if change == "update" else change)


def _text(element: etree._Element) -> str:
    return (element.text or "").strip()


def _quote(value: str) -> str:
    return f'"{value}"' if "'" in value else f"'{value}'"


def _creates(element: etree._Element) -> bool:
    return any(el.get(OPERATION) in ("create", "merge", "replace") for el in element.iter())


def _deletes(element: etree._Element) -> bool:
    return any(el.get(OPERATION) == "delete" for el in element.iter())


def _clean_copy(element: etree._Element) -> etree._Element:
    """A copy to insert: nested delete/remove make no sense inside new data and are dropped."""
    node = copy.deepcopy(element)
    for el in list(node.iter()):
        if el is not node and el.get(OPERATION) in ("delete", "remove"):
            parent = el.getparent()
            if parent is not None:
                parent.remove(el)
    for el in node.iter():
        if OPERATION in el.attrib:
            del el.attrib[OPERATION]
    strip(node)
    etree.cleanup_namespaces(node)
    return node


def check_default(element: etree._Element, info: NodeInfo, inst: str) -> None:
    if info.kind != "leaf" or info.default is None:
        raise invalid_value(f"{inst} has no YANG default, so wd:default cannot set it", inst)
    if not same_value(_text(element), info.default):
        raise invalid_value(f'{inst}: wd:default="true" must carry the default value {info.default}', inst)


def drop_default_marks(node: etree._Element, info: NodeInfo, inst: str) -> None:
    """New data from a report-all-tagged reply: a leaf marked wd:default="true" means "the default", so it
    is left out (explicit mode stores no leaf for it); no mark is ever stored."""
    node.attrib.pop(TAG, None)
    for child in list(node):
        if not isinstance(child.tag, str):
            continue
        child_info = info.child(child.tag)
        if child_info is None:
            continue  # reported as an unknown element when the subtree is recorded
        if asks_for_default(child):
            check_default(child, child_info, inst)
            node.remove(child)
        else:
            drop_default_marks(child, child_info, inst)
    etree.cleanup_namespaces(node)


def subtree_changes(roots: list[etree._Element], schema: Schema, op: str) -> list[Change]:
    """Every node of `roots` as a `op` change (copy-config replaces whole trees: NACM checks each node)."""
    changes: list[Change] = []
    editor = _Editor(schema, changes)
    for root in roots:
        if not isinstance(root.tag, str):
            continue
        info = schema.lookup(None, root.tag)
        if info is None:
            raise unknown_element(_local(root.tag), f"unknown top-level element {_local(root.tag)!r}")
        editor._record_subtree(root, info, "/" + editor._step(None, info, root), op)
    return changes


def merge_tree(data: etree._Element, roots: list[etree._Element], schema: Schema) -> None:
    """Merge state roots (from the runtime) into a copy of the running config; list entries match by key."""

    def merge(target: etree._Element, element: etree._Element, info: NodeInfo | None) -> None:
        existing = None
        if info is not None:
            existing = _Editor(schema, [])._find(target, element, info)
        if existing is None or info is None or info.kind in ("leaf", "leaf-list", "anydata"):
            if existing is None:
                target.append(copy.deepcopy(element))
            return
        for child in element:
            if not isinstance(child.tag, str):
                continue
            if info.kind == "list" and child.tag in info.keys:
                continue
            merge(existing, child, info.child(child.tag))

    for root in roots:
        merge(data, root, schema.lookup(None, root.tag))
