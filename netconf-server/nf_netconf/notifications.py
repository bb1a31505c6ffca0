"""RFC 5277 notifications: create-subscription on the NETCONF stream, runtime events forwarded to subscribers,
and replay of recent events so an OSS that reconnects after an outage gets the results it missed.

Every published event is kept in a bounded replay log: the last `replay_limit` events (0 turns replay off),
optionally none older than `replay_max_age` seconds. The oldest kept eventTime is where a replay can start at
the earliest (the stream's replayLogCreationTime, or replayLogAgedTime once events were dropped, in RFC 5277
s3.2.1 terms; the stream list itself is not served). A subscription with startTime gets the logged events
from startTime (up to stopTime), then <replayComplete/>, then live events; with stopTime, a timer sends
<notificationComplete/> at stopTime, even if no event comes, and ends the subscription (the session may
subscribe again). Filter and NACM apply to replayed and live events alike; the two markers always pass.

No loss, no duplicates, no overtaking: subscribe snapshots the log and registers the subscription under one
lock, so each event is either in the snapshot or queued for the subscription, never both. Each subscription
has its own queue and sender thread, which replays first and then drains the queue, so no live event
overtakes the replay and publishing never sends: neither the runtime's event thread nor a session changing
the configuration waits for a subscriber. A subscriber that stops reading has its queue bounded
(`max_queue`): past it the subscription ends and the session is dropped, to reconnect and replay.
Delivery starts only once the <ok/> to create-subscription is sent (Session.after_reply): until then live
events queue, so neither the replay nor a live event overtakes the reply.

One subscription per session; <filter> is taken in the notification namespace or, as ncclient sends it, the
base one. An event whose time is not an RFC 3339 date-time gets the time it arrived. Every send holds the
session's send lock, so a notification never interleaves with a reply.
"""

from __future__ import annotations

import collections
import datetime
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from lxml import etree

from nf_netconf.errors import Reason, RpcError, bad_element, missing_element
from nf_netconf.filters import apply_filter, filter_spec
from nf_netconf.nacm import Nacm
from nf_netconf.schema import NC_NS, Schema

if TYPE_CHECKING:
    from nf_netconf.session import Session

log = logging.getLogger(__name__)

BASE_MODULE = "ietf-netconf-notifications"  # RFC 6470: the server's own events
NOTIF_NS = "urn:ietf:params:xml:ns:netconf:notification:1.0"
NC_NOTIF_NS = "urn:ietf:params:xml:ns:netmod:notification"  # replayComplete, notificationComplete
STREAM = "NETCONF"

# RFC 3339 date-time (yang:date-and-time): fromisoformat alone also takes dates, week dates and naive times
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})", re.IGNORECASE)


def parse_date_time(text: str) -> datetime.datetime | None:
    """An RFC 3339 date-time with any offset, as an aware datetime; None when it is not one."""
    text = text.strip()
    if not _DATE_TIME.fullmatch(text):
        return None
    try:
        return datetime.datetime.fromisoformat(text.upper())
    except ValueError:  # month 13, second 60 and the like
        return None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _format(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Actor:
    """Who did something, as RFC 6470's common-session-parms report it (`source_host` None: not an IP)."""

    username: str
    session_id: int
    source_host: str | None = None

    def parms(self) -> dict[str, Any]:
        parms: dict[str, Any] = {"username": self.username, "session-id": self.session_id}
        if self.source_host is not None:
            parms["source-host"] = self.source_host
        return parms


def _base_event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"event": f"{BASE_MODULE}:{name}", "data": data}


def session_start(actor: Actor) -> dict[str, Any]:
    return _base_event("netconf-session-start", actor.parms())


def session_end(actor: Actor, reason: str, killed_by: int | None = None) -> dict[str, Any]:
    data = actor.parms()
    data["termination-reason"] = reason
    if reason == "killed" and killed_by is not None:
        data["killed-by"] = killed_by
    return _base_event("netconf-session-end", data)


