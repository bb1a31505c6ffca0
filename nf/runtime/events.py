"""Runtime events -> YANG notifications (RFC 7951 JSON), fanned out to control-socket subscribers.

Each builder takes runtime values (SPIs as octets, ControlFailure reasons, results Summary) and returns the
`data` of one notification of twamp-nf-twamp, twamp-nf-ike or twamp-nf-ike-binding; no builder takes a
secret, so none can leak one. The bus keeps a bounded queue per subscriber: a subscriber that stops reading
loses its oldest events (counted) instead of growing the runtime's memory.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

from nf.twamp.modes import Accept
from nf.twamp.results import DelayStats, Summary, VariationStats

log = logging.getLogger("nf.runtime.events")

TWAMP = "twamp-nf-twamp"
IKE = "twamp-nf-ike"
BINDING = "twamp-nf-ike-binding"
QUEUE_LIMIT = 1024

ACCEPT_NAMES = {
    Accept.OK: "ok",
    Accept.FAILURE: "failure",
    Accept.INTERNAL_ERROR: "internal-error",
    Accept.NOT_SUPPORTED: "not-supported",
    Accept.PERMANENT_RESOURCE_LIMITATION: "permanent-resource-limit",
    Accept.TEMPORARY_RESOURCE_LIMITATION: "temp-resource-limit",
    Accept.UNKNOWN_SA: "unknown-sa",
}


def yang_time(when: float | None = None) -> str:
    """yang:date-and-time in UTC with microseconds."""
    moment = datetime.datetime.fromtimestamp(
        when if when is not None else datetime.datetime.now(datetime.UTC).timestamp(), datetime.UTC
    )
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Subscription:
    """One subscriber's queue of event lines (already JSON-ready dicts)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = 0

    def offer(self, event: dict[str, Any]) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, name: str, data: dict[str, Any]) -> None:
        event = {"event": name, "time": yang_time(), "data": data}
        log.info("event %s", name)
        for subscription in list(self._subscriptions):
            subscription.offer(event)


# ------------------------------------------------------------------------------------------- builders


def _spis(spis: tuple[bytes, bytes]) -> dict[str, str]:
    return {"spi-i": spis[0].hex(), "spi-r": spis[1].hex()}


def ike_sa_up(
    spis: tuple[bytes, bytes],
    *,
    peer: str | None,
    initiator: bool,
    remote_address: str,
    algorithms: dict[str, str],
    rekeyed_from: tuple[bytes, bytes] | None = None,
) -> tuple[str, dict[str, Any]]:
    data: dict[str, Any] = {
        **_spis(spis),
        "role": "initiator" if initiator else "responder",
        "remote-address": remote_address,
        "algorithms": algorithms,
    }
    if peer is not None:
        data["peer"] = peer
    if rekeyed_from is not None:
        data["rekeyed-from"] = _spis(rekeyed_from)
    return f"{IKE}:ike-sa-up", data


def ike_sa_down(spis: tuple[bytes, bytes], *, peer: str | None, reason: str) -> tuple[str, dict[str, Any]]:
    data: dict[str, Any] = {**_spis(spis), "reason": reason}
    if peer is not None:
        data["peer"] = peer
    return f"{IKE}:ike-sa-down", data


def unknown_sa(
    spis: tuple[bytes, bytes], *, client: tuple[str, int], server: tuple[str, int] | None
) -> tuple[str, dict[str, Any]]:
    data: dict[str, Any] = {"client-ip": client[0], "client-tcp-port": client[1], **_spis(spis)}
    if server is not None:
        data["server-ip"], data["server-tcp-port"] = server
    return f"{BINDING}:unknown-sa", data


def key_source_fallback(connection: str, peer: str, selected_mode: str | None) -> tuple[str, dict[str, Any]]:
    data: dict[str, Any] = {"ctrl-connection": connection, "ike-peer": peer}
    if selected_mode:
        data["selected-mode"] = selected_mode
    return f"{BINDING}:key-source-fallback", data


def reason_identity(reason: str) -> str:
    """A runtime counter name (area prefix + reason value, e.g. control-unknown-sa) -> its identity, module
    qualified: the RFC 7717 binding's reasons live in twamp-nf-ike-binding, the rest in twamp-nf-twamp."""
    name = reason.replace("_", "-")
    module = BINDING if name == "control-no-ike-sa" else TWAMP
    return f"{module}:{name}"


def ctrl_connection_failed(
    *,
    role: str,
    reason: str,
    connection: str | None = None,
    client: tuple[str, int] | None = None,
    server: tuple[str, int] | None = None,
    accept: Accept | None = None,
) -> tuple[str, dict[str, Any]]:
    """`reason` is the runtime counter name (control-<ControlFailure value>, control-no-ike-sa)."""
    data: dict[str, Any] = {"role": role, "reason": reason_identity(reason)}
    if connection is not None:
        data["ctrl-connection"] = connection
    if client is not None:
        data["client-ip"], data["client-tcp-port"] = client
    if server is not None:
        data["server-ip"], data["server-tcp-port"] = server
    if accept is not None:
        data["accept"] = ACCEPT_NAMES.get(accept, "failure")
    return f"{TWAMP}:ctrl-connection-failed", data


def test_session_completed(
    session: str, sid: bytes | None, outcome: str, summary: Summary | None
) -> tuple[str, dict[str, Any]]:
    data: dict[str, Any] = {"test-session": session, "outcome": outcome}
    if sid is not None:
        data["sid"] = sid.hex()
    if summary is not None:
        data["results"] = results_json(summary)
    return f"{TWAMP}:test-session-completed", data


test_session_completed.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def _milliseconds(value: float) -> str:
    return f"{value:.3f}"


def _stats(stats: DelayStats | VariationStats) -> dict[str, str]:
    return {name: _milliseconds(value) for name, value in stats.as_dict().items()}


def results_json(summary: Summary) -> dict[str, Any]:
    """nf.twamp.results.Summary -> the YANG `results` container (decimal64 as strings, RFC 7951)."""
    data: dict[str, Any] = {
        "sent": str(summary.sent),
        "received": str(summary.received),
        "lost": str(summary.lost),
        "loss-ratio": f"{summary.loss_ratio:.6f}",
        "duplicates": str(summary.duplicates),
        "reordered": str(summary.reordered),
        "clocks-synchronized": summary.clock_synchronized,
    }
    for name, stats in (
        ("rtt", summary.rtt_ms),
        ("forward-delay", summary.forward_ms),
        ("backward-delay", summary.backward_ms),
        ("ipdv", summary.ipdv_ms),
    ):
        if stats is not None:
            data[name] = _stats(stats)
    return data
