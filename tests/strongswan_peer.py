"""Private strongSwan charon daemons as test peers.

Each instance runs the Debian charon in its own mount namespace (a tmpfs on /run holds the fixed pidfile),
with its own ports, VICI socket, configuration and file log, and leaves no kernel state behind: kernel-netlink
is loaded only because libcharon needs a kernel backend, routing_table = 0 keeps it off `ip rule`, and the
connections are childless so no XFRM SA or policy is ever installed. The file log runs IKE at level 4 so the
keying material can be read back and compared with ours (test keys only).

Credentials (an ECDSA P-256 CA and ECDSA P-256 / RSA-2048 / Ed25519 end-entity certificates) are generated
with `cryptography` so the Python side can load the very same files.
"""

from __future__ import annotations

import datetime
import hmac
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

CHARON = "/usr/lib/ipsec/charon"
PLUGINS = (
    "random nonce openssl pem pkcs1 pkcs8 x509 pubkey constraints revocation sha1 sha2 hmac kdf gmp aes "
    "gcm kernel-netlink socket-default vici"
)
CRED_DIRS = ("x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey", "private", "rsa", "ecdsa",
             "bliss", "pkcs8", "pkcs12")

_HDR = re.compile(r"\[IKE\] <(?:[^|>]+\|)?(\d+)> (.+?) => (\d+) bytes @ 0x[0-9a-f]+$")
_ROW = re.compile(r"\[IKE\] <[^>]+>\s+\d+: ((?:[0-9A-F]{2} ){1,16})")
_REKEYED = re.compile(r"\[IKE\] <(?:[^|>]+\|)?(\d+)> IKE_SA \S+\[(\d+)\] rekeyed between")


class CharonError(RuntimeError):
    """A charon or swanctl step failed; the message carries the tool's output for the test log."""


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A currently free UDP port (charon binds 0.0.0.0, so probe the wildcard address)."""
    del host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("0.0.0.0", 0))
        return int(probe.getsockname()[1])


def _udp_port_bound(port: int) -> bool:
    """Whether some IPv4 UDP socket is bound to `port` (charon binds 0.0.0.0:port)."""
    with open("/proc/net/udp", encoding="ascii") as table:
        rows = table.read().splitlines()[1:]
    return any(row.split()[1].rsplit(":", 1)[1] == f"{port:04X}" for row in rows)


# --------------------------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Identity:
    """An end entity: FQDN identity, its key type and where its PEM files are."""

    name: str
    key_type: str
    cert: Path
    key: Path


@dataclass(frozen=True)
class CharonPKI:
    directory: Path
    ca_cert: Path
    ca_key: Path
    identities: dict[str, Identity]

    def identity(self, name: str) -> Identity:
        return self.identities[name]


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _private_key(key_type: str) -> PrivateKey:
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}")


def _write_key(path: Path, key: PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)


def make_pki(directory: Path, names: dict[str, str]) -> CharonPKI:
    """An ECDSA P-256 CA and one certificate per `name -> key type`, SAN dNSName = name (charon's FQDN ID)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "twamp-nf test"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "twamp-nf test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_cert_path, ca_key_path = directory / "ca.crt", directory / "ca.key"
    ca_cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key_path, ca_key)
    identities: dict[str, Identity] = {}
    for name, key_type in names.items():
        key = _private_key(key_type)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "twamp-nf test"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        identities[name] = Identity(name, key_type, cert_path, key_path)
    return CharonPKI(directory, ca_cert_path, ca_key_path, identities)


# ------------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Connection:
    """One childless swanctl connection (no `children` section, so charon never touches the kernel)."""

    name: str
    local_port: int
    remote_port: int
    local_id: str
    remote_id: str
    proposals: str = "aes128-sha256-modp2048"
    auth: str = "psk"  # "psk", "pubkey" or a signature constraint such as "rsa/pss"
    cert: Identity | None = None  # our certificate when auth = pubkey
    local_addr: str = "127.0.0.1"
    remote_addr: str = "127.0.0.1"
    rekey_time: str = "0"
    dpd_delay: str = "0"
    childless: str = "force"
    extra: str = ""

    def render(self) -> str:
        local_auth = f"auth = {self.auth}\n      id = {self.local_id}"
        if self.auth != "psk":
            if self.cert is None:
                raise ValueError("pubkey auth needs a certificate")
            local_auth += f"\n      certs = {self.cert.cert.name}"
        remote_auth = f"auth = {self.auth}\n      id = {self.remote_id}"
        if self.auth != "psk":
            remote_auth += "\n      cacerts = ca.crt"
        return f"""
  {self.name} {{
    version = 2
    local_addrs = {self.local_addr}
    remote_addrs = {self.remote_addr}
    local_port = {self.local_port}
    remote_port = {self.remote_port}
    proposals = {self.proposals}
    childless = {self.childless}
    mobike = no
    fragmentation = no
    rekey_time = {self.rekey_time}
    reauth_time = 0
    dpd_delay = {self.dpd_delay}
    send_certreq = yes
    send_cert = always
    unique = never
    {self.extra}
    local {{
      {local_auth}
    }}
    remote {{
      {remote_auth}
    }}
  }}"""