def config_change(by: Actor | None, edits: list[tuple[str | None, str]]) -> dict[str, Any]:
    """`by` None: the server itself (a confirmed commit's rollback). Each edit is (instance-identifier or
    None when no path can name the node, operation): paths only, so no value (no secret) is ever carried."""
    changed_by: dict[str, Any] = {"server": [None]} if by is None else by.parms()
    entries = [
        {"operation": op} if target is None else {"target": target, "operation": op} for target, op in edits
    ]
    return _base_event(
        "netconf-config-change", {"changed-by": changed_by, "datastore": "running", "edit": entries}
    )


def confirmed_commit(event: str, by: Actor | None, timeout: float | None = None) -> dict[str, Any]:
    """start, extend (with the timeout in seconds), complete, cancel; timeout carries no session."""
    data: dict[str, Any] = {"confirm-event": event}
    if by is not None and event != "timeout":
        data.update(by.parms())
    if timeout is not None and event in ("start", "extend"):
        data["timeout"] = min(int(timeout), 2**32 - 1)
    return _base_event("netconf-confirmed-commit", data)


@dataclass(frozen=True)
class _Event:
    """One published event as the replay log keeps it; `content` is never modified after publish."""

    module: str
    content: etree._Element
    event_time: str
    when: datetime.datetime


class ReplayLog(NamedTuple):
    """What a replay can deliver now: `oldest` is the earliest eventTime still logged (None: nothing is);
    `aged` tells that older events were dropped (RFC 5277's replayLogAgedTime, not replayLogCreationTime)."""

    events: int
    oldest: datetime.datetime | None
    aged: bool


class _Complete:
    """Queue marker: send notificationComplete, then stop."""


_COMPLETE = _Complete()


class _Subscription:
    """One subscription's queue and the one thread that sends it, so a subscriber that stops reading (its
    SSH window full) holds up nobody but itself."""

    def __init__(
        self,
        session: Session,
        filter_el: etree._Element | None,
        stop: datetime.datetime | None,
        max_queue: int,
    ) -> None:
        self.session = session
        self.filter_el = filter_el
        self.stop = stop
        self.max_queue = max_queue
        self.lock = threading.Condition()
        self.queue: collections.deque[_Event | _Complete] = collections.deque()
        self.ended = False
        self.timer: threading.Timer | None = None

    def offer(self, item: _Event | _Complete) -> bool:
        """Called with the hub's lock held, so every subscription queues events in publish order; False when
        the queue is full (the subscriber is not reading)."""
        if isinstance(item, _Event) and self.stop is not None and item.when > self.stop:
            return True
        with self.lock:
            if self.ended:
                return True
            if len(self.queue) >= self.max_queue:
                return False
            self.queue.append(item)
            self.lock.notify()
            return True

    def next_item(self) -> _Event | _Complete | None:
        """The next item to send, waiting for one; None once the subscription has ended."""
        with self.lock:
            while not self.queue and not self.ended:
                self.lock.wait()
            return None if self.ended else self.queue.popleft()


