"""RFC 5277 replay on a real SSH NETCONF session: events the runtime sent before a subscription come back from
startTime (to stopTime), then replayComplete, then live events, once each and in order."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError
from ncclient.xml_ import to_ele

from tests.test_netconf_bad_input import RawSession, _Closer
from tests.test_netconf_harness import (
    IKE_NS,
    NC_NOTIF_NS,
    NC_NS,
    NCN_NS,
    NOTIF_NS,
    READER_PASSWORD,
    SERVER_CONFIG,
    TWAMP_NS,
    WAIT,
    Rig,
    rig,
    users_toml,
)

__all__ = ["rig"]

QUIET = 0.5  # how long "nothing more arrives" is watched


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _fmt(moment: datetime.datetime, offset_hours: int = 0) -> str:
    zone = datetime.timezone(datetime.timedelta(hours=offset_hours))
    return moment.astimezone(zone).isoformat().replace("+00:00", "Z")


def _twamp_event(port: int, when: datetime.datetime) -> dict[str, Any]:
    """A Server-side control failure; the client port tells the events apart."""
    return {
        "event": "twamp-nf-twamp:ctrl-connection-failed",
        "time": _fmt(when),
        "data": {
            "role": "server",
            "reason": "twamp-nf-twamp:control-client-declined",
            "client-tcp-port": port,
        },
    }


def _ike_event(when: datetime.datetime) -> dict[str, Any]:
    return {
        "event": "twamp-nf-ike:ike-sa-down",
        "time": _fmt(when),
        "data": {
            "spi-i": "8f2c4a1be07d3956",
            "spi-r": "51d0e9a3c47b2f18",
            "peer": "host-b",
            "reason": "deleted-by-peer",
        },
    }


@pytest.fixture
def rig_with(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """A rig whose server has other replay settings (ServerConfig replay_events, replay_max_age)."""
    made: list[Rig] = []

    def make(**options: Any) -> Rig:
        made.append(Rig(tmp_path, **options))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _publish(rig: Rig, events: list[dict[str, Any]]) -> None:
    """Send events through the fake runtime and wait until the server has published them all."""
    assert rig.runtime.subscribed.wait(WAIT)
    hub = rig.app.hub
    before = hub.published
    for event in events:
        rig.runtime.emit(event)
    deadline = time.monotonic() + WAIT
    while hub.published < before + len(events) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hub.published == before + len(events)


def _server_event(root: etree._Element) -> bool:
    """The server's own RFC 6470 notifications (session start and end, config changes) share the stream;
    these tests are about the runtime's events and pass them over."""
    return any(etree.QName(child).namespace == NCN_NS for child in root)


def _next(m: Any, timeout: float) -> etree._Element | None:
    while True:
        notification = m.take_notification(timeout=timeout)
        if notification is None:
            return None
        root = etree.fromstring(notification.notification_xml.encode())
        if not _server_event(root):
            return root


def _take(m: Any, count: int) -> list[etree._Element]:
    roots: list[etree._Element] = []
    for _ in range(count):
        root = _next(m, WAIT)
        assert root is not None, f"only {len(roots)} of {count} notifications arrived"
        assert root.tag == f"{{{NOTIF_NS}}}notification"
        roots.append(root)
    return roots


def _nothing_more(m: Any) -> None:
    assert _next(m, QUIET) is None


def _label(root: etree._Element) -> str:
    """replayComplete, notificationComplete, port:N for a TWAMP event, ike for an IKE one."""
    body = [child for child in root if child.tag != f"{{{NOTIF_NS}}}eventTime"]
    assert len(body) == 1
    qname = etree.QName(body[0])
    if qname.namespace == NC_NOTIF_NS:
        name = str(qname.localname)
        assert name in ("replayComplete", "notificationComplete")
        return name
    if qname.namespace == IKE_NS:
        return "ike"
    assert qname.namespace == TWAMP_NS
    port: str | None = body[0].findtext(f"{{{TWAMP_NS}}}client-tcp-port")
    return f"port:{port}"


def _labels(roots: list[etree._Element]) -> list[str]:
    return [_label(root) for root in roots]


def _event_time(root: etree._Element) -> str:
    return root.findtext(f"{{{NOTIF_NS}}}eventTime") or ""


