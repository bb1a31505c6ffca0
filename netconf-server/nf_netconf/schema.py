"""The YANG schema as the server needs it: libyang validation, XML <-> RFC 7951 JSON, and a node index.

Every conversion goes through libyang, never by hand, so what the runtime receives is exactly what the YANG
modules define. The index (`NodeInfo`) gives the edit engine, the filters and NACM what they need in one
lookup per element: list keys, config or state, secret (nacm:default-deny-all) and the data path.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libyang
import libyang.data
import libyang.log
from libyang.util import c2str
from lxml import etree

from nf_netconf.errors import Reason, RpcError
from nf_netconf.with_defaults import WD_MODULE, retag

NACM_MODULE = "ietf-netconf-acm"
NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
DEFAULT_MODULES = ("twamp-nf-twamp", "twamp-nf-ike", "twamp-nf-ike-binding")
# Modules of the NETCONF server itself (RFC 6022 state, RFC 6243 default marks, RFC 6470 notifications): in
# the context for their data, annotations and notifications, not the runtime's.
SERVER_MODULES = ("ietf-netconf-monitoring", WD_MODULE, "ietf-netconf-notifications")

_LOCATION = re.compile(r'(?:Data|Schema) location "([^"]*)"')
_SECRET_MESSAGE = "invalid value for a secret leaf (the value is not shown)"


@dataclass
class NodeInfo:
    """One schema data node: what edit, filter and NACM need to know about an element."""

    tag: str  # Clark notation {namespace}name
    name: str
    module: str
    kind: str  # container, list, leaf, leaf-list, anydata
    path: str  # data path without predicates, module-qualified where the module changes
    config: bool
    secret: bool
    keys: tuple[str, ...] = ()
    children: dict[str, NodeInfo] = field(default_factory=dict)
    default: str | None = None  # a leaf's YANG default, canonical text
    user_ordered: bool = False  # an ordered-by user list or leaf-list: edits may say where entries go

    def child(self, tag: str) -> NodeInfo | None:
        return self.children.get(tag)


@dataclass(frozen=True)
class ModuleSource:
    """One module's YANG text as libyang loaded it, for get-schema (RFC 6022)."""

    name: str
    revision: str  # "" when the module has no revision statement
    namespace: str
    text: str = field(repr=False)


def strip_predicates(path: str) -> str:
    """'/a:b[k='x]']/c' -> '/a:b/c', honouring quotes inside predicates."""
    out: list[str] = []
    depth = 0
    quote = ""
    for ch in path:
        if quote:
            if ch == quote:
                quote = ""
            continue
        if depth and ch in "'\"":
            quote = ch
            continue
        if ch == "[":
            depth += 1
            continue
        if ch == "]" and depth:
            depth -= 1
            continue
        if not depth:
            out.append(ch)
    return "".join(out)