class NotificationHub:
    def __init__(
        self,
        schema: Schema,
        nacm: Nacm,
        replay_limit: int = 1000,
        replay_max_age: float | None = None,
        max_queue: int = 10_000,
    ) -> None:
        if replay_limit < 0 or (replay_max_age is not None and replay_max_age <= 0) or max_queue < 1:
            raise ValueError("replay_limit must be 0 or more, replay_max_age and max_queue positive")
        self.schema = schema
        self.nacm = nacm
        self.replay_limit = replay_limit
        self.replay_max_age = replay_max_age
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._subscribers: dict[int, _Subscription] = {}
        self._log: collections.deque[_Event] = collections.deque(maxlen=replay_limit or None)
        self._aged = False  # an event has left the log (for its size or age)
        self.published = 0
        self.sent = 0
        self.dropped = 0

    # the replay log -----------------------------------------------------------------------------------------

    def _prune(self, now: datetime.datetime) -> None:
        if self.replay_max_age is not None:
            oldest = now - datetime.timedelta(seconds=self.replay_max_age)
            while self._log and self._log[0].when < oldest:
                self._log.popleft()
                self._aged = True

    def replay_log(self) -> ReplayLog:
        with self._lock:
            self._prune(_now())
            return ReplayLog(len(self._log), self._log[0].when if self._log else None, self._aged)

    # subscriptions ------------------------------------------------------------------------------------------

    def subscribe(self, session: Session, request: etree._Element) -> Callable[[], None]:
        """Registers the subscription (live events queue from now on) and returns what starts delivery: the
        caller runs it after the <ok/> reply, so no notification overtakes the reply."""
        stream = STREAM
        filter_el: etree._Element | None = None
        start: datetime.datetime | None = None
        stop: datetime.datetime | None = None
        for child in request:
            if not isinstance(child.tag, str):
                continue
            name = etree.QName(child).localname
            namespace = etree.QName(child).namespace
            # ncclient and others put <filter> in the base namespace, as in get and get-config
            if namespace != NOTIF_NS and not (name == "filter" and namespace == NC_NS):
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
            elif name in ("startTime", "stopTime"):
                moment = parse_date_time(child.text or "")
                if moment is None:
                    raise bad_element(name, f"{name} must be an RFC 3339 date-time with a time zone")
                if name == "startTime":
                    start = moment
                else:
                    stop = moment
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
        now = _now()
        if stop is not None and start is None:
            raise missing_element("stopTime", "stopTime needs a startTime")
        if start is not None:
            if self.replay_limit == 0:
                raise RpcError(
                    "operation-failed",
                    "replay is turned off on this server (no startTime)",
                    reason=Reason.INVALID_VALUE,
                    error_type="protocol",
                )
            if start > now:
                raise bad_element("startTime", "startTime is later than the current time")
            if stop is not None and stop < start:
                raise bad_element("stopTime", "stopTime is earlier than startTime")

        sub = _Subscription(session, filter_el, stop, self.max_queue)
        replay: list[_Event] = []
        with self._lock:
            if session.sid in self._subscribers:
                raise RpcError(
                    "operation-failed", "this session already has a subscription", reason=Reason.INVALID_VALUE
                )
            if start is not None:
                self._prune(now)
                replay = [e for e in self._log if e.when >= start and (stop is None or e.when <= stop)]
            if stop is not None and stop <= now:
                sub.queue.append(_COMPLETE)  # all of it lies in the log: replay, then end at once
            else:
                self._subscribers[session.sid] = sub
                if stop is not None:
                    wait = min((stop - now).total_seconds(), threading.TIMEOUT_MAX)  # year 9999 is legal
                    sub.timer = threading.Timer(wait, self._stop_time_reached, (sub,))
                    sub.timer.daemon = True
                    sub.timer.start()

        def sender() -> None:
            if start is not None:
                for event in replay:
                    if not self._deliver(sub, event):
                        return
                if not self._send_marker(sub, "replayComplete"):
                    return
            self._send_queued(sub)

        def start_delivery() -> None:
            threading.Thread(target=sender, name=f"netconf-notify-{session.sid}", daemon=True).start()

        return start_delivery

    def unsubscribe(self, session: Session) -> None:
        with self._lock:
            sub = self._subscribers.pop(session.sid, None)
        if sub is not None:
            self._end(sub)

    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def _end(self, sub: _Subscription) -> None:
        with sub.lock:
            sub.ended = True
            sub.queue.clear()
            sub.lock.notify()
        if sub.timer is not None:
            sub.timer.cancel()

    def _stop_time_reached(self, sub: _Subscription) -> None:
        with self._lock:
            if self._subscribers.get(sub.session.sid) is not sub:
                return  # unsubscribed meanwhile
            del self._subscribers[sub.session.sid]
            with sub.lock:
                sub.queue.append(_COMPLETE)  # past the queue bound too: the end must get through
                sub.lock.notify()

    # delivery -----------------------------------------------------------------------------------------------

    def publish(self, event: dict[str, Any]) -> None:
        """Log one runtime event (docs/control-socket.md "Events") and forward it to every subscriber it
        passes."""
        name = event.get("event")
        data = event.get("data", {})
        if not isinstance(name, str) or not isinstance(data, dict):
            raise ValueError("an event needs a string 'event' and an object 'data'")
        content = self.schema.notification_to_xml(name, data)
        now = _now()
        event_time = event.get("time")
        when = parse_date_time(event_time) if isinstance(event_time, str) else None
        if when is None or not isinstance(event_time, str):
            event_time, when = _format(now), now
        entry = _Event(name.partition(":")[0], content, event_time.strip(), when)
        with self._lock:
            self.published += 1
            if self.replay_limit:
                if len(self._log) == self.replay_limit:
                    self._aged = True
                self._log.append(entry)
                self._prune(now)
            stuck = [sub for sub in self._subscribers.values() if not sub.offer(entry)]
            for sub in stuck:
                del self._subscribers[sub.session.sid]
                self.dropped += 1
        for sub in stuck:
            self._end(sub)
            log.warning(
                "session %d reads no notifications (%d queued): subscription ended, session aborted",
                sub.session.sid,
                sub.max_queue,
            )
            sub.session.abort()

    def publish_server_events(self, events: list[dict[str, Any]]) -> None:
        """The server's own RFC 6470 events: one libyang refuses is a bug here, logged, never the caller's
        error (the change it reports has already taken effect)."""
        for event in events:
            try:
                self.publish(event)
            except ValueError as exc:
                log.error("base notification %s not sent: %s", event.get("event"), exc)

    def _send_queued(self, sub: _Subscription) -> None:
        """The subscription's sender thread, after any replay: the queue in order until the end."""
        while (item := sub.next_item()) is not None:
            if isinstance(item, _Complete):
                self._send_marker(sub, "notificationComplete")
                self._end(sub)
                return
            if not self._deliver(sub, item):
                return

    def _deliver(self, sub: _Subscription, event: _Event) -> bool:
        """Send one event if NACM and the filter let it through; False when the session is gone."""
        if not self.nacm.may_receive(sub.session.groups, event.module):
            return True
        if sub.filter_el is not None:
            holder = etree.Element(f"{{{NC_NS}}}data")
            holder.append(etree.fromstring(etree.tostring(event.content)))
            selected = apply_filter(holder, sub.filter_el, self.schema)
            if len(selected) == 0:
                return True
            body = selected[0]
        else:
            body = etree.fromstring(etree.tostring(event.content))
        return self._send(sub, event.event_time, body)

    def _send_marker(self, sub: _Subscription, name: str) -> bool:
        return self._send(
            sub, _format(_now()), etree.Element(f"{{{NC_NOTIF_NS}}}{name}", nsmap={None: NC_NOTIF_NS})
        )

    def _send(self, sub: _Subscription, event_time: str, body: etree._Element) -> bool:
        nsmap: dict[str | None, str] = {None: NOTIF_NS}
        nsmap.update(self.schema.xml_prefixes)
        notification = etree.Element(f"{{{NOTIF_NS}}}notification", nsmap=nsmap)
        etree.SubElement(notification, f"{{{NOTIF_NS}}}eventTime").text = event_time
        notification.append(body)
        try:
            sub.session.send_element(notification)
        except Exception as exc:  # a dead session must not stop delivery to the others
            with self._lock:
                if self._subscribers.get(sub.session.sid) is sub:  # else counted where it was ended
                    del self._subscribers[sub.session.sid]
                    self.dropped += 1
            log.info("dropping subscription of session %d: %s", sub.session.sid, type(exc).__name__)
            self._end(sub)
            return False
        with self._lock:
            self.sent += 1
        return True
