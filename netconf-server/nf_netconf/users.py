"""The users file: who may log in (scrypt password hash and/or SSH public keys), their NACM groups and rules.

TOML, read once at start::

    [users.alice]
    password-hash = "scrypt$16384$8$1$<salt b64>$<hash b64>"   # twamp-nf netconf --hash-password
    authorized-keys = ["ssh-ed25519 AAAA... alice@host"]
    groups = ["admin"]

    [nacm]                      # optional; RFC 8341 defaults shown
    enable-nacm = true
    read-default = "permit"
    write-default = "deny"
    exec-default = "permit"

    [[nacm.rule]]               # first match wins, in file order
    groups = ["admin"]          # or ["*"]
    module = "*"                # module name or "*"
    path = "/"                  # data path prefix, e.g. "/twamp-nf-twamp:twamp/server"; or rpc = "commit"
    access = "*"                # "*" or a list of create, read, update, delete, exec
    action = "permit"

Passwords are never stored in clear: only the scrypt hash, compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

import paramiko

from nf_netconf.nacm import ACCESS, Nacm, Rule

_SCRYPT = (16384, 8, 1)


class UsersFileError(ValueError):
    """The users file is unusable; the text names the entry, never a password or hash."""


@dataclass
class User:
    name: str
    password_hash: str | None
    keys: list[paramiko.PKey] = field(default_factory=list)
    groups: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"User({self.name!r}, groups={sorted(self.groups)}, keys={len(self.keys)})"

    def check_password(self, password: str) -> bool:
        if self.password_hash is None:
            return False
        return verify_password(self.password_hash, password)

    def check_key(self, key: paramiko.PKey) -> bool:
        return any(k.get_name() == key.get_name() and k.asbytes() == key.asbytes() for k in self.keys)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The users-file form of a password: scrypt with a random 16-octet salt."""
    salt = os.urandom(16) if salt is None else salt
    n, r, p = _SCRYPT
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return "$".join(
        ["scrypt", str(n), str(r), str(p), base64.b64encode(salt).decode(), base64.b64encode(digest).decode()]
    )


def verify_password(stored: str, password: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(digest_b64, validate=True)
        digest = hashlib.scrypt(
            password.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected), maxmem=2**26
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


KEY_TYPES = frozenset(
    {"ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"}
)


def parse_public_key(line: str) -> paramiko.PKey:
    parts = line.split()
    if len(parts) < 2:
        raise ValueError("expected 'TYPE BASE64 [comment]'")
    if parts[0] not in KEY_TYPES:
        raise ValueError(f"key type must be one of {', '.join(sorted(KEY_TYPES))}")
    return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1], validate=True))


def load_users(text: str) -> tuple[dict[str, User], Nacm]:
    """Parse the users file text; raise UsersFileError with the offending entry."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsersFileError(f"not TOML: {exc}") from None
    unknown = set(doc) - {"users", "nacm"}
    if unknown:
        raise UsersFileError(f"unknown sections: {', '.join(sorted(unknown))}")
    users: dict[str, User] = {}
    for name, entry in _table(doc, "users", "users").items():
        if not isinstance(entry, dict):
            raise UsersFileError(f"users.{name} must be a table")
        extra = set(entry) - {"password-hash", "authorized-keys", "groups"}
        if extra:
            raise UsersFileError(f"users.{name}: unknown keys {', '.join(sorted(extra))}")
        password_hash = entry.get("password-hash")
        if password_hash is not None and (
            not isinstance(password_hash, str) or not password_hash.startswith("scrypt$")
        ):
            raise UsersFileError(
                f"users.{name}.password-hash must be a scrypt hash (twamp-nf netconf --hash-password)"
            )
        keys: list[paramiko.PKey] = []
        for index, line in enumerate(_str_list(entry, "authorized-keys", f"users.{name}")):
            try:
                keys.append(parse_public_key(line))
            except Exception as exc:  # paramiko's key parsers raise many types for a bad blob
                raise UsersFileError(
                    f"users.{name}.authorized-keys[{index}]: {exc or type(exc).__name__}"
                ) from None
        if password_hash is None and not keys:
            raise UsersFileError(f"users.{name} has neither password-hash nor authorized-keys")
        groups = frozenset(_str_list(entry, "groups", f"users.{name}"))
        users[name] = User(name, password_hash, keys, groups)
    return users, _load_nacm(_table(doc, "nacm", "nacm"))


def _table(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise UsersFileError(f"{where} must be a table")
    return value


def _str_list(entry: dict[str, Any], key: str, where: str) -> list[str]:
    value = entry.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsersFileError(f"{where}.{key} must be a list of strings")
    return list(value)


def _action(table: dict[str, Any], key: str, default: str, where: str) -> bool:
    value = table.get(key, default)
    if value not in ("permit", "deny"):
        raise UsersFileError(f"{where}.{key} must be 'permit' or 'deny'")
    return bool(value == "permit")


def _load_nacm(table: dict[str, Any]) -> Nacm:
    extra = set(table) - {"enable-nacm", "read-default", "write-default", "exec-default", "rule"}
    if extra:
        raise UsersFileError(f"nacm: unknown keys {', '.join(sorted(extra))}")
    enable = table.get("enable-nacm", True)
    if not isinstance(enable, bool):
        raise UsersFileError("nacm.enable-nacm must be true or false")
    rules: list[Rule] = []
    raw_rules = table.get("rule", [])
    if not isinstance(raw_rules, list):
        raise UsersFileError("nacm.rule must be an array of tables ([[nacm.rule]])")
    for index, raw in enumerate(raw_rules):
        where = f"nacm.rule[{index}]"
        if not isinstance(raw, dict):
            raise UsersFileError(f"{where} must be a table")
        extra = set(raw) - {"groups", "module", "path", "rpc", "access", "action"}
        if extra:
            raise UsersFileError(f"{where}: unknown keys {', '.join(sorted(extra))}")
        access = raw.get("access", "*")
        if access == "*":
            ops = ACCESS
        else:
            ops = frozenset(_str_list(raw, "access", where))
            if not ops <= ACCESS:
                raise UsersFileError(f"{where}.access: unknown operations {', '.join(sorted(ops - ACCESS))}")
        path = raw.get("path")
        rpc = raw.get("rpc")
        module = raw.get("module", "*")
        if path is not None and rpc is not None:
            raise UsersFileError(f"{where}: a rule has a path or an rpc, not both")
        if not all(v is None or isinstance(v, str) for v in (path, rpc, module)):
            raise UsersFileError(f"{where}: module, path and rpc are strings")
        if path is not None and not path.startswith("/"):
            raise UsersFileError(f"{where}.path must be absolute")
        if "action" not in raw:
            raise UsersFileError(f"{where}.action is required")
        rules.append(
            Rule(
                groups=frozenset(_str_list(raw, "groups", where)) or frozenset({"*"}),
                module=module,
                path=path,
                rpc=rpc,
                access=ops,
                permit=_action(raw, "action", "deny", where),
            )
        )
    return Nacm(
        enabled=enable,
        read_default=_action(table, "read-default", "permit", "nacm"),
        write_default=_action(table, "write-default", "deny", "nacm"),
        exec_default=_action(table, "exec-default", "permit", "nacm"),
        rules=tuple(rules),
    )