class Schema:
    """A libyang context over the twamp-nf modules, guarded by one lock (libyang errors are per context)."""

    def __init__(
        self,
        search_dirs: Iterable[str],
        modules: Iterable[str] = DEFAULT_MODULES,
        server_modules: Iterable[str] = SERVER_MODULES,
    ) -> None:
        libyang.configure_logging(True, logging.ERROR)
        # Errors are stored with their data path for our messages; libyang's log callback is switched off:
        # its lines quote rejected values (a secret among them), and it cannot decode a value that libyang
        # cut inside a multi-octet character.
        ly_lib: Any = getattr(libyang.log, "lib")  # noqa: B009 (the CFFI library is untyped)
        ly_lib.ly_log_options(ly_lib.LY_LOSTORE)
        ly_log = logging.getLogger("libyang")
        ly_log.propagate = False
        self._lock = threading.Lock()
        self._ctx = libyang.Context(":".join(search_dirs))
        self.modules = tuple(modules)  # the runtime's modules: advertised with revision and features
        self.server_modules = tuple(m for m in server_modules if m not in self.modules)
        self.namespaces: dict[str, str] = {}
        self.roots: dict[str, NodeInfo] = {}
        self.notifications: dict[str, str] = {}  # Clark tag -> module:name
        self.revisions: dict[str, str] = {}
        # YANG prefix -> namespace: identityref values are printed as "prefix:identity" text, which only
        # resolves if the prefix is declared on an ancestor; every serialized root declares them all.
        self.xml_prefixes: dict[str, str] = {}
        self.features: dict[str, list[str]] = {}
        for name in self.modules:
            module = self._ctx.load_module(name)
            module.feature_enable_all()
        for name in self.server_modules:
            self._ctx.load_module(name)
        loaded = self.modules + self.server_modules
        for name in loaded:
            module = self._ctx.get_module(name)
            ns = c2str(module.cdata.ns)
            self.namespaces[name] = ns
            self.xml_prefixes[module.prefix()] = ns
            revision = c2str(module.cdata.revision) if module.cdata.revision else None
            if revision:
                self.revisions[name] = revision
            if name in self.modules:
                self.features[name] = sorted(f.name() for f in module.features())
        self.sources = self._module_sources(loaded)
        for name in loaded:
            module = self._ctx.get_module(name)
            for snode in module.children():
                if snode.nodetype() == libyang.SNode.NOTIF:
                    self.notifications[f"{{{self.namespaces[name]}}}{snode.name()}"] = (
                        f"{name}:{snode.name()}"
                    )
                    continue
                info = self._index(snode, None)
                if info is not None:
                    self.roots[info.tag] = info
        self.secret_paths = frozenset(info.path for info in self.walk() if info.secret)

    def _module_sources(self, names: tuple[str, ...]) -> tuple[ModuleSource, ...]:
        """The loaded modules and every module they import, transitively, each with the text libyang read:
        the file it loaded (our yang/, pyang's IETF set), or, for a module libyang carries built in
        (ietf-inet-types, ietf-yang-types), libyang's own print of it, as no file was read."""
        found: dict[str, ModuleSource] = {}
        pending = [self._ctx.get_module(name) for name in names]
        while pending:
            module = pending.pop()
            name = module.name()
            if name in found:
                continue
            path = module.filepath()
            text = Path(path).read_text(encoding="utf-8") if path else _text(module.print_mem("yang"))
            cdata = module.cdata
            found[name] = ModuleSource(
                name=name,
                revision=c2str(cdata.revision) if cdata.revision else "",
                namespace=c2str(cdata.ns),
                text=text,
            )
            # the binding's Import.module is the importing module; the imported one is in the C struct
            pending.extend(libyang.Module(self._ctx, imp.cdata.module) for imp in module.imports())
        return tuple(sorted(found.values(), key=lambda source: source.name))

    # ----------------------------------------------------------------------------------------------------
    # index
    # ----------------------------------------------------------------------------------------------------

    def _index(self, snode: Any, parent: NodeInfo | None) -> NodeInfo | None:
        kinds = {
            libyang.SNode.CONTAINER: "container",
            libyang.SNode.LIST: "list",
            libyang.SNode.LEAF: "leaf",
            libyang.SNode.LEAFLIST: "leaf-list",
            libyang.SNode.ANYDATA: "anydata",
            libyang.SNode.ANYXML: "anydata",
        }
        kind = kinds.get(snode.nodetype())
        if kind is None:
            return None
        module = snode.module().name()
        ns = self.namespaces.get(module) or c2str(snode.module().cdata.ns)
        name = snode.name()
        step = f"{module}:{name}" if parent is None or parent.module != module else name
        path = (parent.path if parent else "") + "/" + step
        secret = any(
            ext.name() == "default-deny-all" and ext.module().name() == NACM_MODULE
            for ext in snode.extensions()
        )
        info = NodeInfo(
            tag=f"{{{ns}}}{name}",
            name=name,
            module=module,
            kind=kind,
            path=path,
            config=not snode.config_false(),
            secret=secret,
        )
        if kind == "leaf":
            default = snode.default()
            if default is not None:
                info.default = str(default).lower() if isinstance(default, bool) else str(default)
        if kind in ("list", "leaf-list"):
            info.user_ordered = snode.ordered()
        if kind == "list":
            info.keys = tuple(f"{{{ns}}}{key.name()}" for key in snode.keys())  # noqa: SIM118 (SList.keys)
        if kind in ("container", "list"):
            for child in snode.children():
                child_info = self._index(child, info)
                if child_info is not None:
                    info.children[child_info.tag] = child_info
        return info

    def walk(self) -> Iterator[NodeInfo]:
        stack = list(self.roots.values())
        while stack:
            info = stack.pop()
            yield info
            stack.extend(info.children.values())

    def lookup(self, parent: NodeInfo | None, tag: str) -> NodeInfo | None:
        if parent is None:
            return self.roots.get(tag)
        return parent.child(tag)

    def prefixes(self) -> dict[str, str]:
        """Module name -> namespace, the prefixes used in error-path and NACM paths."""
        return dict(self.namespaces)

    # ----------------------------------------------------------------------------------------------------
    # conversions (all through libyang)
    # ----------------------------------------------------------------------------------------------------

    def check_config(self, roots: list[etree._Element], *, full: bool) -> tuple[list[etree._Element], str]:
        """Parse config data strictly (and, when `full`, validate it); return libyang's canonical XML roots
        and the RFC 7951 JSON text. Raise RpcError naming the offending node, never a secret value."""
        text = "".join(etree.tostring(root, encoding="unicode") for root in roots)
        secrets = [el.text for root in roots for el in self._secret_elements(root) if el.text]
        with self._lock:
            try:
                dnode = self._ctx.parse_data_mem(
                    text,
                    "xml",
                    no_state=True,
                    strict=True,
                    parse_only=not full,
                    validate_present=True,
                )
            except libyang.LibyangError as exc:
                raise self._rpc_error(str(exc), secrets) from None
            except UnicodeDecodeError:  # libyang cut a multi-octet character when quoting the bad input
                raise RpcError(
                    "invalid-value", "invalid value (not shown)", reason=Reason.INVALID_VALUE
                ) from None
            if dnode is None:
                return [], "{}"
            try:
                xml_text = dnode.print_mem("xml", with_siblings=True, pretty=False)
                json_text = dnode.print_mem("json", with_siblings=True, pretty=False)
            finally:
                dnode.free()
        # nothing to print (only empty non-presence containers) comes back as None
        return _xml_roots(_text(xml_text)), _text(json_text) or "{}"

    def state_to_xml(self, state: dict[str, Any], with_defaults: str = "explicit") -> list[etree._Element]:
        """The runtime's get-state JSON as XML roots (parsed, not validated: it is config-false data only),
        its defaults reported as an RFC 6243 mode asks."""
        if not state:
            return []
        with self._lock:
            try:
                dnode = self._ctx.parse_data_mem(json.dumps(state), "json", strict=True, parse_only=True)
            except (libyang.LibyangError, UnicodeDecodeError) as exc:
                raise RpcError(
                    "operation-failed",
                    "the runtime's state does not match the YANG modules: " + _first_message(str(exc)),
                    reason=Reason.INTERNAL_ERROR,
                ) from None
            if dnode is None:
                return []
            if with_defaults in ("report-all", "report-all-tagged"):
                dnode.add_defaults(no_config=True)
            return _shown(dnode, with_defaults)

    def with_defaults(self, roots: list[etree._Element], mode: str) -> list[etree._Element]:
        """Stored config (what clients set) as an RFC 6243 retrieval mode shows it. Validation creates the
        implicit defaults with their `when` conditions evaluated; a candidate that does not validate yet
        gets them without that evaluation."""
        if mode == "explicit" or not roots:
            return roots
        text = "".join(etree.tostring(root, encoding="unicode") for root in roots)
        with self._lock:
            try:
                dnode = self._ctx.parse_data_mem(
                    text, "xml", no_state=True, strict=True, validate_present=True
                )
            except (libyang.LibyangError, UnicodeDecodeError):  # the latter: libyang cut a character
                try:
                    dnode = self._ctx.parse_data_mem(text, "xml", no_state=True, strict=True, parse_only=True)
                except (libyang.LibyangError, UnicodeDecodeError):  # stored data parsed before: never quote
                    raise RpcError(
                        "operation-failed", "stored data does not parse", reason=Reason.INTERNAL_ERROR
                    ) from None
                if dnode is not None:
                    dnode.add_defaults(no_state=True)
            if dnode is None:
                return roots
            return _shown(dnode, mode)

    def notification_to_xml(self, name: str, data: dict[str, Any]) -> etree._Element:
        """A runtime event (module:notification + RFC 7951 content) as the notification's XML element."""
        with self._lock:
            try:
                dnode = self._ctx.parse_op_mem(
                    "json", json.dumps({name: data}), dtype=libyang.DataType.NOTIF_YANG
                )
            except (libyang.LibyangError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"event {name!r} does not match the YANG modules: " + _first_message(str(exc))
                ) from None
            try:
                xml_text = dnode.print_mem("xml", pretty=False)
            finally:
                dnode.free()
        roots = _xml_roots(_text(xml_text))
        if len(roots) != 1:
            raise ValueError(f"event {name!r} printed as {len(roots)} elements")
        return roots[0]

    # ----------------------------------------------------------------------------------------------------
    # secrets and errors
    # ----------------------------------------------------------------------------------------------------

    def _secret_elements(self, root: etree._Element) -> Iterator[etree._Element]:
        def visit(el: etree._Element, parent: NodeInfo | None) -> Iterator[etree._Element]:
            if not isinstance(el.tag, str):
                return
            info = self.lookup(parent, el.tag)
            if info is None:
                return
            if info.secret:
                yield el
            for child in el:
                yield from visit(child, info)

        yield from visit(root, None)

    def _rpc_error(self, text: str, secrets: list[str]) -> RpcError:
        message = _first_message(text)
        match = _LOCATION.search(text)
        path = match.group(1) if match else None
        bare = strip_predicates(path) if path else None
        if bare in self.secret_paths and ('"' in message or "'" in message):
            # libyang's generic messages quote the value; the modules' own error-messages for secret
            # leaves (e.g. the PSK length) do not, and are kept
            message = _SECRET_MESSAGE
        for secret in secrets:
            if len(secret) >= 4 and secret in message:
                message = message.replace(secret, "***")
        if path and secrets and any(s in path for s in secrets if len(s) >= 4):
            path = None
        if "not found as a child" in message or message.startswith("Unknown element"):
            element = re.search(r'Node "([^"]+)"', message)
            return RpcError(
                "unknown-element",
                message,
                reason=Reason.UNKNOWN_ELEMENT,
                path=path,
                info={"bad-element": element.group(1) if element else ""},
            )
        if (
            message.startswith("Mandatory node")
            or "Invalid leafref" in message
            or "required instance" in message
        ):
            return RpcError("data-missing", message, reason=Reason.DATA_MISSING, path=path)
        if "state data" in message.lower():
            return RpcError(
                "invalid-value", message, reason=Reason.INVALID_VALUE, path=path, error_type="protocol"
            )
        return RpcError("invalid-value", message, reason=Reason.INVALID_VALUE, path=path)


