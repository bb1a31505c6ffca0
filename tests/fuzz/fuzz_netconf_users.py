"""Fuzz target: the NETCONF users file parser (nf_netconf.users.load_users) raises only UsersFileError."""

from __future__ import annotations

from nf_netconf.users import UsersFileError, load_users


def fuzz_one(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        users, nacm = load_users(text)
    except UsersFileError:
        return
    for name, user in users.items():
        assert user.name == name
        assert user.password_hash is not None or user.keys
    assert all(rule.access for rule in nacm.rules)
