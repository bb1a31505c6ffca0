"""Our side of the IKE tests (no tests of its own): PeerConfigs from a PSK or from an identity of a
CharonPKI, and a bounded asyncio.run. Shared by the IKE wire, strongSwan interop and binding tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from nf.ike.auth import PreSharedKey, Signer
from nf.ike.certificates import TrustAnchors, load_certificates
from nf.ike.exchanges import PeerConfig
from nf.ike.identities import Identity
from nf.ike.proposals import parse_proposals
from tests.strongswan_peer import CharonPKI

DEFAULT_PROPOSALS = "aes128gcm16-prfsha256-x25519"


def psk_peer(local: str, remote: str, psk: PreSharedKey, proposals: str = DEFAULT_PROPOSALS) -> PeerConfig:
    return PeerConfig(Identity.parse(local), Identity.parse(remote), parse_proposals(proposals), psk=psk)


def cert_peer(
    pki: CharonPKI,
    local: str,
    remote: str,
    proposals: str,
    *,
    rsa_pss: bool = False,
    trust: CharonPKI | None = None,
) -> PeerConfig:
    """`local`'s key and certificate from `pki`; the peer is checked against `trust`'s CA (default `pki`)."""
    ident = pki.identity(local)
    return PeerConfig(
        Identity.parse(local),
        Identity.parse(remote),
        parse_proposals(proposals),
        signer=Signer.from_file(str(ident.key), rsa_pss=rsa_pss),
        certificates=tuple(load_certificates(str(ident.cert))),
        trust=TrustAnchors.from_files(str((trust or pki).ca_cert)),
    )


def run(coro: Awaitable[None], timeout: float = 110.0) -> None:
    """asyncio.run with an upper bound: a hung exchange fails the test instead of hanging the suite."""

    async def guarded() -> None:
        await asyncio.wait_for(coro, timeout)

    asyncio.run(guarded())
