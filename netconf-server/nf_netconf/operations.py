"""The NETCONF operations (RFC 6241 section 7, RFC 5277 create-subscription): parameter checks and dispatch.

Each handler takes the session and the operation element and returns the reply body; errors are RpcError.
NACM exec rights are checked before any handler runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

from lxml import etree

from nf_netconf.datastore import (
    DEFAULT_CONFIRM_TIMEOUT,
    ERROR_OPTIONS,
    TARGETS,
    TEST_OPTIONS,
    Datastores,
    runtime_error,
)
from nf_netconf.edit import DEFAULT_OPERATIONS, merge_tree
from nf_netconf.errors import NC_NS, Reason, RpcError, bad_element, invalid_value, missing_element
from nf_netconf.filters import apply_filter, filter_spec
from nf_netconf.monitoring import MON_MODULE, MON_NS, find_schema, schema_reply, schemas_state
from nf_netconf.nacm import Nacm
from nf_netconf.notifications import NOTIF_NS, NotificationHub
from nf_netconf.runtime_link import RuntimeLink, RuntimeRefused, RuntimeUnavailable
from nf_netconf.schema import Schema
from nf_netconf.with_defaults import BASIC_MODE, MODES, WD_NS

if TYPE_CHECKING:
    from nf_netconf.session import Session

Handler = Callable[["Session", etree._Element], etree._Element]

NC_MODULE = "ietf-netconf"
_WITH_DEFAULTS = frozenset({"with-defaults"})
_WD_MODES = frozenset(MODES)
NOTIF_MODULE = "notifications"
_UINT32_MAX = 2**32 - 1


def _ok() -> etree._Element:
    return etree.Element(f"{{{NC_NS}}}ok", nsmap={None: NC_NS})


def _params(
    op: etree._Element, allowed: set[str], ns: str = NC_NS, augmented: frozenset[str] = frozenset()
) -> dict[str, etree._Element]:
    """The operation's parameters by name; `augmented` ones are in the with-defaults namespace."""
    params: dict[str, etree._Element] = {}
    for child in op:
        if not isinstance(child.tag, str):
            continue
        qname = etree.QName(child)
        expected = WD_NS if qname.localname in augmented else ns
        if qname.namespace != expected or qname.localname not in allowed | augmented:
            raise RpcError(
                "unknown-element",
                f"unknown parameter {qname.localname!r} of {etree.QName(op).localname}",
                reason=Reason.UNKNOWN_ELEMENT,
                error_type="protocol",
                info={"bad-element": qname.localname},
            )
        if qname.localname in params:
            raise bad_element(qname.localname, f"parameter {qname.localname!r} given twice")
        params[qname.localname] = child
    return params


def _datastore_name(param: etree._Element, allowed: tuple[str, ...]) -> str:
    names: list[str] = [etree.QName(c).localname for c in param if isinstance(c.tag, str)]
    if len(names) != 1 or names[0] not in allowed:
        raise bad_element(
            etree.QName(param).localname,
            f"{etree.QName(param).localname} must name one of: {', '.join(allowed)}",
        )
    return str(names[0])


def _text_option(params: dict[str, etree._Element], name: str, allowed: frozenset[str], default: str) -> str:
    if name not in params:
        return default
    value = (params[name].text or "").strip()
    if value not in allowed:
        raise RpcError(
            "invalid-value",
            f"{name} must be one of {', '.join(sorted(allowed))}",
            reason=Reason.INVALID_VALUE,
            error_type="protocol",
        )
    return value


def _leaf_text(param: etree._Element) -> str:
    """A string leaf's value exactly as sent (a token's spaces count); child elements are refused."""
    if any(isinstance(child.tag, str) for child in param):
        name = etree.QName(param).localname
        raise bad_element(name, f"{name} is a leaf and holds no elements")
    return param.text or ""


