"""The runtime's TWAMP Server: nf.net.control_listener plus what management needs to see.

RuntimeListener tracks each control connection (4-tuple, machine, Key ID asked for) so state can list them,
and turns refusals into ctrl-connection-failed and unknown-sa notifications. A ContextVar set in each
connection's task ties the calls the listener makes (key lookups, bad-input counting) to that connection
without changing the listener: every call for one connection runs inside that connection's task.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nf.binding import ServerBinding, UnknownSA
from nf.net.control_listener import ControlListener
from nf.net.limits import Limits
from nf.net.reflector import Reflector
from nf.net.socket_options import set_dscp
from nf.runtime import events
from nf.twamp.control_server import ControlServer, ServerConfig
from nf.twamp.keysource import SharedSecret
from nf.twamp.modes import Accept, Modes

log = logging.getLogger("nf.runtime.server")


@dataclass(eq=False)
class ServerConnection:
    client: tuple[str, int]
    server: tuple[str, int]
    machine: ControlServer | None = None
    key_id: bytes | None = None  # what Set-Up-Response named (key-chain id, or SPIi|SPIr)
    ikev2: bool = False
    spis: tuple[bytes, bytes] | None = None
    unknown: list[UnknownSA] = field(default_factory=list)


_current: contextvars.ContextVar[ServerConnection | None] = contextvars.ContextVar("twamp_conn", default=None)


def _address(info: Any) -> tuple[str, int]:
    if not info:
        return ("::", 0)
    return (str(info[0]).split("%", 1)[0], int(info[1]))


class RecordingKeySource:
    """Wraps a KeySource: remembers on the current connection which Key ID it asked for."""

    def __init__(self, inner: Any, ikev2: bool) -> None:
        self._inner = inner
        self._ikev2 = ikev2

    def __repr__(self) -> str:
        return f"RecordingKeySource({self._inner!r})"

    def secret_for(self, key_id: bytes) -> SharedSecret | None:
        connection = _current.get()
        if connection is not None:
            connection.key_id = key_id.rstrip(b"\0") if not self._ikev2 else key_id[:16]
            connection.ikev2 = self._ikev2
            if self._ikev2 and len(key_id) >= 16:
                connection.spis = (key_id[:8], key_id[8:16])
        secret: SharedSecret | None = self._inner.secret_for(key_id)
        return secret


class RuntimeListener(ControlListener):
    def __init__(
        self,
        config: ServerConfig,
        limits: Limits,
        reflector: Reflector,
        publish: Callable[[tuple[str, dict[str, Any]]], None],
        binding: ServerBinding | None,
    ) -> None:
        super().__init__(config, limits, reflector)
        self.connections: set[ServerConnection] = set()
        self._publish = publish
        self.binding = binding
        if binding is not None:
            binding.add_observer(self._on_unknown_sa)

    def reconfigure(self, config: ServerConfig, limits: Limits) -> None:
        """New policy for connections accepted from now on; running connections keep their machines."""
        self.config = config
        self.limits = limits
        self._tracker._limits = limits
        self._refusing = ServerConfig(modes=Modes(0), count=config.count)

    max_test_sessions = 256  # session-reflector/limits/max-test-sessions
    dscp: int | None = None  # server control-packet-dscp (None: the host's default)

    def reflector_port(self, address: str, requested: int) -> int:
        """Refuses a new test session at max-test-sessions (Accept-Session answers a resource limit)."""
        if self.reflector.totals().sessions >= self.max_test_sessions:
            raise RuntimeError("session-reflector max-test-sessions reached")
        return super().reflector_port(address, requested)

    def use_binding(self, binding: ServerBinding | None) -> None:
        """The RFC 7717 key source of a new configuration (already inside the new ServerConfig)."""
        self.binding = binding
        if binding is not None:
            binding.add_observer(self._on_unknown_sa)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = ServerConnection(
            _address(writer.get_extra_info("peername")), _address(writer.get_extra_info("sockname"))
        )
        _current.set(connection)
        self.connections.add(connection)
        sock = writer.get_extra_info("socket")
        if sock is not None and self.dscp is not None:
            with contextlib.suppress(OSError):
                set_dscp(sock, self.dscp)
        try:
            await super()._accept(reader, writer)
        finally:
            self.connections.discard(connection)

    def new_machine(self, local: str, peer: str) -> ControlServer:
        machine = super().new_machine(local, peer)
        connection = _current.get()
        if connection is not None:
            connection.machine = machine
        return machine

    def count_bad_input(self, reason: str, client: str, detail: str) -> None:
        super().count_bad_input(reason, client, detail)
        connection = _current.get()
        if connection is None or reason == "connection-error":
            return
        if connection.machine is not None and connection.machine.state.value not in ("closed",):
            return  # a rejected request on a live connection, not a failed connection
        accept = Accept.UNKNOWN_SA if reason == "unknown-sa" else None
        self._publish(
            events.ctrl_connection_failed(
                role="server",
                reason=f"control-{reason}",
                client=connection.client,
                server=connection.server,
                accept=accept,
            )
        )

    def _on_unknown_sa(self, event: UnknownSA) -> None:
        connection = _current.get()
        if connection is None:
            return
        connection.unknown.append(event)
        self._publish(
            events.unknown_sa((event.spi_i, event.spi_r), client=connection.client, server=connection.server)
        )