def psk_secret_block(name: str, ids: tuple[str, str], secret: bytes) -> str:
    return f"""
  ike-{name} {{
    id-1 = {ids[0]}
    id-2 = {ids[1]}
    secret = 0x{secret.hex()}
  }}"""


# ------------------------------------------------------------------------------------------------ log keys


@dataclass
class LoggedKeys:
    """Keying material charon logged for one IKE SA derivation (test keys only; never printed).

    `uid` is the unique id of the IKE SA the keys belong to (for a rekey: the new SA, whatever prefix the log
    line carried); `spis` comes from the natd_chunk dumps of IKE_SA_INIT, and is None for a rekey.
    """

    uid: int
    secrets: dict[str, bytes] = field(default_factory=dict)
    spis: tuple[bytes, bytes] | None = None

    def __repr__(self) -> str:
        return f"LoggedKeys(uid={self.uid}, names={sorted(self.secrets)})"

    @property
    def prf(self) -> str:
        """SK_d is as long as the PRF output (RFC 7296 s2.13), which names the HMAC hash unambiguously."""
        return _PRF_BY_SIZE[len(self.secrets["Sk_d"])]

    def ippm_secret_bytes(self) -> bytes:
        """prf(SK_d, "IPPM") (RFC 7717 s5.1) computed independently from the logged SK_d."""
        return hmac.new(self.secrets["Sk_d"], b"IPPM", self.prf).digest()


_PRF_BY_SIZE = {20: "sha1", 32: "sha256", 48: "sha384", 64: "sha512"}


def parse_key_log(text: str) -> list[LoggedKeys]:
    """Every complete key derivation in log order.

    charon logs a rekey derivation under the *old* SA's prefix on the rekey initiator and under the new one on
    the responder; the following "IKE_SA name[N] rekeyed" line names the new unique id, so the latest
    derivation logged under N, else the latest under the old id, is re-attributed to N.
    """
    derivations: list[LoggedKeys] = []
    open_by_uid: dict[int, LoggedKeys] = {}
    spis: dict[int, tuple[bytes, bytes]] = {}
    current: tuple[int, str, bytearray] | None = None

    def finish() -> None:
        if current is None:
            return
        uid, label, data = current
        if label == "natd_chunk" and len(data) >= 16 and bytes(data[8:16]) != bytes(8):
            spis.setdefault(uid, (bytes(data[0:8]), bytes(data[8:16])))
        elif label.startswith("Sk_"):
            name = label.split()[0]
            keys = open_by_uid.get(uid)
            if keys is None or name in keys.secrets:
                keys = LoggedKeys(uid)
                open_by_uid[uid] = keys
                derivations.append(keys)
            keys.secrets[name] = bytes(data)

    for line in text.splitlines():
        head = _HDR.search(line)
        if head:
            finish()
            current = (int(head[1]), head[2], bytearray())
            continue
        row = _ROW.search(line)
        if row and current is not None:
            current[2].extend(bytes.fromhex(row[1].replace(" ", "")))
            continue
        finish()
        current = None
        rekeyed = _REKEYED.search(line)
        if rekeyed:
            old, new = int(rekeyed[1]), int(rekeyed[2])
            # a derivation logged under the new id is the new SA's own; in a rekey collision the one under
            # the old id may belong to the redundant SA charon created, so it is only the fallback
            keys = next((k for k in reversed(derivations) if k.uid == new), None) or next(
                (k for k in reversed(derivations) if k.uid == old), None
            )
            if keys is not None:
                keys.uid, keys.spis = new, None
            open_by_uid.pop(old, None)
            open_by_uid.pop(new, None)
    finish()
    # natd_chunk dumps come before the derivation on the responder and after it on the initiator
    for keys in derivations:
        if keys.spis is None and keys.uid in spis and keys is _first_of(derivations, keys.uid):
            keys.spis = spis[keys.uid]
    return [keys for keys in derivations if "Sk_d" in keys.secrets]


def _first_of(derivations: list[LoggedKeys], uid: int) -> LoggedKeys | None:
    return next((keys for keys in derivations if keys.uid == uid), None)


# ------------------------------------------------------------------------------------------------ charon


