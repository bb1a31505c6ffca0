"""SSH for NETCONF (RFC 6242) on the `netconf` library: host key, authentication, a listener bound to a given
address, and a cap on SSH connections.

`netconf.server.NetconfSSHServer` binds every interface itself and runs the SSH handshake of each new client
on its single accept thread; `BoundSSHServer` keeps its session bookkeeping but binds the configured address
and hands each handshake to its own thread, so one silent client cannot stall the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
from pathlib import Path
from typing import Any

import netconf.server
import paramiko
import sshutil.server
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nf_netconf.errors import Counters, Reason
from nf_netconf.users import User

log = logging.getLogger(__name__)


def load_or_create_host_key(path: str | os.PathLike[str]) -> paramiko.PKey:
    """An ed25519 host key (yangcli's libssh2 cannot use RSA with SHA-2); created 0600 when missing."""
    key_path = Path(path)
    if not key_path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        log.info("generated an ed25519 host key in %s", key_path)
    key = sshutil.server.from_private_key_file(str(key_path))
    if key is None:
        raise ValueError(f"{key_path}: not a private key paramiko can read")
    return key


class AuthController(paramiko.ServerInterface):  # type: ignore[misc]
    """Password (scrypt hash) and public-key auth from the users file; the NETCONF subsystem only."""

    def __init__(self, users: dict[str, User], counters: Counters) -> None:
        self.users = users
        self.counters = counters

    def get_allowed_auths(self, username: str) -> str:
        return "publickey,password"

    def check_auth_none(self, username: str) -> int:
        return int(paramiko.AUTH_FAILED)

    def check_auth_password(self, username: str, password: str) -> int:
        user = self.users.get(username)
        if user is not None and password and user.check_password(password):
            return int(paramiko.AUTH_SUCCESSFUL)
        self.counters.count(Reason.AUTH_FAILED)
        log.warning("password authentication failed for user %r", username)
        return int(paramiko.AUTH_FAILED)

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        user = self.users.get(username)
        if user is not None and user.check_key(key):
            return int(paramiko.AUTH_SUCCESSFUL)
        return int(paramiko.AUTH_FAILED)  # not counted: clients routinely offer several keys

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return int(paramiko.OPEN_SUCCEEDED)
        return int(paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED)

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        return bool(name == "netconf")


class BoundSSHServer(netconf.server.NetconfSSHServer):  # type: ignore[misc]
    """A NetconfSSHServer listening on (host, port) only, with at most `max_connections` SSH connections."""

    def __init__(
        self,
        auth: AuthController,
        methods: Any,
        session_class: type,
        host: str,
        port: int,
        host_key: paramiko.PKey,
        max_connections: int,
        counters: Counters,
        app: Any,
    ) -> None:
        # The attributes NetconfSSHServer/SSHServer set up, without their bind-everything __init__.
        self.app = app
        self.server_methods = methods
        self.session_id = 1
        self.session_locks_lock = threading.Lock()
        self.session_locks = {"running": 0, "candidate": 0}
        self.server_ctl = auth
        self.server_socket_class = sshutil.server.SSHServerSocket
        self.server_session_class = session_class
        self.extra_args = None
        self.debug = False
        self.host_key = host_key
        self.max_connections = max_connections
        self.counters = counters
        self.lock = threading.Lock()
        self.sockets: list[Any] = []
        self._handshakes = 0
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host in ("::", "") else 1)
            listener.bind(address)
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        self.address = listener.getsockname()
        self.port = self.address[1]
        self.ports = {family: self.port}
        self.close_wsocket, self.close_rsocket = socket.socketpair()
        self.thread = threading.Thread(
            target=self._accept_loop, args=(listener,), name=f"netconf-accept-{self.port}", daemon=True
        )
        self.thread.start()

    def __del__(self) -> None:
        pass  # the base class logs an error from __del__

    def __str__(self) -> str:
        return f"BoundSSHServer({self.address!r})"

    def _live_connections(self) -> int:
        with self.lock:
            self.sockets = [s for s in self.sockets if s.running and s.ssh is not None and s.ssh.is_active()]
            return len(self.sockets) + self._handshakes

    def _accept_loop(self, listener: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([listener, self.close_rsocket], [], [])
                if self.close_rsocket in ready:
                    break
                try:
                    client, addr = listener.accept()
                except OSError:
                    continue
                if self._live_connections() >= self.max_connections:
                    self.counters.count(Reason.SESSION_LIMIT)
                    log.warning(
                        "refusing SSH connection from %s: %d connections open", addr, self.max_connections
                    )
                    client.close()
                    continue
                # a reply spans SSH packets: without NODELAY, Nagle waits for the peer's delayed ACK
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self.lock:
                    self._handshakes += 1
                threading.Thread(target=self._handshake, args=(client, addr), daemon=True).start()
        finally:
            listener.close()
            self.close_rsocket.close()
            with self.lock:
                sockets = list(self.sockets)
                self.sockets = []
            for sock in sockets:
                try:
                    sock.close()
                except Exception:  # closing half-dead SSH transports must not stop the shutdown
                    log.debug("error closing an SSH connection", exc_info=True)

    def _handshake(self, client: socket.socket, addr: Any) -> None:
        try:
            sock = self.server_socket_class(
                self.server_ctl, self.server_session_class, self.extra_args, self, client, addr, self.debug
            )
            with self.lock:
                self.sockets.append(sock)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.info("SSH handshake with %s failed: %s", addr, type(exc).__name__)
            client.close()
        finally:
            with self.lock:
                self._handshakes -= 1

    def remove_socket(self, serversocket: Any) -> None:
        with self.lock:
            if serversocket in self.sockets:
                self.sockets.remove(serversocket)

    def stop(self) -> None:
        """Close the listener and every connection, and wait for the accept thread."""
        with contextlib.suppress(OSError):
            self.close_wsocket.send(b"!")
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.close_wsocket.close()
