from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from nf.twamp.keysource import KeyChain, SharedSecret


def test_kek_is_pbkdf2_hmac_sha1_16_octets() -> None:
    salt = bytes(range(16))
    expected = hashlib.pbkdf2_hmac("sha1", b"secret", salt, 1024, 16)
    assert SharedSecret(b"secret").derive_kek(salt, 1024) == expected
    assert "secret" not in repr(SharedSecret(b"secret"))


def test_pfs_file(tmp_path: Path) -> None:
    pfs = tmp_path / "twamp.pfs"
    pfs.write_text("# comment\nalice 0102ff\n\nbob deadbeef  # trailing\n")
    chain = KeyChain.from_pfs_file(str(pfs))
    assert chain.key_ids() == ["alice", "bob"]
    salt = bytes(16)
    found = chain.secret_for(b"alice" + bytes(75))
    assert found is not None
    assert found.derive_kek(salt, 1024) == SharedSecret(b"\x01\x02\xff").derive_kek(salt, 1024)
    assert chain.secret_for(b"carol") is None
    assert "0102ff" not in repr(chain)


@pytest.mark.parametrize("line", ["alice", "alice zz", "alice 01 02"])
def test_pfs_file_errors_name_the_line(tmp_path: Path, line: str) -> None:
    pfs = tmp_path / "bad.pfs"
    pfs.write_text(f"ok 00\n{line}\n")
    with pytest.raises(ValueError, match=r"bad\.pfs:2"):
        KeyChain.from_pfs_file(str(pfs))
