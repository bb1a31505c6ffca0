"""Access control, an RFC 8341 subset: groups from the users file, ordered rules, read/write/exec defaults.

What is implemented: rule-lists flattened into one ordered list of rules (first match wins), each naming
groups, a module ("*" for any), and either a data path prefix (a data-node rule) or an rpc name (an
operation rule) or neither (a module rule), the access operations and permit/deny; the global defaults;
`nacm:default-deny-all` on writes (RFC 8341 section 3.2.5: only an explicit permit rule opens it);
`kill-session` and `delete-config` are default-deny-all as in RFC 8341's ietf-netconf annotations;
`close-session` is always allowed; notifications are delivered when the user may read the notification's
module (module rules only). Not implemented: the ietf-netconf-acm data model itself (rules come from the
users file), per-notification-name rules, the recovery session.

Beyond RFC 8341, on purpose: default-deny-all nodes (PSKs, key-chain secrets) are write-only. They are
removed from every get/get-config reply and notification whatever the rules say.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from nf_netconf.edit import Change
from nf_netconf.schema import NodeInfo, Schema

ACCESS = frozenset({"create", "read", "update", "delete", "exec"})
DEFAULT_DENY_RPCS = frozenset({"kill-session", "delete-config"})


@dataclass(frozen=True)
class Rule:
    groups: frozenset[str]
    module: str
    path: str | None
    rpc: str | None
    access: frozenset[str]
    permit: bool

    def applies_to_groups(self, groups: frozenset[str]) -> bool:
        return "*" in self.groups or bool(self.groups & groups)


def _path_covers(prefix: str, path: str) -> bool:
    if prefix == "/":
        return True
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class Nacm:
    enabled: bool = True
    read_default: bool = True
    write_default: bool = False
    exec_default: bool = True
    rules: tuple[Rule, ...] = ()

    def _match(
        self, groups: frozenset[str], access: str, module: str, path: str | None, rpc: str | None
    ) -> Rule | None:
        for rule in self.rules:
            if access not in rule.access or not rule.applies_to_groups(groups):
                continue
            if rule.module != "*" and rule.module != module:
                continue
            if rpc is not None:
                if rule.path is not None or (rule.rpc is not None and rule.rpc not in ("*", rpc)):
                    continue
            else:
                if rule.rpc is not None:
                    continue
                if rule.path is not None and (path is None or not _path_covers(rule.path, path)):
                    continue
            return rule
        return None

    def may_exec(self, groups: frozenset[str], module: str, rpc: str) -> bool:
        if rpc == "close-session":
            return True
        if not self.enabled:
            return True
        rule = self._match(groups, "exec", module, None, rpc)
        if rule is not None:
            return rule.permit
        if rpc in DEFAULT_DENY_RPCS:
            return False
        return self.exec_default

    def may_read(self, groups: frozenset[str], info: NodeInfo) -> bool:
        if info.secret:
            return False  # write-only, whatever the rules say
        if not self.enabled:
            return True
        rule = self._match(groups, "read", info.module, info.path, None)
        return rule.permit if rule is not None else self.read_default

    def may_receive(self, groups: frozenset[str], module: str) -> bool:
        """A notification of `module`: module rules (no path, no rpc) with read access decide."""
        if not self.enabled:
            return True
        rule = self._match(groups, "read", module, None, None)
        return rule.permit if rule is not None else self.read_default

    def may_write(self, groups: frozenset[str], change: Change) -> bool:
        if not self.enabled:
            return True
        rule = self._match(groups, change.op, change.info.module, change.info.path, None)
        if rule is not None:
            return rule.permit
        if change.info.secret:
            return False
        return self.write_default

    def first_denied_write(self, groups: frozenset[str], changes: Iterable[Change]) -> Change | None:
        for change in changes:
            if not self.may_write(groups, change):
                return change
        return None

    def prune_read(self, data: etree._Element, groups: frozenset[str], schema: Schema) -> None:
        """Remove, in place, every element of a <data> tree this user may not read (and every secret)."""

        def visit(parent: etree._Element, parent_info: NodeInfo | None) -> None:
            for element in list(parent):
                if not isinstance(element.tag, str):
                    continue
                info = schema.lookup(parent_info, element.tag)
                if info is None:
                    continue
                if not self.may_read(groups, info):
                    parent.remove(element)
                    continue
                if len(element):
                    visit(element, info)

        visit(data, None)


def strip_secrets(data: etree._Element, schema: Schema, parent_info: NodeInfo | None = None) -> None:
    """Remove every default-deny-all element below `data` (e.g. a notification's content)."""
    for element in list(data):
        if not isinstance(element.tag, str):
            continue
        info = schema.lookup(parent_info, element.tag)
        if info is None:
            continue
        if info.secret:
            data.remove(element)
        elif len(element):
            strip_secrets(element, schema, info)