def _confirm_timeout(param: etree._Element | None) -> int:
    if param is None:
        return DEFAULT_CONFIRM_TIMEOUT
    text = _leaf_text(param).strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= _UINT32_MAX:
        raise RpcError(
            "invalid-value",
            f"confirm-timeout must be a number of seconds from 1 to {_UINT32_MAX}",
            reason=Reason.INVALID_VALUE,
            error_type="protocol",
            info={"bad-element": "confirm-timeout"},
        )
    return int(text)


class Operations:
    def __init__(
        self,
        schema: Schema,
        datastores: Datastores,
        runtime: RuntimeLink,
        nacm: Nacm,
        hub: NotificationHub,
        kill: Callable[[int, int], bool],
    ) -> None:
        self.schema = schema
        self.datastores = datastores
        self.runtime = runtime
        self.nacm = nacm
        self.hub = hub
        self.kill = kill
        self.handlers: dict[tuple[str, str], tuple[str, Handler]] = {
            (NC_NS, "get"): (NC_MODULE, self.get),
            (NC_NS, "get-config"): (NC_MODULE, self.get_config),
            (NC_NS, "edit-config"): (NC_MODULE, self.edit_config),
            (NC_NS, "copy-config"): (NC_MODULE, self.copy_config),
            (NC_NS, "lock"): (NC_MODULE, self.lock),
            (NC_NS, "unlock"): (NC_MODULE, self.unlock),
            (NC_NS, "commit"): (NC_MODULE, self.commit),
            (NC_NS, "cancel-commit"): (NC_MODULE, self.cancel_commit),
            (NC_NS, "discard-changes"): (NC_MODULE, self.discard_changes),
            (NC_NS, "validate"): (NC_MODULE, self.validate),
            (NC_NS, "close-session"): (NC_MODULE, self.close_session),
            (NC_NS, "kill-session"): (NC_MODULE, self.kill_session),
            (NOTIF_NS, "create-subscription"): (NOTIF_MODULE, self.create_subscription),
            (MON_NS, "get-schema"): (MON_MODULE, self.get_schema),
        }
        self._schemas_state = schemas_state(schema.sources)

    def dispatch(self, session: Session, op: etree._Element) -> etree._Element:
        qname = etree.QName(op)
        entry = self.handlers.get((qname.namespace or "", qname.localname))
        if entry is None:
            raise RpcError(
                "operation-not-supported",
                f"operation {qname.localname!r} is not supported",
                reason=Reason.UNKNOWN_OPERATION,
                error_type="protocol",
            )
        module, handler = entry
        if not self.nacm.may_exec(session.groups, module, qname.localname):
            raise RpcError(
                "access-denied",
                f"{qname.localname} is not permitted",
                reason=Reason.ACCESS_DENIED,
                error_type="protocol",
            )
        return handler(session, op)

    # ----------------------------------------------------------------------------------------------------
    # reading
    # ----------------------------------------------------------------------------------------------------

    def _reply_data(
        self, session: Session, data: etree._Element, filter_el: etree._Element | None
    ) -> etree._Element:
        self.nacm.prune_read(data, session.groups, self.schema)
        selected = apply_filter(data, filter_el, self.schema)
        out = etree.Element(f"{{{NC_NS}}}data", nsmap={None: NC_NS})
        out.extend(list(selected))
        return out

    def _config_data(self, source: str, mode: str) -> etree._Element:
        """A datastore's content as an RFC 6243 mode shows it (defaults come before NACM and the filter, so
        a filter can select a default and NACM hides what it must)."""
        data = self.datastores.snapshot(source)
        if mode != "explicit":
            shown = self.schema.with_defaults(list(data), mode)
            data = etree.Element(f"{{{NC_NS}}}data", nsmap={None: NC_NS})
            data.extend(shown)
        return data

    def get_config(self, session: Session, op: etree._Element) -> etree._Element:
        params = _params(op, {"source", "filter"}, augmented=_WITH_DEFAULTS)
        if "source" not in params:
            raise missing_element("source", "get-config needs a source")
        source = _datastore_name(params["source"], TARGETS)
        mode = _text_option(params, "with-defaults", _WD_MODES, BASIC_MODE)
        return self._reply_data(session, self._config_data(source, mode), params.get("filter"))

    def get(self, session: Session, op: etree._Element) -> etree._Element:
        params = _params(op, {"filter"}, augmented=_WITH_DEFAULTS)
        mode = _text_option(params, "with-defaults", _WD_MODES, BASIC_MODE)
        data = self._config_data("running", mode)
        paths = self._state_paths(params.get("filter"))
        if paths != []:
            try:
                state = self.runtime.get_state(paths)
            except (RuntimeRefused, RuntimeUnavailable) as exc:
                raise runtime_error(exc) from None
            merge_tree(data, self.schema.state_to_xml(state, mode), self.schema)
        merge_tree(data, self.schema.state_to_xml(self._schemas_state, mode), self.schema)
        return self._reply_data(session, data, params.get("filter"))

    def _state_paths(self, filter_el: etree._Element | None) -> list[str] | None:
        """The top-level nodes a subtree filter names, so the runtime collects only those (None: all;
        []: the filter names only this server's own state, and the runtime is not asked)."""
        if filter_el is None or filter_spec(filter_el)[0] != "subtree":
            return None
        modules = {ns: module for module, ns in self.schema.namespaces.items()}
        paths: list[str] = []
        own = False
        for selector in filter_el:
            if not isinstance(selector.tag, str):
                continue
            qname = etree.QName(selector)
            module = modules.get(qname.namespace or "")
            if module is None:
                return None  # an un-namespaced or foreign selector: ask for everything
            if module in self.schema.server_modules:
                own = True
                continue
            paths.append(f"{module}:{qname.localname}")
        return paths if paths or own else None

    def get_schema(self, session: Session, op: etree._Element) -> etree._Element:
        """RFC 6022 get-schema: a read of a module's text, authorised like get by NACM exec alone."""
        params = _params(op, {"identifier", "version", "format"}, ns=MON_NS)
        source = find_schema(
            self.schema.sources, params.get("identifier"), params.get("version"), params.get("format")
        )
        return schema_reply(source)

    # ----------------------------------------------------------------------------------------------------
    # changing
    # ----------------------------------------------------------------------------------------------------

    def edit_config(self, session: Session, op: etree._Element) -> etree._Element:
        params = _params(op, {"target", "default-operation", "test-option", "error-option", "config", "url"})
        if "target" not in params:
            raise missing_element("target", "edit-config needs a target")
        if "url" in params:
            raise RpcError(
                "operation-not-supported",
                ":url is not supported",
                reason=Reason.UNKNOWN_OPERATION,
                error_type="protocol",
            )
        if "config" not in params:
            raise missing_element("config", "edit-config needs a config")
        target = _datastore_name(params["target"], TARGETS)
        default_op = _text_option(params, "default-operation", DEFAULT_OPERATIONS, "merge")
        test_option = _text_option(params, "test-option", TEST_OPTIONS, "test-then-set")
        _text_option(params, "error-option", ERROR_OPTIONS, "stop-on-error")
        self.datastores.edit(session.actor, session.groups, target, params["config"], default_op, test_option)
        return _ok()

    def _source_data(self, param: etree._Element) -> etree._Element:
        children = [c for c in param if isinstance(c.tag, str)]
        if len(children) == 1 and etree.QName(children[0]).localname == "config":
            return copy.deepcopy(children[0])
        name = _datastore_name(param, (*TARGETS, "config"))
        return self.datastores.snapshot(name)

    def copy_config(self, session: Session, op: etree._Element) -> etree._Element:
        """Datastore to datastore copies what clients set; RFC 6243's with-defaults parameter only shapes a
        copy to a URL, which this server has no :url for, so its value is checked and has no effect."""
        params = _params(op, {"target", "source"}, augmented=_WITH_DEFAULTS)
        _text_option(params, "with-defaults", _WD_MODES, BASIC_MODE)
        for needed in ("target", "source"):
            if needed not in params:
                raise missing_element(needed, f"copy-config needs a {needed}")
        target = _datastore_name(params["target"], TARGETS)
        source = self._source_data(params["source"])
        self.datastores.replace(session.actor, session.groups, target, source)
        return _ok()

    def commit(self, session: Session, op: etree._Element) -> etree._Element:
        """commit with RFC 6241 section 8.4's parameters (confirmed, confirm-timeout, persist, persist-id)."""
        params = _params(op, {"confirmed", "confirm-timeout", "persist", "persist-id"})
        confirmed = "confirmed" in params
        if confirmed and _leaf_text(params["confirmed"]).strip():
            raise bad_element("confirmed", "confirmed is an empty leaf")
        for needs_confirmed in ("confirm-timeout", "persist"):
            if needs_confirmed in params and not confirmed:
                raise missing_element("confirmed", f"{needs_confirmed} is a parameter of a confirmed commit")
        persist = params.get("persist")
        persist_id = params.get("persist-id")
        self.datastores.commit(
            session.actor,
            confirmed=confirmed,
            timeout=_confirm_timeout(params.get("confirm-timeout")),
            persist=None if persist is None else _leaf_text(persist),
            persist_id=None if persist_id is None else _leaf_text(persist_id),
        )
        return _ok()

    def cancel_commit(self, session: Session, op: etree._Element) -> etree._Element:
        params = _params(op, {"persist-id"})
        persist_id = params.get("persist-id")
        self.datastores.cancel_commit(session.actor, None if persist_id is None else _leaf_text(persist_id))
        return _ok()

    def discard_changes(self, session: Session, op: etree._Element) -> etree._Element:
        _params(op, set())
        self.datastores.discard_changes(session.sid)
        return _ok()

    def validate(self, session: Session, op: etree._Element) -> etree._Element:
        params = _params(op, {"source"})
        if "source" not in params:
            raise missing_element("source", "validate needs a source")
        self.datastores.validate(self._source_data(params["source"]))
        return _ok()

    def lock(self, session: Session, op: etree._Element) -> etree._Element:
        params = _params(op, {"target"})
        if "target" not in params:
            raise missing_element("target", "lock needs a target")
        self.datastores.lock(_datastore_name(params["target"], TARGETS), session.sid)
        return _ok()

    def unlock(self, session: Session, op: etree._Element) -> etree._Element:
        params = _params(op, {"target"})
        if "target" not in params:
            raise missing_element("target", "unlock needs a target")
        self.datastores.unlock(_datastore_name(params["target"], TARGETS), session.sid)
        return _ok()

    # ----------------------------------------------------------------------------------------------------
    # sessions and notifications
    # ----------------------------------------------------------------------------------------------------

    def close_session(self, session: Session, op: etree._Element) -> etree._Element:
        _params(op, set())
        return _ok()  # the session closes itself after sending this reply

    def kill_session(self, session: Session, op: etree._Element) -> etree._Element:
        params = _params(op, {"session-id"})
        if "session-id" not in params:
            raise missing_element("session-id", "kill-session needs a session-id")
        text = (params["session-id"].text or "").strip()
        if not text.isdigit():
            raise invalid_value("session-id must be a number")
        victim = int(text)
        if victim == session.sid:
            raise invalid_value("a session cannot kill itself; use close-session")
        if not self.kill(victim, session.sid):
            raise invalid_value(f"no session {victim}")
        return _ok()

    def create_subscription(self, session: Session, op: etree._Element) -> etree._Element:
        session.after_reply(self.hub.subscribe(session, op))
        return _ok()