def test_replay_from_start_time_then_replay_complete_then_live(rig: Rig) -> None:
    t0 = _now() - datetime.timedelta(seconds=30)
    earlier = [_twamp_event(n, t0 + datetime.timedelta(seconds=n)) for n in (1, 2, 3)]
    _publish(rig, earlier)
    m = rig.connect()
    m.create_subscription(start_time=_fmt(t0 - datetime.timedelta(seconds=60)))
    replayed = _take(m, 4)
    assert _labels(replayed) == ["port:1", "port:2", "port:3", "replayComplete"]
    assert [_event_time(root) for root in replayed[:3]] == [event["time"] for event in earlier]
    complete_time = datetime.datetime.fromisoformat(_event_time(replayed[3]))
    assert abs((complete_time - _now()).total_seconds()) < WAIT
    rig.runtime.emit(_twamp_event(4, _now()))
    assert _labels(_take(m, 1)) == ["port:4"]
    _nothing_more(m)


def test_start_time_selects_the_events_from_it_in_any_offset(rig: Rig) -> None:
    t0 = _now() - datetime.timedelta(seconds=60)
    _publish(rig, [_twamp_event(n, t0 + datetime.timedelta(seconds=10 * n)) for n in (1, 2, 3)])
    m = rig.connect()
    # startTime equal to the second event's eventTime, written in +05:30 (an event at startTime is replayed)
    m.create_subscription(start_time=_fmt(t0 + datetime.timedelta(seconds=20), offset_hours=5))
    assert _labels(_take(m, 3)) == ["port:2", "port:3", "replayComplete"]
    _nothing_more(m)


def test_a_subscription_without_start_time_replays_nothing(rig: Rig) -> None:
    _publish(rig, [_twamp_event(1, _now() - datetime.timedelta(seconds=5))])
    m = rig.connect()
    m.create_subscription()
    _nothing_more(m)
    rig.runtime.emit(_twamp_event(2, _now()))
    assert _labels(_take(m, 1)) == ["port:2"]


def test_filter_and_nacm_apply_to_replayed_events(tmp_path: Path) -> None:
    extra = (
        '\n[[nacm.rule]]\ngroups = ["readers"]\nmodule = "twamp-nf-ike"\naccess = ["read"]\naction = "deny"\n'
    )
    rig = Rig(tmp_path, users=users_toml(extra))
    try:
        t0 = _now() - datetime.timedelta(seconds=30)
        _publish(
            rig,
            [
                _ike_event(t0),
                _twamp_event(1, t0 + datetime.timedelta(seconds=1)),
                _twamp_event(2, t0 + datetime.timedelta(seconds=2)),
            ],
        )
        start = _fmt(t0 - datetime.timedelta(seconds=1))
        admin = rig.connect()
        admin.create_subscription(start_time=start)
        assert _labels(_take(admin, 4)) == ["ike", "port:1", "port:2", "replayComplete"]
        reader = rig.connect("reader", READER_PASSWORD)
        reader.create_subscription(start_time=start)  # the IKE module is denied to readers
        assert _labels(_take(reader, 3)) == ["port:1", "port:2", "replayComplete"]
        filtered = rig.connect()
        subtree = (
            f'<ctrl-connection-failed xmlns="{TWAMP_NS}"><client-tcp-port>2</client-tcp-port>'
            "</ctrl-connection-failed>"
        )
        filtered.create_subscription(filter=("subtree", subtree), start_time=start)
        assert _labels(_take(filtered, 2)) == ["port:2", "replayComplete"]
        for m in (admin, reader, filtered):
            _nothing_more(m)
    finally:
        rig.close()


def test_stop_time_ends_the_subscription_without_further_events(rig: Rig) -> None:
    t0 = _now() - datetime.timedelta(seconds=30)
    _publish(rig, [_twamp_event(1, t0)])
    m = rig.connect()
    stop = _now() + datetime.timedelta(seconds=2)
    m.create_subscription(start_time=_fmt(t0), stop_time=_fmt(stop))
    assert _labels(_take(m, 2)) == ["port:1", "replayComplete"]
    rig.runtime.emit(_twamp_event(2, _now()))  # live, before stopTime
    assert _labels(_take(m, 1)) == ["port:2"]
    complete = _take(m, 1)  # no event comes: the timer ends it
    assert _labels(complete) == ["notificationComplete"]
    assert datetime.datetime.fromisoformat(_event_time(complete[0])) >= stop
    assert rig.app.hub.subscribers() == 0
    rig.runtime.emit(_twamp_event(3, _now()))
    _nothing_more(m)
    m.create_subscription()  # the session may subscribe again
    rig.runtime.emit(_twamp_event(4, _now()))
    assert _labels(_take(m, 1)) == ["port:4"]