@dataclass(frozen=True)
class SaInfo:
    conn: str
    uniqueid: int
    state: str
    spi_i: bytes
    spi_r: bytes
    initiator: bool
    local_id: str
    remote_id: str
    encr: str
    prf: str
    dh: str


def _parse_list_sas(text: str) -> list[SaInfo]:
    """`swanctl --list-sas --pretty`: nested `name {` / `key = value` lines; depth 1 is the connection."""
    sas: list[SaInfo] = []
    depth = 0
    conn = ""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.endswith("{"):
            depth += 1
            if depth == 2:
                conn = line[:-1].strip().rstrip("=").strip()
                values = {}
            continue
        if line == "}":
            if depth == 2 and values:
                sas.append(
                    SaInfo(
                        conn=conn,
                        uniqueid=int(values.get("uniqueid", "0")),
                        state=values.get("state", ""),
                        spi_i=bytes.fromhex(values.get("initiator-spi", "0" * 16)),
                        spi_r=bytes.fromhex(values.get("responder-spi", "0" * 16)),
                        initiator=values.get("initiator") == "yes",
                        local_id=values.get("local-id", ""),
                        remote_id=values.get("remote-id", ""),
                        encr=values.get("encr-alg", ""),
                        prf=values.get("prf-alg", ""),
                        dh=values.get("dh-group", ""),
                    )
                )
            depth -= 1
            continue
        if depth == 2 and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            values[key] = value
    return sas


