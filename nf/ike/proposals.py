"""IKE SA proposals: wire structures, strongSwan-syntax configuration strings, selection and checking.

Selection policy (responder): our configured proposals are walked in our order of preference and, for
each, the peer's proposals in the peer's order; the first peer proposal that offers something we
accept wins, and within it every transform type takes the first algorithm in OUR order that the peer
offered. Why ours and not the peer's: configuration is the operator's policy, and this is what
strongSwan does by default (`charon.prefer_configured_proposals = yes`), so both ends of a
Python/strongSwan pair decide the same way. One exception: when the peer's KE payload already uses a
group we would accept in the chosen proposal, that group is taken, saving an INVALID_KE_PAYLOAD round
trip without weakening anything we configured.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from nf.ike.errors import ProposalError, ProposalReason
from nf.ike.transforms import (
    DH_GROUPS,
    ENCRS,
    INTEGS,
    KEY_LENGTH_ATTRIBUTE,
    PRFS,
    DhGroup,
    EncrAlgorithm,
    IntegAlgorithm,
    IntegId,
    PrfAlgorithm,
    PrfId,
    TransformType,
)


class ProtocolId(enum.IntEnum):
    IKE = 1
    AH = 2
    ESP = 3


@dataclass(frozen=True)
class Attribute:
    """A transform attribute (RFC 7296 s3.3.5): TV carries a 2-octet value, TLV a variable one."""

    attr_type: int
    value: bytes
    tv: bool = True


@dataclass(frozen=True)
class Transform:
    transform_type: int
    transform_id: int
    attributes: tuple[Attribute, ...] = ()

    @classmethod
    def make(cls, transform_type: int, transform_id: int, key_length: int | None = None) -> Transform:
        attrs: tuple[Attribute, ...] = ()
        if key_length is not None:
            attrs = (Attribute(KEY_LENGTH_ATTRIBUTE, struct.pack("!H", key_length)),)
        return cls(int(transform_type), int(transform_id), attrs)

    @property
    def key_length(self) -> int | None:
        for attr in self.attributes:
            if attr.attr_type == KEY_LENGTH_ATTRIBUTE and attr.tv and len(attr.value) == 2:
                return int(struct.unpack("!H", attr.value)[0])
        return None

    @property
    def only_known_attributes(self) -> bool:
        """Unknown attributes make a transform unacceptable (RFC 7296 s3.3.6)."""
        return all(a.attr_type == KEY_LENGTH_ATTRIBUTE and a.tv for a in self.attributes)


@dataclass(frozen=True)
class Proposal:
    """A Proposal substructure (RFC 7296 s3.3.1); `spi` is empty in IKE_SA_INIT, 8 octets in a rekey."""

    number: int
    protocol: int
    spi: bytes
    transforms: tuple[Transform, ...]

    def of_type(self, transform_type: int) -> tuple[Transform, ...]:
        return tuple(t for t in self.transforms if t.transform_type == transform_type)


@dataclass(frozen=True)
class CipherSuite:
    """The negotiated algorithms of one IKE SA (exactly one per transform type)."""

    encr: EncrAlgorithm
    prf: PrfAlgorithm
    integ: IntegAlgorithm | None
    dh: DhGroup

    def __post_init__(self) -> None:
        """A CBC suite without INTEG would send unauthenticated SK payloads: refuse to build one."""
        if self.encr.aead != (self.integ is None):
            raise ValueError(f"{self.encr.name} needs {'no' if self.encr.aead else 'an'} integrity algorithm")

    @property
    def name(self) -> str:
        parts = [self.encr.name]
        if self.integ is not None:
            parts.append(self.integ.name)
        parts += [self.prf.name, self.dh.name]
        return "-".join(parts)

    def to_proposal(self, number: int = 1, spi: bytes = b"") -> Proposal:
        integs = (self.integ,) if self.integ else ()
        return ProposalSpec((self.encr,), integs, (self.prf,), (self.dh,)).to_proposal(number, spi)

    @classmethod
    def from_proposal(cls, proposal: Proposal) -> CipherSuite:
        """The suite of a single-choice proposal (a reply); ProposalError(BAD_REPLY) unless one per type."""
        picked: dict[int, Transform] = {}
        for transform in proposal.transforms:
            if transform.transform_type in picked:
                raise ProposalError(ProposalReason.BAD_REPLY, f"repeated type {transform.transform_type}")
            picked[transform.transform_type] = transform
        encr = _encr_of(picked.get(TransformType.ENCR))
        prf = _prf_of(picked.get(TransformType.PRF))
        dh = _dh_of(picked.get(TransformType.DH))
        integ_t = picked.get(TransformType.INTEG)
        no_integ = integ_t is None or integ_t.transform_id == IntegId.NONE
        integ = None if no_integ or integ_t is None else INTEGS.get(integ_t.transform_id)
        if encr is None or prf is None or dh is None:
            raise ProposalError(ProposalReason.BAD_REPLY, "missing or unknown ENCR/PRF/DH transform")
        if integ_t is not None and integ_t.transform_id != IntegId.NONE and integ is None:
            raise ProposalError(ProposalReason.BAD_REPLY, f"unknown INTEG {integ_t.transform_id}")
        if encr.aead != (integ is None):
            raise ProposalError(ProposalReason.BAD_REPLY, "INTEG must be absent exactly for AEAD ciphers")
        if set(picked) - {TransformType.ENCR, TransformType.PRF, TransformType.INTEG, TransformType.DH}:
            raise ProposalError(ProposalReason.BAD_REPLY, "transform type not valid for IKE")
        return cls(encr, prf, integ, dh)


def _encr_of(t: Transform | None) -> EncrAlgorithm | None:
    if t is None or not t.only_known_attributes or t.key_length is None:
        return None
    return ENCRS.get((t.transform_id, t.key_length))


def _prf_of(t: Transform | None) -> PrfAlgorithm | None:
    return None if t is None or t.attributes else PRFS.get(t.transform_id)


def _dh_of(t: Transform | None) -> DhGroup | None:
    return None if t is None or t.attributes else DH_GROUPS.get(t.transform_id)


@dataclass(frozen=True)
class ProposalSpec:
    """One configured proposal: acceptable algorithms per type, most preferred first."""

    encrs: tuple[EncrAlgorithm, ...]
    integs: tuple[IntegAlgorithm, ...]
    prfs: tuple[PrfAlgorithm, ...]
    dh_groups: tuple[DhGroup, ...]

    @property
    def aead(self) -> bool:
        return self.encrs[0].aead

    @property
    def name(self) -> str:
        algs: list[str] = [a.name for a in self.encrs] + [a.name for a in self.integs]
        algs += [a.name for a in self.prfs] + [a.name for a in self.dh_groups]
        return "-".join(algs)

    def to_proposal(self, number: int = 1, spi: bytes = b"") -> Proposal:
        transforms = [Transform.make(TransformType.ENCR, a.transform_id, a.key_bits) for a in self.encrs]
        transforms += [Transform.make(TransformType.PRF, a.transform_id) for a in self.prfs]
        transforms += [Transform.make(TransformType.INTEG, a.transform_id) for a in self.integs]
        transforms += [Transform.make(TransformType.DH, a.transform_id) for a in self.dh_groups]
        return Proposal(number, ProtocolId.IKE, spi, tuple(transforms))

    @classmethod
    def parse(cls, text: str) -> ProposalSpec:
        """A strongSwan IKE proposal such as "aes256gcm16-prfsha384-ecp384" or "aes128-sha256-modp2048".

        As in strongSwan, a non-AEAD proposal without an explicit PRF gets the PRFs matching its
        integrity algorithms, and an AEAD proposal must name its PRF.
        """
        encrs: list[EncrAlgorithm] = []
        integs: list[IntegAlgorithm] = []
        prfs: list[PrfAlgorithm] = []
        groups: list[DhGroup] = []
        for token in text.strip().lower().split("-"):
            if token in _ENCR_WORDS:
                encrs.append(_ENCR_WORDS[token])
            elif token in _INTEG_WORDS:
                integs.append(_INTEG_WORDS[token])
            elif token in _PRF_WORDS:
                prfs.append(_PRF_WORDS[token])
            elif token in _DH_WORDS:
                groups.append(_DH_WORDS[token])
            else:
                raise _bad_string(f"unknown algorithm {token!r} in {text!r}")
        if not encrs or not groups:
            raise _bad_string(f"{text!r} needs an encryption and a DH group")
        if len({e.aead for e in encrs}) != 1:
            raise _bad_string(f"{text!r} mixes AEAD and non-AEAD ciphers")
        if encrs[0].aead:
            if integs:
                raise _bad_string(f"{text!r}: AEAD takes no integrity")
            if not prfs:
                raise _bad_string(f"{text!r}: AEAD needs an explicit prf")
        else:
            if not integs:
                raise _bad_string(f"{text!r} needs an integrity algorithm")
            if not prfs:
                prfs = list(_dedupe(PRFS[_PRF_FOR_INTEG[i.transform_id]] for i in integs))
        return cls(_dedupe(encrs), _dedupe(integs), _dedupe(prfs), _dedupe(groups))


T = TypeVar("T")


def _dedupe(items: Iterable[T]) -> tuple[T, ...]:
    return tuple(dict.fromkeys(items))


def _bad_string(detail: str) -> ProposalError:
    return ProposalError(ProposalReason.BAD_PROPOSAL_STRING, detail)


def parse_proposals(text: str) -> tuple[ProposalSpec, ...]:
    """A comma-separated list of strongSwan proposals, most preferred first."""
    specs = tuple(ProposalSpec.parse(part) for part in text.split(",") if part.strip())
    if not specs:
        raise ProposalError(ProposalReason.BAD_PROPOSAL_STRING, "empty proposal list")
    return specs


def offer(specs: Sequence[ProposalSpec], spi: bytes = b"") -> tuple[Proposal, ...]:
    """Our SA payload's proposals, numbered from 1 (RFC 7296 s3.3)."""
    return tuple(spec.to_proposal(number, spi) for number, spec in enumerate(specs, 1))