def test_stop_time_in_the_past_replays_and_completes_at_once(rig: Rig) -> None:
    t0 = _now() - datetime.timedelta(seconds=60)
    _publish(rig, [_twamp_event(n, t0 + datetime.timedelta(seconds=10 * n)) for n in (1, 2, 3)])
    m = rig.connect()
    m.create_subscription(
        start_time=_fmt(t0), stop_time=_fmt(t0 + datetime.timedelta(seconds=20), offset_hours=-7)
    )
    assert _labels(_take(m, 4)) == ["port:1", "port:2", "replayComplete", "notificationComplete"]
    assert rig.app.hub.subscribers() == 0
    rig.runtime.emit(_twamp_event(4, _now()))
    _nothing_more(m)


def test_closing_the_session_cancels_the_stop_time_timer(rig: Rig) -> None:
    m = rig.connect()
    m.create_subscription(
        start_time=_fmt(_now() - datetime.timedelta(seconds=1)),
        stop_time=_fmt(_now() + datetime.timedelta(hours=1)),
    )
    assert _labels(_take(m, 1)) == ["replayComplete"]
    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()]
    assert timers
    m.close_session()
    deadline = time.monotonic() + WAIT
    while any(t.is_alive() for t in timers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.is_alive() for t in timers)
    assert rig.app.hub.subscribers() == 0


def _subscription_error(m: Any, start: str | None, stop: str | None) -> RPCError:
    if start is None:  # ncclient refuses stopTime alone: send the rpc as another client could
        body = f'<create-subscription xmlns="{NOTIF_NS}"><stopTime>{stop}</stopTime></create-subscription>'
        with pytest.raises(RPCError) as err:
            m.dispatch(to_ele(body))
    else:
        with pytest.raises(RPCError) as err:
            m.create_subscription(start_time=start, stop_time=stop)
    return err.value


def _bad_element(error: RPCError) -> str | None:
    assert error.info is not None
    element: str | None = etree.fromstring(error.info.encode()).findtext(".//{*}bad-element")
    return element


@pytest.mark.parametrize(
    ("start", "stop", "tag", "element"),
    [
        ("future", None, "bad-element", "startTime"),
        ("past", "earlier", "bad-element", "stopTime"),
        (None, "past", "missing-element", "stopTime"),
        ("2026-12-06T10:00:00", None, "bad-element", "startTime"),  # no time zone
        ("2026-12-06", None, "bad-element", "startTime"),
        ("2026-13-06T10:00:00Z", None, "bad-element", "startTime"),
        ("yesterday", None, "bad-element", "startTime"),
        ("past", "2026-12-06T25:00:00Z", "bad-element", "stopTime"),
    ],
)
def test_bad_times_are_refused(rig: Rig, start: str | None, stop: str | None, tag: str, element: str) -> None:
    now = _now()
    times = {
        "future": _fmt(now + datetime.timedelta(hours=1)),
        "past": _fmt(now - datetime.timedelta(hours=1)),
        "earlier": _fmt(now - datetime.timedelta(hours=2)),
    }
    m = rig.connect()
    error = _subscription_error(m, times.get(start or "", start), times.get(stop or "", stop))
    assert (error.tag, error.type, _bad_element(error)) == (tag, "protocol", element)
    assert rig.app.hub.subscribers() == 0
    m.create_subscription()  # nothing was half-created
    assert rig.app.hub.subscribers() == 1


def test_replay_turned_off_refuses_start_time(rig_with: Callable[..., Rig]) -> None:
    rig = rig_with(replay_events=0)
    hub = rig.app.hub
    _publish(rig, [_twamp_event(1, _now() - datetime.timedelta(seconds=5))])
    assert hub.replay_log().events == 0
    m = rig.connect()
    error = _subscription_error(m, _fmt(_now() - datetime.timedelta(hours=1)), None)
    assert (error.tag, error.type) == ("operation-failed", "protocol")
    m.create_subscription()  # live notifications still work
    rig.runtime.emit(_twamp_event(2, _now()))
    assert _labels(_take(m, 1)) == ["port:2"]


def test_the_replay_log_keeps_the_last_events(rig_with: Callable[..., Rig]) -> None:
    rig = rig_with(replay_events=3)
    hub = rig.app.hub
    m = rig.connect()  # before the events: its netconf-session-start is the first to leave the log
    deadline = time.monotonic() + WAIT
    while hub.published == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = _now() - datetime.timedelta(seconds=60)
    events = [_twamp_event(n, t0 + datetime.timedelta(seconds=n)) for n in range(1, 6)]
    _publish(rig, events)
    log = hub.replay_log()
    assert (log.events, log.aged) == (3, True)
    assert log.oldest == datetime.datetime.fromisoformat(events[2]["time"])
    m.create_subscription(start_time=_fmt(t0 - datetime.timedelta(hours=1)))  # before the log: from its start
    assert _labels(_take(m, 4)) == ["port:3", "port:4", "port:5", "replayComplete"]


