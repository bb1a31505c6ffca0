"""`twamp-nf ike-check`: set up one childless IKE SA with a peer, report it, delete it.

An operator's first test before binding TWAMP to IKEv2 (RFC 7717): it proves reachability, proposal
agreement and authentication, and prints the SPIs (the future TWAMP Key ID), the negotiated algorithms and
the peer identity. It never prints a key. Exit status: 0 established (and deleted), 1 the exchange failed
(the reason is named), 2 bad arguments or credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from typing import Any

from nf.ike.auth import PreSharedKey, Signer
from nf.ike.certificates import TrustAnchors, load_certificates
from nf.ike.errors import IKEError
from nf.ike.exchanges import PeerConfig
from nf.ike.identities import Identity
from nf.ike.proposals import parse_proposals
from nf.ike.sa import Established, Failed, RetransmitPolicy
from nf.net.hostport import format_hostport, parse_hostport
from nf.net.ike_endpoint import open_ike_endpoint

HELP = "establish a childless IKEv2 SA with a peer, print SPIs, algorithms and peer identity, then delete it"
IKE_PORT = 500
DEFAULT_PROPOSALS = "aes256gcm16-prfsha384-x25519,aes128gcm16-prfsha256-ecp256,aes256-sha256-modp2048"
REASON_TEXT = {
    "no-proposal-chosen": "no proposal chosen",
    "authentication-failed": "authentication failed",
    "timeout": "timeout",
    "peer-refused": "refused by the peer",
    "invalid-ke-payload": "no common key exchange group",
    "bad-key-exchange": "invalid key exchange value from the peer",
    "invalid-syntax": "malformed answer from the peer",
}


class UsageError(Exception):
    """Arguments or credential files that cannot be used; exit status 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peer", required=True, metavar="ADDR:PORT", help="IKE peer; port 500 when omitted")
    parser.add_argument(
        "--local", metavar="ADDR:PORT", help="local address and port (default: any address, a free port)"
    )
    parser.add_argument(
        "--local-id", required=True, help="our identity (strongSwan syntax: fqdn, user@fqdn, ...)"
    )
    parser.add_argument("--remote-id", required=True, help="the identity the peer must prove (%%any for any)")
    parser.add_argument(
        "--psk-file", metavar="F", help="file holding the pre-shared key (0x.. hex, 0s.. base64, text)"
    )
    parser.add_argument("--cert", metavar="F", help="our certificate (PEM), for signature authentication")
    parser.add_argument("--key", metavar="F", help="our private key (PEM)")
    parser.add_argument(
        "--ca", metavar="F", help="CA certificate(s) (PEM) the peer's certificate must chain to"
    )
    parser.add_argument(
        "--proposal",
        default=DEFAULT_PROPOSALS,
        help=f"IKE proposals, strongSwan syntax, comma-separated (default {DEFAULT_PROPOSALS})",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the SA (default 30)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _config(args: argparse.Namespace) -> PeerConfig:
    try:
        local_id, remote_id = Identity.parse(args.local_id), Identity.parse(args.remote_id)
        proposals = parse_proposals(args.proposal)
    except IKEError as exc:
        raise UsageError(str(exc)) from None
    if local_id.is_any:
        raise UsageError("--local-id must name an identity")
    retransmit = RetransmitPolicy(timeout=min(2.0, args.timeout / 4), base=1.5, tries=4)
    try:
        if args.psk_file:
            if args.cert or args.key or args.ca:
                raise UsageError("use either --psk-file or --cert/--key/--ca")
            with open(args.psk_file, encoding="utf-8") as handle:
                try:
                    text = handle.read()
                except UnicodeDecodeError:  # its text would quote an octet of the secret and its position
                    raise UsageError(f"{args.psk_file}: not UTF-8 text") from None
            psk = PreSharedKey.from_config(text.strip())
            return PeerConfig(local_id, remote_id, proposals, psk=psk, retransmit=retransmit)
        if not (args.cert and args.key and args.ca):
            raise UsageError("give --psk-file, or all of --cert, --key and --ca")
        return PeerConfig(
            local_id,
            remote_id,
            proposals,
            signer=Signer.from_file(args.key),
            certificates=tuple(load_certificates(args.cert)),
            trust=TrustAnchors.from_files(args.ca),
            retransmit=retransmit,
        )
    except OSError as exc:
        raise UsageError(f"{exc.filename}: {exc.strerror}") from None
    except IKEError as exc:
        raise UsageError(str(exc)) from None


def _source_address(peer: tuple[str, int]) -> str:
    """The address the kernel would send to `peer` from: binding it (not a wildcard) keeps our NAT-D
    notifies truthful, so the peer does not mistake us for a host behind a NAT."""
    family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(peer)  # UDP connect sends nothing: it only chooses the route
        return str(probe.getsockname()[0])


async def _check(args: argparse.Namespace, config: PeerConfig) -> dict[str, Any]:
    peer = parse_hostport(args.peer, IKE_PORT)
    local = parse_hostport(args.local, 0) if args.local else (_source_address(peer), 0)
    endpoint = await open_ike_endpoint(local, peers=[config])
    try:
        event = await endpoint.initiate(peer, config, timeout=args.timeout)
        if isinstance(event, Failed):
            return {
                "result": "failed",
                "peer": format_hostport(*peer),
                "reason": event.reason,
                "detail": event.detail,
            }
        assert isinstance(event, Established)
        report: dict[str, Any] = {
            "result": "established",
            "peer": format_hostport(*peer),
            "local": format_hostport(*endpoint.local),
            "spi_i": event.spis[0].hex(),
            "spi_r": event.spis[1].hex(),
            "algorithms": event.algorithms,
            "peer_id": event.peer_id,
        }
        sa = endpoint.lookup(*event.spis)
        deleted = False
        if sa is not None:
            try:
                deleted = (await endpoint.delete(sa, timeout=args.timeout)).reason == "deleted"
            except TimeoutError:
                deleted = False
        report["deleted"] = deleted
        return report
    finally:
        endpoint.close()


def run(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
        parse_hostport(args.peer, IKE_PORT)
    except (UsageError, ValueError) as exc:
        print(f"ike-check: {exc}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_check(args, config))
    except OSError as exc:
        print(f"ike-check: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    elif report["result"] == "established":
        print(f"IKE SA established with {report['peer']} (from {report['local']})")
        print(f"  SPIs        {report['spi_i']}_i {report['spi_r']}_r")
        print(f"  algorithms  {report['algorithms']}")
        print(f"  peer id     {report['peer_id']}")
        print(f"  deleted     {'yes' if report['deleted'] else 'no (no answer to the Delete)'}")
    if report["result"] != "established":
        text = REASON_TEXT.get(report["reason"], report["reason"])
        detail = f" ({report['detail']})" if report["detail"] else ""
        print(f"ike-check: {report['peer']}: {text}{detail}", file=sys.stderr)
        return 1
    return 0
