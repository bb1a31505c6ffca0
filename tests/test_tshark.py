"""Wireshark as an independent TWAMP dissector: capture real `ping`/`reflect` runs on lo, one per mode, and
check that tshark parses them cleanly and sees the Modes, Mode, padding and sequence numbers we used.

What tshark can check depends on the mode: it has no keys, so after Server-Start the control stream of the
authenticated, encrypted and mixed modes is ciphertext to it (it flags those segments malformed, which is
expected and asserted as such), and the sequence numbers of authenticated/encrypted test packets are
encrypted (asserted to differ from the plaintext ones). Wireshark 4.0 dissects every TWAMP-Test packet with
the reflector layout, so sender packets are checked by their sequence number and UDP length only.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_udp_range, run_cli, tshark

pytestmark = pytest.mark.tshark

COUNT = 5
PADDING = 24
DSCP = 46  # EF: the sender marks its packets and the reflector its replies (Type-P, RFC 5357 s3.5)
ALL_MODES = 127  # what `reflect --keys` offers: the four security modes and the three feature bits
MODE_FLAG = {"unauthenticated": 1, "authenticated": 2, "encrypted": 4, "mixed": 8}
SENDER_HEADER = {"unauthenticated": 14, "mixed": 14, "authenticated": 48, "encrypted": 48}
SYMMETRIC_HEADER = {"unauthenticated": 41, "mixed": 41, "authenticated": 112, "encrypted": 112}
ERROR_SEVERITY = 8388608


def fields(pcap: Path, decode: list[str], display: str, *names: str) -> list[dict[str, str]]:
    out = tshark(
        [
            "-r",
            str(pcap),
            *decode,
            "-Y",
            display,
            "-T",
            "fields",
            "-E",
            "header=y",
            "-E",
            "separator=,",
            "-E",
            "occurrence=f",
            "-E",
            "quote=d",
            *(arg for name in names for arg in ("-e", name)),
        ]
    )
    return list(csv.DictReader(io.StringIO(out)))


@pytest.mark.parametrize(
    ("mode", "symmetric"),
    [
        ("unauthenticated", False),
        ("authenticated", False),
        ("encrypted", False),
        ("mixed", False),
        ("unauthenticated", True),
        ("authenticated", True),
    ],
)
def test_capture_dissects_cleanly(
    reflector_factory: Any, capture: Any, pfs_keys: Path, mode: str, symmetric: bool
) -> None:
    low, high = free_udp_range()
    reflector = reflector_factory("--keys", str(pfs_keys), "--test-ports", f"{low}-{high}")
    cap = capture(f"tcp port {reflector.port} or udp portrange {low}-{high}")
    extra = ["--symmetric"] if symmetric else []
    result = run_cli(
        [
            "ping",
            reflector.address,
            "--mode",
            mode,
            "--key-id",
            "alice",
            "--keys",
            str(pfs_keys),
            "--count",
            str(COUNT),
            "--interval",
            "0.01",
            "--padding",
            str(PADDING),
            "--dscp",
            str(DSCP),
            "--json",
            *extra,
        ]
    )
    assert result.returncode == 0, result.stderr
    pcap = cap.stop()
    decode = ["-d", f"tcp.port=={reflector.port},twamp.control"]
    for port in range(low, high + 1):
        decode += ["-d", f"udp.port=={port},twamp.test"]

    control = fields(
        pcap,
        decode,
        "twamp.control",
        "frame.number",
        "_ws.col.Info",
        "twamp.control.modes",
        "twamp.control.mode",
        "twamp.control.count",
        "twamp.control.padding_length",
        "twamp.control.type-p",
    )
    greeting = [row for row in control if row["_ws.col.Info"].startswith("Server Greeting")]
    setup = [row for row in control if row["_ws.col.Info"].startswith("Setup Response")]
    start = [row for row in control if row["_ws.col.Info"].startswith("Server Start")]
    assert len(greeting) == len(setup) == len(start) == 1
    assert int(greeting[0]["twamp.control.modes"], 0) == ALL_MODES
    assert int(greeting[0]["twamp.control.count"], 0) == 2048
    wanted_mode = MODE_FLAG[mode] | (64 if symmetric else 0)
    assert int(setup[0]["twamp.control.mode"], 0) == wanted_mode
    assert "(OK)" in start[0]["_ws.col.Info"]
    clear_until = int(start[0]["frame.number"])

    if mode == "unauthenticated":  # the whole control exchange is plaintext to tshark
        requests = [row for row in control if row["_ws.col.Info"].startswith("Request Session")]
        assert len(requests) == 1
        assert int(requests[0]["twamp.control.padding_length"]) == PADDING
        assert int(requests[0]["twamp.control.type-p"], 0) == DSCP << 24

    bad = fields(
        pcap,
        decode,
        f"_ws.malformed || _ws.expert.severity >= {ERROR_SEVERITY}",
        "frame.number",
        "tcp.srcport",
        "udp.srcport",
    )
    for row in bad:
        assert not row["udp.srcport"], f"malformed TWAMP-Test frame {row}"
        assert mode != "unauthenticated", f"malformed frame in a plaintext control exchange: {row}"
        assert int(row["frame.number"]) > clear_until, f"malformed cleartext control frame {row}"

    test = fields(
        pcap,
        decode,
        "twamp.test",
        "udp.srcport",
        "udp.dstport",
        "udp.length",
        "ip.dsfield.dscp",
        "twamp.test.seq_number",
        "twamp.test.sender_seq_number",
    )
    to_reflector = [row for row in test if low <= int(row["udp.dstport"]) <= high]
    from_reflector = [row for row in test if low <= int(row["udp.srcport"]) <= high]
    assert len(to_reflector) == COUNT
    assert len(from_reflector) == COUNT
    header = (SYMMETRIC_HEADER if symmetric else SENDER_HEADER)[mode]
    assert {int(row["udp.length"]) - 8 for row in to_reflector} == {header + PADDING}
    assert {int(row["ip.dsfield.dscp"]) for row in test} == {DSCP}
    sender_seqs = [int(row["twamp.test.seq_number"]) for row in to_reflector]
    reflected_seqs = [int(row["twamp.test.sender_seq_number"]) for row in from_reflector]
    if mode in ("unauthenticated", "mixed"):
        assert sender_seqs == list(range(COUNT))
        assert reflected_seqs == list(range(COUNT))
        assert [int(row["twamp.test.seq_number"]) for row in from_reflector] == list(range(COUNT))
    else:  # the sequence block is encrypted on the wire in both directions
        assert sender_seqs != list(range(COUNT))
        assert len(set(sender_seqs)) == COUNT


@pytest.mark.parametrize(("mode", "padding"), [("unauthenticated", 40), ("authenticated", 80)])
def test_reflect_octets_come_back_on_the_wire(
    reflector_factory: Any, capture: Any, pfs_keys: Path, mode: str, padding: int
) -> None:
    """RFC 6038: the first N octets of each sender packet's padding lead the reply's padding."""
    octets = 4
    low, high = free_udp_range()
    reflector = reflector_factory("--keys", str(pfs_keys), "--test-ports", f"{low}-{high}")
    cap = capture(f"udp portrange {low}-{high}")
    result = run_cli(
        [
            "ping",
            reflector.address,
            "--mode",
            mode,
            "--key-id",
            "alice",
            "--keys",
            str(pfs_keys),
            "--count",
            str(COUNT),
            "--interval",
            "0.01",
            "--padding",
            str(padding),
            "--reflect-octets",
            str(octets),
            "--json",
        ]
    )
    assert result.returncode == 0, result.stderr
    pcap = cap.stop()
    rows = fields(pcap, [], "udp", "udp.srcport", "udp.dstport", "udp.payload")
    sent = [bytes.fromhex(r["udp.payload"]) for r in rows if low <= int(r["udp.dstport"]) <= high]
    replies = [bytes.fromhex(r["udp.payload"]) for r in rows if low <= int(r["udp.srcport"]) <= high]
    assert len(sent) == len(replies) == COUNT
    sender_header, reflector_header = SENDER_HEADER[mode], SYMMETRIC_HEADER[mode]
    leading = {packet[sender_header : sender_header + octets] for packet in sent}
    assert len(leading) == 1  # every packet carries the same leading octets (Server Octets first)
    for reply in replies:
        assert reply[reflector_header : reflector_header + octets] in leading