def test_the_replay_log_drops_events_older_than_the_max_age(rig_with: Callable[..., Rig]) -> None:
    rig = rig_with(replay_max_age=600.0)
    hub = rig.app.hub
    now = _now()
    _publish(rig, [_twamp_event(1, now - datetime.timedelta(hours=1))])
    assert hub.replay_log() == (0, None, True)
    _publish(rig, [_twamp_event(2, now - datetime.timedelta(seconds=30))])
    m = rig.connect()
    m.create_subscription(start_time=_fmt(now - datetime.timedelta(hours=2)))
    assert _labels(_take(m, 2)) == ["port:2", "replayComplete"]


def test_events_published_during_the_replay_arrive_once_after_it(rig: Rig) -> None:
    logged, live = 600, 300  # together within the default log size: nothing is dropped from it
    t0 = _now() - datetime.timedelta(seconds=1200)
    _publish(rig, [_twamp_event(n, t0 + datetime.timedelta(seconds=n)) for n in range(1, logged + 1)])
    m = rig.connect()
    go = threading.Event()

    def emit() -> None:
        go.wait(WAIT)
        for n in range(logged + 1, logged + live + 1):
            rig.runtime.emit(_twamp_event(n, _now()))
            if n % 20 == 0:
                time.sleep(0.005)

    emitter = threading.Thread(target=emit)
    emitter.start()
    go.set()
    m.create_subscription(start_time=_fmt(t0))
    emitter.join(WAIT)
    labels = _labels(_take(m, logged + live + 1))
    _nothing_more(m)
    complete = labels.index("replayComplete")
    ports = [int(label.removeprefix("port:")) for label in labels if label != "replayComplete"]
    # every event exactly once, in publish order: none lost, duplicated or ahead of the replay
    assert ports == list(range(1, logged + live + 1))
    assert complete >= logged  # the whole log came first; live ones logged before the snapshot may join it
    assert complete < len(labels) - 1, "no event was published after the replay's snapshot"


def test_the_reply_comes_before_the_first_replayed_notification(rig: Rig) -> None:
    """Read on the wire (no ncclient): the <ok/> to create-subscription, then the replay, then the marker."""
    start = _now() - datetime.timedelta(seconds=5)
    _publish(rig, [_twamp_event(40000 + n, _now()) for n in range(3)])
    session = RawSession(rig.app.port)
    rig.managers.append(_Closer(session))
    session.send(
        f'<rpc xmlns="{NC_NS}" message-id="7"><create-subscription xmlns="{NOTIF_NS}">'
        f"<startTime>{_fmt(start)}</startTime></create-subscription></rpc>".encode()
    )
    first = session.read()
    assert first.tag == f"{{{NC_NS}}}rpc-reply" and first.find(f"{{{NC_NS}}}ok") is not None
    labels: list[str] = []
    while len(labels) < 4:
        root = session.read()
        if not _server_event(root):
            labels.append(_label(root))
    assert labels == ["port:40000", "port:40001", "port:40002", "replayComplete"]


def test_a_subscriber_that_does_not_read_holds_up_nobody(rig_with: Callable[..., Rig]) -> None:
    """A raw session subscribes and never reads again: once the SSH window is full its sender thread blocks,
    yet the runtime's events keep reaching a reading subscriber and edits keep working; past the queue bound
    the stuck session is dropped."""
    rig = rig_with(notification_queue=200)
    stuck = RawSession(rig.app.port, window_size=32768)  # ~80 notifications fill the window it never opens
    rig.managers.append(_Closer(stuck))
    reply = stuck.rpc(f'<create-subscription xmlns="{NOTIF_NS}"/>')
    assert reply.find(f"{{{NC_NS}}}ok") is not None
    reader = rig.connect()
    reader.create_subscription()
    before = rig.app.hub.dropped
    assert rig.runtime.subscribed.wait(WAIT)
    for chunk in range(6):  # 600 events in all, 100 at a time: the reader keeps up, the stuck one cannot
        for n in range(1, 101):
            rig.runtime.emit(_twamp_event(chunk * 100 + n, _now()))
        labels = _labels(_take(reader, 100))
        assert labels == [f"port:{chunk * 100 + n}" for n in range(1, 101)]
        reader.edit_config(  # changes are not held up either
            target="running", config=SERVER_CONFIG.replace("65536", str(1024 << chunk))
        )
    deadline = time.monotonic() + WAIT
    while rig.app.hub.dropped == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rig.app.hub.dropped == before + 1
    assert stuck.closed_by_server() or stuck.chan.closed