_ENCR_WORDS: dict[str, EncrAlgorithm] = {alg.name: alg for alg in ENCRS.values()}
_ENCR_WORDS.update({"aes": _ENCR_WORDS["aes128"]})
_ENCR_WORDS.update({f"aes{bits}gcm128": _ENCR_WORDS[f"aes{bits}gcm16"] for bits in (128, 192, 256)})
_INTEG_WORDS: dict[str, IntegAlgorithm] = {alg.name: alg for alg in INTEGS.values()}
_INTEG_WORDS.update({f"sha2_{bits}": _INTEG_WORDS[f"sha{bits}"] for bits in (256, 384, 512)})
_PRF_WORDS: dict[str, PrfAlgorithm] = {alg.name: alg for alg in PRFS.values()}
_DH_WORDS: dict[str, DhGroup] = {group.name: group for group in DH_GROUPS.values()}
_DH_WORDS.update({"curve25519": _DH_WORDS["x25519"], "x448": _DH_WORDS["curve448"]})  # strongSwan spells both
_PRF_FOR_INTEG: dict[int, int] = {
    IntegId.HMAC_SHA1_96: PrfId.HMAC_SHA1,
    IntegId.HMAC_SHA2_256_128: PrfId.HMAC_SHA2_256,
    IntegId.HMAC_SHA2_384_192: PrfId.HMAC_SHA2_384,
    IntegId.HMAC_SHA2_512_256: PrfId.HMAC_SHA2_512,
}
_IKE_TYPES = frozenset((TransformType.ENCR, TransformType.PRF, TransformType.INTEG, TransformType.DH))


