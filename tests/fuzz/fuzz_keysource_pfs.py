"""Fuzz target: the perfSONAR pfs key-file parser (KeyChain.from_pfs_text) only ever raises ValueError, and a
file it accepts gives a key-chain whose repr names key-ids only."""

from __future__ import annotations

from nf.twamp.keysource import KeyChain


def fuzz_one(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        chain = KeyChain.from_pfs_text(text, "fuzz.pfs")
    except ValueError:
        return
    for key_id in chain.key_ids():
        assert chain.secret_for(key_id.encode("utf-8")) is not None
    assert "SharedSecret" not in repr(chain)