def _text(printed: str | bytes | None) -> str:
    """libyang's print_mem result for the text formats: str, or None when there was nothing to print."""
    return printed if isinstance(printed, str) else ""


_WD_FLAGS = {  # RFC 6243 mode -> libyang printer option
    "explicit": "LYD_PRINT_WD_EXPLICIT",
    "report-all": "LYD_PRINT_WD_ALL",
    "report-all-tagged": "LYD_PRINT_WD_ALL_TAG",
    "trim": "LYD_PRINT_WD_TRIM",
}


def _shown(dnode: Any, mode: str) -> list[etree._Element]:
    """A parsed tree (freed here) as XML roots in a with-defaults mode, default marks in RFC 6243's form."""
    try:
        roots = _xml_roots(_print_xml(dnode, mode))
    finally:
        dnode.free()
    retag(roots)
    return roots


def _print_xml(dnode: Any, mode: str) -> str:
    """XML of a tree and its siblings in a with-defaults mode (the binding's print_mem has no tagged mode)."""
    lib: Any = getattr(libyang.data, "lib")  # noqa: B009 (the CFFI library is untyped)
    ffi: Any = getattr(libyang.data, "ffi")  # noqa: B009
    flags = lib.LYD_PRINT_WITHSIBLINGS | lib.LYD_PRINT_SHRINK | getattr(lib, _WD_FLAGS[mode])
    out = ffi.new("char **")
    if lib.lyd_print_mem(out, dnode.cdata, lib.LYD_XML, flags) != lib.LY_SUCCESS:
        raise RpcError("operation-failed", "libyang could not print the data", reason=Reason.INTERNAL_ERROR)
    try:
        return _text(c2str(out[0])) if out[0] != ffi.NULL else ""
    finally:
        lib.free(out[0])


def _first_message(text: str) -> str:
    for prefix in ("failed to parse data tree: ", "failed to parse input data: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    match = _LOCATION.search(text)
    if match:
        text = text[: match.start()]
    return text.rstrip(" :.") + "."


def _xml_roots(xml_text: str) -> list[etree._Element]:
    if not xml_text.strip():
        return []
    wrapper = etree.fromstring(f'<data xmlns="{NC_NS}">{xml_text}</data>'.encode(), parser=safe_parser())
    return list(wrapper)


def safe_parser() -> etree.XMLParser:
    """A parser for untrusted XML: no DTD, no entity expansion, no network, no huge trees."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