def _first(
    ours: Sequence[T], candidates: Sequence[Transform], decode: Callable[[Transform], T | None]
) -> Transform | None:
    for alg in ours:
        for transform in candidates:
            if decode(transform) == alg:
                return transform
    return None


def _integ_of(t: Transform) -> IntegAlgorithm | None:
    return None if t.attributes else INTEGS.get(t.transform_id)


def _match(spec: ProposalSpec, offered: Proposal, ke_group: int | None) -> tuple[Transform, ...] | None:
    """The transforms (copied from the offer) we would pick from `offered` under `spec`, or None."""
    if offered.protocol != ProtocolId.IKE:
        return None
    if any(t.transform_type not in _IKE_TYPES for t in offered.transforms):
        return None

    encr = _first(spec.encrs, offered.of_type(TransformType.ENCR), _encr_of)
    prf = _first(spec.prfs, offered.of_type(TransformType.PRF), _prf_of)
    groups: list[DhGroup] = list(spec.dh_groups)
    if ke_group is not None and ke_group in DH_GROUPS and DH_GROUPS[ke_group] in groups:
        groups.remove(DH_GROUPS[ke_group])
        groups.insert(0, DH_GROUPS[ke_group])
    dh = _first(groups, offered.of_type(TransformType.DH), _dh_of)
    if encr is None or prf is None or dh is None:
        return None
    offered_integs = offered.of_type(TransformType.INTEG)
    if spec.aead:
        if any(t.transform_id != IntegId.NONE for t in offered_integs):
            return None  # an AEAD cipher next to a real INTEG transform is malformed (RFC 5282)
        return (encr, prf, dh)
    integ = _first(spec.integs, offered_integs, _integ_of)
    if integ is None:
        return None
    return (encr, prf, integ, dh)


def select_proposal(
    own: Sequence[ProposalSpec], offered: Sequence[Proposal], *, ke_group: int | None = None, spi: bytes = b""
) -> tuple[Proposal, CipherSuite]:
    """Responder choice: our reply proposal (peer's number, our `spi`) and its suite (see module doc)."""
    for spec in own:
        for proposal in offered:
            picked = _match(spec, proposal, ke_group)
            if picked is not None:
                reply = Proposal(proposal.number, ProtocolId.IKE, spi, picked)
                return reply, CipherSuite.from_proposal(reply)
    raise ProposalError(ProposalReason.NO_PROPOSAL_CHOSEN, "no offered IKE proposal matches our policy")


def check_reply(offered: Sequence[Proposal], reply: Proposal) -> CipherSuite:
    """Initiator check (RFC 7296 s3.3.6): the reply is one of our proposals narrowed to one transform each."""
    mine = [p for p in offered if p.number == reply.number and p.protocol == reply.protocol]
    if not mine:
        raise ProposalError(ProposalReason.BAD_REPLY, f"reply names proposal {reply.number} we did not offer")
    if not any(all(t in p.transforms for t in reply.transforms) for p in mine):
        raise ProposalError(ProposalReason.BAD_REPLY, "reply carries a transform we did not offer")
    suite = CipherSuite.from_proposal(reply)
    types = {t.transform_type for t in reply.transforms}
    if types - _IKE_TYPES or not {TransformType.ENCR, TransformType.PRF, TransformType.DH} <= types:
        raise ProposalError(ProposalReason.BAD_REPLY, "reply lacks a mandatory transform type")
    return suite