class Charon:
    """One private charon daemon; use as a context manager so it is stopped and its files removed."""

    def __init__(
        self,
        name: str = "c",
        port: int | None = None,
        address: str = "127.0.0.1",
        *,
        rsa_pss: bool = False,
        ike_log_level: int = 4,
    ) -> None:
        """`rsa_pss`: charon signs with RSASSA-PSS instead of PKCS#1 v1.5 (charon.rsa_pss).
        `ike_log_level` 4 logs the keys the tests compare; a benchmark uses 1 (no hex dumps)."""
        self.name = name
        self.rsa_pss = rsa_pss
        self.ike_log_level = ike_log_level
        self.address = address
        self.port = port if port is not None else free_udp_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"sw{name}-", dir="/tmp"))
        self.conf = self.dir / "strongswan.conf"
        self.vici = self.dir / "charon.vici"
        self.log = self.dir / "charon.log"
        self.swanctl_dir = self.dir / "swanctl"
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Charon({self.name!r}, {self.address}:{self.port})"

    def __enter__(self) -> Charon:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        return {**os.environ, "STRONGSWAN_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        self.conf.write_text(
            f"""charon {{
  port = {self.port}
  port_nat_t = 0
  install_routes = no
  install_virtual_ip = no
  routing_table = 0
  retransmit_tries = 3
  rsa_pss = {"yes" if self.rsa_pss else "no"}
  retransmit_timeout = 2.0
  cookie_threshold = 1000
  load_modular = no
  load = {PLUGINS}
  plugins {{
    socket-default {{
      use_ipv6 = no
    }}
    vici {{
      socket = unix://{self.vici}
    }}
  }}
  filelog {{
    main {{
      path = {self.log}
      time_format = %T
      time_add_ms = yes
      ike_name = yes
      flush_line = yes
      append = no
      default = 1
      ike = {self.ike_log_level}
      cfg = 2
      net = 2
      enc = 1
    }}
  }}
  syslog {{
    daemon {{
      default = -1
    }}
  }}
}}
swanctl {{
  socket = unix://{self.vici}
  load = pem pkcs1 pkcs8 x509 pubkey openssl random nonce
}}
"""
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start charon; if another process took our port in the meantime, retry on a fresh one."""
        for attempt in range(5):
            try:
                self._start_once(timeout)
                return
            except CharonError:
                self._terminate()
                if attempt == 4:
                    raise
                self.port = free_udp_port()

    def _start_once(self, timeout: float) -> None:
        self._write_conf()
        for sub in CRED_DIRS:
            (self.swanctl_dir / sub).mkdir(parents=True, exist_ok=True)
        stdout = open(self.dir / "stdout.txt", "wb")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c",
                 f"mount -t tmpfs tmpfs /run && exec {CHARON}"],
                env=self._env(),
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            stdout.close()
        deadline = time.monotonic() + timeout
        while not self.vici.exists() or not _udp_port_bound(self.port):
            if self._proc.poll() is not None:
                raise CharonError(f"{self!r} exited at start: {self.output()}")
            if time.monotonic() > deadline:
                raise CharonError(f"{self!r} did not open its sockets in {timeout}s: {self.output()}")
            time.sleep(0.02)
        # socket-default loads before vici, so a failed bind is already logged once the VICI socket exists
        if "unable to bind socket" in self.log_text():  # somebody took the port first
            raise CharonError(f"{self!r} could not bind its port")

    def output(self) -> str:
        parts = []
        for path in (self.dir / "stdout.txt", self.log):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown closes sockets and their bypass policies), SIGKILL if it hangs."""
        self._terminate()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        if self.vici.exists():
            self.vici.unlink()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ---- swanctl

    def swanctl(self, *args: str, timeout: float = 60.0, check: bool = True) -> str:
        proc = subprocess.run(
            ["swanctl", *args], env=self._env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        out = proc.stdout + proc.stderr
        if check and proc.returncode != 0:
            raise CharonError(f"swanctl {' '.join(args)} failed ({proc.returncode}): {out[-3000:]}")
        return out

    def load(
        self,
        connections: list[Connection],
        psk: bytes | None = None,
        pki: CharonPKI | None = None,
    ) -> None:
        """Write swanctl.conf (+ credentials) and load everything over this instance's VICI socket."""
        secrets = ""
        if psk is not None:
            for conn in connections:
                if conn.auth == "psk":
                    secrets += psk_secret_block(conn.name, (conn.local_id, conn.remote_id), psk)
        if pki is not None:
            shutil.copy(pki.ca_cert, self.swanctl_dir / "x509ca" / "ca.crt")
            for conn in connections:
                if conn.cert is not None:
                    shutil.copy(conn.cert.cert, self.swanctl_dir / "x509" / conn.cert.cert.name)
                    shutil.copy(conn.cert.key, self.swanctl_dir / "private" / conn.cert.key.name)
        conns = "".join(c.render() for c in connections)
        body = f"connections {{{conns}\n}}\nsecrets {{{secrets}\n}}\n"
        (self.swanctl_dir / "swanctl.conf").write_text(body)
        self.swanctl("--load-all", "--noprompt", "--file", str(self.swanctl_dir / "swanctl.conf"))

    def initiate(self, conn: str, timeout: float = 60.0) -> str:
        """Childless: `--ike` only. Raises CharonError naming charon's output when it fails."""
        return self.swanctl("--initiate", "--ike", conn, "--timeout", str(int(timeout)), timeout=timeout + 10)

    def terminate(self, uniqueid: int, timeout: float = 60.0) -> str:
        return self.swanctl(
            "--terminate", "--ike-id", str(uniqueid), "--timeout", str(int(timeout)), timeout=timeout + 10
        )

    def rekey(self, uniqueid: int) -> str:
        return self.swanctl("--rekey", "--ike-id", str(uniqueid))

    def list_sas(self) -> list[SaInfo]:
        return _parse_list_sas(self.swanctl("--list-sas", "--pretty"))

    def wait_sa(
        self, predicate: object = None, timeout: float = 60.0, spis: tuple[bytes, bytes] | None = None,
        state: str = "ESTABLISHED",
    ) -> SaInfo:
        """Poll --list-sas until an SA in `state` (optionally with these SPIs) appears."""
        del predicate
        deadline = time.monotonic() + timeout
        while True:
            for sa in self.list_sas():
                if sa.state == state and (spis is None or (sa.spi_i, sa.spi_r) == spis):
                    return sa
            if time.monotonic() > deadline:
                raise CharonError(f"{self!r}: no {state} SA {spis!r} after {timeout}s: {self.output()}")
            time.sleep(0.05)

    def wait_gone(self, spis: tuple[bytes, bytes], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while any((sa.spi_i, sa.spi_r) == spis for sa in self.list_sas()):
            if time.monotonic() > deadline:
                raise CharonError(f"{self!r}: SA {spis!r} still present after {timeout}s")
            time.sleep(0.05)

    # ---- keys

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def keys_for(self, spis: tuple[bytes, bytes], timeout: float = 30.0) -> LoggedKeys:
        """The latest key derivation charon logged for the IKE SA with these SPIs.

        IKE_SA_INIT derivations are matched by the SPIs of their natd_chunk dumps; a rekeyed SA (no NAT-D in
        CREATE_CHILD_SA) through its unique id from --list-sas.
        """
        deadline = time.monotonic() + timeout
        while True:
            derivations = parse_key_log(self.log_text())
            uid = next((sa.uniqueid for sa in self.list_sas() if (sa.spi_i, sa.spi_r) == spis), None)
            for keys in reversed(derivations):
                if keys.spis == spis or (uid is not None and keys.uid == uid):
                    return keys
            if time.monotonic() > deadline:
                raise CharonError(f"{self!r}: no logged keys for SPIs {spis[0].hex()}/{spis[1].hex()}")
            time.sleep(0.05)
