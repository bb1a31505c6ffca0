"""Throwaway credentials for the demo's two instances, written into one private (0700) directory.

A CA and two ECDSA P-256 end-entity certificates authenticate the IKE SA, an ed25519 SSH host key per
NETCONF server (the demo pins it, so ncclient verifies the server it configures) and a users file whose only
user has a random password. Nothing here outlives the directory; the password lives in a `Login` whose repr
hides it, and no private key is ever printed.
"""

from __future__ import annotations

import datetime
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from nf_netconf.users import hash_password

USERNAME = "demo"
VALIDITY = datetime.timedelta(days=1)
CLOCK_SKEW = datetime.timedelta(minutes=5)


class Login:
    """The NETCONF user and its password; repr/str never show the password."""

    __slots__ = ("_password", "username")

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password

    def __repr__(self) -> str:
        return f"Login({self.username!r}, <password hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("a Login is not serializable")

    def ncclient_arguments(self) -> dict[str, str]:
        """What ncclient's manager.connect needs; handed straight to it, never stored or logged."""
        return {"username": self.username, "password": self._password}


@dataclass(frozen=True, slots=True)
class InstanceFiles:
    """One instance's files: its IKE identity (certificate, key) and its NETCONF server's SSH host key."""

    fqdn: str
    certificate: Path
    private_key: Path
    host_key: Path
    host_key_b64: str  # the public host key blob, as ncclient's hostkey_b64 wants it


@dataclass(frozen=True, slots=True)
class DemoCredentials:
    directory: Path
    ca_certificate: Path
    users_file: Path
    login: Login
    instances: dict[str, InstanceFiles]


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "twamp-nf demo"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca(now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("twamp-nf demo CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _end_entity(
    fqdn: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, now: datetime.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(fqdn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(fqdn)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _host_key(path: Path) -> str:
    key = Ed25519PrivateKey.generate()
    _write(
        path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.split()[1].decode()


def _users_file(path: Path, login: Login, password_hash: str) -> None:
    text = (
        f'[users.{login.username}]\npassword-hash = "{password_hash}"\ngroups = ["admin"]\n\n'
        '[nacm]\nread-default = "permit"\nwrite-default = "deny"\nexec-default = "permit"\n\n'
        '[[nacm.rule]]\ngroups = ["admin"]\naccess = "*"\naction = "permit"\n'
    )
    _write(path, text.encode())


def create_credentials(directory: Path, fqdns: dict[str, str]) -> DemoCredentials:
    """Everything both instances need, in `directory` (which must exist and be private): `fqdns` maps an
    instance name to its IKE identity (also its certificate's subject CN and DNS SAN)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = _ca(now)
    ca_path = directory / "ca.crt.pem"
    _write(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    instances: dict[str, InstanceFiles] = {}
    for name, fqdn in fqdns.items():
        key, cert = _end_entity(fqdn, ca_key, ca_cert, now)
        cert_path, key_path = directory / f"{name}.crt.pem", directory / f"{name}.key.pem"
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(key_path, _pem_key(key))
        host_key = directory / f"{name}.ssh_host_ed25519_key"
        instances[name] = InstanceFiles(fqdn, cert_path, key_path, host_key, _host_key(host_key))
    password = secrets.token_urlsafe(24)
    login = Login(USERNAME, password)
    users = directory / "netconf-users.toml"
    _users_file(users, login, hash_password(password))
    return DemoCredentials(directory, ca_path, users, login, instances)
