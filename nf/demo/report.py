"""What the demo reads back over NETCONF, as values: the IKE SA from ike-sa-up, the control connection
from <get> state, the results from test-session-completed (the YANG `results` container -> Summary).

Only public facts: SPIs, algorithms, mode, identities and figures; the YANG modules have no node that could
carry key material, and nothing here reads files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

from nf.demo.configuration import BINDING_NS, IKE_NS, TWAMP_NS
from nf.runtime.config import MODE_BITS
from nf.twamp.modes import Modes
from nf.twamp.results import DelayStats, Summary, VariationStats

DELAY_FIELDS = ("min", "median", "p95", "p99", "max", "mean")


def _t(name: str) -> str:
    return f"{{{TWAMP_NS}}}{name}"


def _i(name: str) -> str:
    return f"{{{IKE_NS}}}{name}"


class ReportError(Exception):
    """A reply lacks what the demo needs to report (names the node)."""


@dataclass(frozen=True, slots=True)
class IkeSA:
    spi_i: str
    spi_r: str
    peer: str
    role: str
    remote_address: str
    algorithms: dict[str, str]

    def describe(self) -> str:
        algorithms = "/".join(
            self.algorithms[k] for k in ("encryption", "integrity", "prf", "dh-group") if k in self.algorithms
        )
        return (
            f"IKE SA up: SPIi {self.spi_i} SPIr {self.spi_r}, {algorithms}, "
            f"peer {self.peer} ({self.remote_address}), we are {self.role}"
        )


def ike_sa_up(body: etree._Element) -> IkeSA:
    algorithms = body.find(_i("algorithms"))
    return IkeSA(
        spi_i=body.findtext(_i("spi-i")) or "",
        spi_r=body.findtext(_i("spi-r")) or "",
        peer=body.findtext(_i("peer")) or "?",
        role=body.findtext(_i("role")) or "?",
        remote_address=body.findtext(_i("remote-address")) or "?",
        algorithms={} if algorithms is None else {etree.QName(c).localname: c.text or "" for c in algorithms},
    )


def mode_value(bits: str) -> int:
    """A twamp-modes value ('authenticated ikev2-derived') as the Modes word on the wire (130)."""
    value = Modes(0)
    for name in bits.split():
        value |= MODE_BITS[name]
    return int(value)


@dataclass(frozen=True, slots=True)
class ConnectionState:
    name: str
    state: str
    selected_mode: str
    spi_i: str
    spi_r: str
    ike_peer: str

    def describe(self) -> str:
        return (
            f"control connection {self.name}: {self.state}, Mode {mode_value(self.selected_mode)} "
            f"({self.selected_mode}), key source IKE SA with {self.ike_peer}: "
            f"SPIi {self.spi_i} SPIr {self.spi_r}"
        )


def client_connection(state: etree._Element, name: str) -> ConnectionState:
    for connection in state.iter(_t("ctrl-connection")):
        if connection.findtext(_t("name")) != name:
            continue
        key_source = connection.find(_t("key-source"))
        if key_source is None:
            raise ReportError(f"ctrl-connection {name} has no key-source in <get>")
        return ConnectionState(
            name=name,
            state=connection.findtext(_t("state")) or "?",
            selected_mode=connection.findtext(_t("selected-mode")) or "",
            spi_i=key_source.findtext(f"{{{BINDING_NS}}}spi-i") or "",
            spi_r=key_source.findtext(f"{{{BINDING_NS}}}spi-r") or "",
            ike_peer=key_source.findtext(f"{{{BINDING_NS}}}ike-peer") or "?",
        )
    raise ReportError(f"no client ctrl-connection {name} in <get>")


def _number(element: etree._Element, name: str) -> float:
    text = element.findtext(_t(name))
    if text is None:
        raise ReportError(f"results/{name} missing")
    return float(text)


def _delay(results: etree._Element, name: str) -> DelayStats | None:
    found = results.find(_t(name))
    if found is None:
        return None
    return DelayStats(*(_number(found, f) for f in DELAY_FIELDS))


def summary_from_results(results: etree._Element) -> Summary:
    """The YANG results container (nf.runtime.events.results_json's output, as XML) back to a Summary."""
    ipdv = results.find(_t("ipdv"))
    return Summary(
        sent=int(_number(results, "sent")),
        received=int(_number(results, "received")),
        lost=int(_number(results, "lost")),
        loss_ratio=_number(results, "loss-ratio"),
        duplicates=int(_number(results, "duplicates")),
        reordered=int(_number(results, "reordered")),
        rtt_ms=_delay(results, "rtt"),
        ipdv_ms=None
        if ipdv is None
        else VariationStats(_number(ipdv, "median"), _number(ipdv, "p95"), _number(ipdv, "max")),
        forward_ms=_delay(results, "forward-delay"),
        backward_ms=_delay(results, "backward-delay"),
        clock_synchronized=results.findtext(_t("clocks-synchronized")) == "true",
    )


@dataclass(frozen=True, slots=True)
class Completion:
    outcome: str
    sid: str
    summary: Summary | None


def test_session_completed(body: etree._Element) -> Completion:
    results = body.find(_t("results"))
    return Completion(
        outcome=body.findtext(_t("outcome")) or "?",
        sid=body.findtext(_t("sid")) or "",
        summary=None if results is None else summary_from_results(results),
    )


test_session_completed.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def is_notification(name: str, namespace: str) -> Callable[[etree._Element], bool]:
    """A predicate for NetconfSession.next_event: the body is notification `name` of `namespace`."""
    tag = f"{{{namespace}}}{name}"
    return lambda body: bool(body.tag == tag)
