from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def test_pfs_file_refuses_a_repeated_key_id_and_non_utf8(tmp_path: Path) -> None:
    pfs = tmp_path / "dup.pfs"
    pfs.write_text("alice 00\nbob 01\nalice 02\n")
    with pytest.raises(ValueError, match=r"dup\.pfs:3: key-id 'alice' appears twice"):
        KeyChain.from_pfs_file(str(pfs))
    binary = tmp_path / "binary.pfs"
    binary.write_bytes(b"alice 00\n\xff\xfe 01\n")
    with pytest.raises(ValueError, match=r"binary\.pfs: not UTF-8 text \(octet 9\)"):
        KeyChain.from_pfs_file(str(binary))
    nul = tmp_path / "nul.pfs"
    nul.write_text("alice\0 00\n")
    with pytest.raises(ValueError, match=r"nul\.pfs:1: key-id 'alice\\x00' contains NUL"):
        KeyChain.from_pfs_file(str(nul))
    long = tmp_path / "long.pfs"
    long.write_text("a" * 81 + " 00\n")
    with pytest.raises(ValueError, match=r"long\.pfs:1: key-id"):
        KeyChain.from_pfs_file(str(long))


_KEY_IDS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), blacklist_characters="#"),
    min_size=1,
    max_size=20,
)


@given(st.dictionaries(_KEY_IDS, st.binary(min_size=1, max_size=64), max_size=8), st.booleans())
def test_pfs_text_round_trip(secrets: dict[str, bytes], comments: bool) -> None:
    note = "  # note" if comments else ""
    lines = [f"{key_id} {secret.hex()}{note}" for key_id, secret in secrets.items()]
    text = ("# header\n\n" if comments else "") + "\n".join(lines) + "\n"
    chain = KeyChain.from_pfs_text(text)
    assert chain.key_ids() == sorted(secrets)
    for key_id, secret in secrets.items():
        assert chain.secret_for(key_id.encode("utf-8")) == SharedSecret(secret)
    assert repr(chain) == f"KeyChain(key_ids={sorted(secrets)!r})"  # key-ids only, never a secret
