"""NETCONF rpc-errors (RFC 6241 appendix A) and the per-reason counters of refused input."""

from __future__ import annotations

import enum
import threading
from collections import Counter

from lxml import etree

NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"


class Reason(enum.Enum):
    """Why a request was refused: one counter each, so an operator can tell floods from typos."""

    MALFORMED_MESSAGE = "malformed-message"
    FRAMING_ERROR = "framing-error"
    TOO_BIG = "too-big"
    UNKNOWN_OPERATION = "unknown-operation"
    UNKNOWN_ELEMENT = "unknown-element"
    BAD_ELEMENT = "bad-element"
    MISSING_ELEMENT = "missing-element"
    INVALID_VALUE = "invalid-value"
    DATA_EXISTS = "data-exists"
    DATA_MISSING = "data-missing"
    ACCESS_DENIED = "access-denied"
    LOCK_DENIED = "lock-denied"
    IN_USE = "in-use"
    CONFIRMED_COMMIT = "confirmed-commit"  # none pending, another session's, bad persist-id, running reserved
    RUNTIME_REFUSED = "runtime-refused"
    RUNTIME_UNAVAILABLE = "runtime-unavailable"
    SESSION_LIMIT = "session-limit"
    AUTH_FAILED = "auth-failed"
    INTERNAL_ERROR = "internal-error"


class Counters:
    """Thread-safe counts per Reason (sessions run in their own threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[Reason] = Counter()

    def count(self, reason: Reason) -> None:
        with self._lock:
            self._counts[reason] += 1

    def get(self, reason: Reason) -> int:
        with self._lock:
            return self._counts[reason]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {reason.value: n for reason, n in self._counts.items()}


class RpcError(Exception):
    """One rpc-error: tag, type, path and message exactly as the client will see them.

    The message must never carry a secret value: it is sent to the client and may be logged.
    """

    def __init__(
        self,
        tag: str,
        message: str,
        *,
        reason: Reason,
        error_type: str = "application",
        path: str | None = None,
        app_tag: str | None = None,
        info: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{tag}: {message}" + (f" at {path}" if path else ""))
        self.tag = tag
        self.message = message
        self.reason = reason
        self.error_type = error_type
        self.path = path
        self.app_tag = app_tag
        self.info = dict(info or {})

    def to_xml(self, namespaces: dict[str, str]) -> etree._Element:
        """The rpc-error element; `namespaces` binds the prefixes used in error-path (module names)."""
        err = etree.Element(f"{{{NC_NS}}}rpc-error", nsmap={None: NC_NS})
        etree.SubElement(err, f"{{{NC_NS}}}error-type").text = self.error_type
        etree.SubElement(err, f"{{{NC_NS}}}error-tag").text = self.tag
        etree.SubElement(err, f"{{{NC_NS}}}error-severity").text = "error"
        if self.app_tag:
            etree.SubElement(err, f"{{{NC_NS}}}error-app-tag").text = self.app_tag
        if self.path:
            used = {p: ns for p, ns in namespaces.items() if f"/{p}:" in self.path}
            path_el = etree.SubElement(err, f"{{{NC_NS}}}error-path", nsmap=used)
            path_el.text = self.path
        msg = etree.SubElement(err, f"{{{NC_NS}}}error-message")
        msg.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        msg.text = self.message
        if self.info:
            info = etree.SubElement(err, f"{{{NC_NS}}}error-info")
            for name, value in self.info.items():
                etree.SubElement(info, f"{{{NC_NS}}}{name}").text = value
        return err


def malformed(message: str) -> RpcError:
    return RpcError("malformed-message", message, reason=Reason.MALFORMED_MESSAGE, error_type="rpc")


def unknown_element(element: str, message: str, path: str | None = None) -> RpcError:
    return RpcError(
        "unknown-element",
        message,
        reason=Reason.UNKNOWN_ELEMENT,
        error_type="protocol" if path is None else "application",
        path=path,
        info={"bad-element": element},
    )


def missing_element(element: str, message: str) -> RpcError:
    return RpcError(
        "missing-element",
        message,
        reason=Reason.MISSING_ELEMENT,
        error_type="protocol",
        info={"bad-element": element},
    )


def bad_element(element: str, message: str) -> RpcError:
    return RpcError(
        "bad-element",
        message,
        reason=Reason.BAD_ELEMENT,
        error_type="protocol",
        info={"bad-element": element},
    )


def bad_attribute(
    attribute: str,
    element: str,
    message: str,
    *,
    reason: Reason = Reason.INVALID_VALUE,
    error_type: str = "application",
    app_tag: str | None = None,
) -> RpcError:
    return RpcError(
        "bad-attribute",
        message,
        reason=reason,
        error_type=error_type,
        app_tag=app_tag,
        info={"bad-attribute": attribute, "bad-element": element},
    )


def invalid_value(message: str, path: str | None = None) -> RpcError:
    return RpcError("invalid-value", message, reason=Reason.INVALID_VALUE, path=path)
