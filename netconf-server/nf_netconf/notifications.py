"""RFC 5277 notifications: create-subscription on the NETCONF stream, runtime events forwarded to subscribers.

No replay (startTime is refused), one subscription per session, optional subtree/xpath filter on the
notification content. Events arrive from the runtime's event thread and are sent with the session's send
lock held, so they never interleave with a reply.
"""

from __future__ import annotations

import datetime
import logging
import threading
from typing import TYPE_CHECKING, Any

from lxml import etree

from nf_netconf.errors import Reason, RpcError
from nf_netconf.filters import apply_filter, filter_spec
from nf_netconf.nacm import Nacm
from nf_netconf.schema import NC_NS, Schema

if TYPE_CHECKING:
    from nf_netconf.session import Session

log = logging.getLogger(__name__)

NOTIF_NS = "urn:ietf:params:xml:ns:netconf:notification:1.0"
STREAM = "NETCONF"


class NotificationHub:
    def __init__(self, schema: Schema, nacm: Nacm) -> None:
        self.schema = schema
        self.nacm = nacm
        self._lock = threading.Lock()
        self._subscribers: dict[int, tuple[Session, etree._Element | None]] = {}
        self.sent = 0
        self.dropped = 0

    def subscribe(self, session: Session, request: etree._Element) -> None:
        stream = STREAM
        filter_el: etree._Element | None = None
        for child in request:
            if not isinstance(child.tag, str):
                continue
            name = etree.QName(child).localname
            if etree.QName(child).namespace != NOTIF_NS:
                raise RpcError(
                    "unknown-element",
                    f"unknown parameter {name!r}",
                    reason=Reason.UNKNOWN_ELEMENT,
                    error_type="protocol",
                    info={"bad-element": name},
                )
            if name == "stream":
                stream = (child.text or "").strip()
            elif name == "filter":
                filter_spec(child)  # refuses a bad filter now rather than at the first event
                filter_el = child
            elif name == "startTime":
                raise RpcError(
                    "operation-failed",
                    "replay is not supported (no startTime)",
                    reason=Reason.INVALID_VALUE,
                )
            elif name == "stopTime":
                raise RpcError(
                    "bad-element",
                    "stopTime needs startTime, and replay is not supported",
                    reason=Reason.BAD_ELEMENT,
                    error_type="protocol",
                    info={"bad-element": "stopTime"},
                )
            else:
                raise RpcError(
                    "unknown-element",
                    f"unknown parameter {name!r}",
                    reason=Reason.UNKNOWN_ELEMENT,
                    error_type="protocol",
                    info={"bad-element": name},
                )
        if stream != STREAM:
            raise RpcError(
                "invalid-value",
                f"unknown stream {stream!r}; only NETCONF exists",
                reason=Reason.INVALID_VALUE,
            )
        with self._lock:
            if session.sid in self._subscribers:
                raise RpcError(
                    "operation-failed", "this session already has a subscription", reason=Reason.INVALID_VALUE
                )
            self._subscribers[session.sid] = (session, filter_el)

    def unsubscribe(self, session: Session) -> None:
        with self._lock:
            self._subscribers.pop(session.sid, None)

    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def publish(self, event: dict[str, Any]) -> None:
        """Forward one runtime event (docs/control-socket.md "Events") to every subscriber it passes."""
        name = event.get("event")
        data = event.get("data", {})
        if not isinstance(name, str) or not isinstance(data, dict):
            raise ValueError("an event needs a string 'event' and an object 'data'")
        content = self.schema.notification_to_xml(name, data)
        event_time = event.get("time")
        if not isinstance(event_time, str):
            event_time = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        with self._lock:
            targets = list(self._subscribers.values())
        module = name.partition(":")[0]
        for session, filter_el in targets:
            if not self.nacm.may_receive(session.groups, module):
                continue
            if filter_el is not None:
                holder = etree.Element(f"{{{NC_NS}}}data")
                holder.append(etree.fromstring(etree.tostring(content)))
                selected = apply_filter(holder, filter_el, self.schema)
                if len(selected) == 0:
                    continue
                body = selected[0]
            else:
                body = etree.fromstring(etree.tostring(content))
            nsmap: dict[str | None, str] = {None: NOTIF_NS}
            nsmap.update(self.schema.xml_prefixes)
            notification = etree.Element(f"{{{NOTIF_NS}}}notification", nsmap=nsmap)
            etree.SubElement(notification, f"{{{NOTIF_NS}}}eventTime").text = event_time
            notification.append(body)
            try:
                session.send_element(notification)
                self.sent += 1
            except Exception as exc:  # a dead session must not stop delivery to the others
                self.dropped += 1
                log.info("dropping subscription of session %d: %s", session.sid, type(exc).__name__)
                self.unsubscribe(session)
