"""The demo's steps, in order, each named so a failure says which one broke and why.

1. credentials: a private temp dir with a CA, two certificates, SSH host keys and a NETCONF users file;
2. processes: per instance `twamp-nf run` and `twamp-nf netconf`, waited for until each says it is ready;
3. NETCONF: an ncclient session to each, subscribed to notifications before anything is configured;
4. configuration: A (TWAMP Server, IKE responder) then B (Control-Client, IKE initiator), by edit-config only;
5. the IKE SA (ike-sa-up on B and A), the control connection's selected mode and key source (<get> on B),
   the test session's results (test-session-completed on B).
Cleanup (sessions, children, directory) runs whatever happened. Progress goes to `say`; nothing printed or
raised here contains a key or the NETCONF password.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree
from ncclient.operations.rpc import RPCError

from nf.demo.configuration import (
    BINDING_NS,
    CONNECTION,
    IKE_NS,
    SESSION,
    TWAMP_NS,
    Endpoint,
    client_config,
    server_config,
)
from nf.demo.credentials import DemoCredentials, create_credentials
from nf.demo.instances import Instance, free_port, second_loopback_address, stop_all
from nf.demo.netconf_session import NetconfSession
from nf.demo.report import (
    Completion,
    ConnectionState,
    IkeSA,
    ReportError,
    client_connection,
    ike_sa_up,
    is_notification,
    test_session_completed,
)

START_WAIT = 90.0  # seconds for a child to become ready (Python start-up and libyang on a loaded machine)
NETCONF_WAIT = 60.0  # seconds for a NETCONF session to open and for each RPC
IKE_WAIT = 60.0  # seconds from B's configuration to its IKE SA
STATE_POLL = 0.2
PORT_ATTEMPTS = 3
FQDNS = {"gw-a": "gw-a.example", "gw-b": "gw-b.example"}


class DemoFailure(Exception):
    """A step failed; str() names the step, the reason, and the relevant children's stderr tails."""

    def __init__(self, step: str, reason: str, tails: str = "") -> None:
        super().__init__(f"step '{step}' failed: {reason}{tails}")
        self.step = step


@dataclass
class Outcome:
    """What the demo measured and the public facts of how (no key material)."""

    mode: str
    ike_sa: IkeSA
    connection: ConnectionState
    completion: Completion
    instances: dict[str, dict[str, Any]]
    directory: str
    pids: list[int]


@dataclass
class Options:
    count: int
    interval: float
    mode: str
    keep_dir: bool


@dataclass
class Demo:
    options: Options
    say: Callable[[str], None]
    directory: Path | None = None
    instances: list[Instance] = field(default_factory=list)
    sessions: list[NetconfSession] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, name: str, *blame: Instance) -> Iterator[None]:
        """Turns any failure inside into a DemoFailure naming `name`, with the stderr of `blame` (or all)."""
        try:
            yield
        except DemoFailure:
            raise
        except Exception as exc:
            text = str(exc).strip() or type(exc).__name__
            tails = "".join(i.stderr_tails() for i in (blame or tuple(self.instances)))
            raise DemoFailure(name, f"{type(exc).__name__}: {text}", tails) from exc

    def run(self) -> Outcome:
        with self.step("create the credentials"):
            self.directory = Path(tempfile.mkdtemp(prefix="twamp-nf-demo-"))  # mode 0700
            credentials = create_credentials(self.directory, FQDNS)
        a = Instance("gw-a", "127.0.0.1", self.directory)
        b = Instance("gw-b", second_loopback_address(), self.directory)
        self.instances = [a, b]
        self.say(f"twamp-nf demo: credentials (throwaway CA, ECDSA P-256 certificates) in {self.directory}")
        with self.step("start the runtimes"):
            for instance in self.instances:
                instance.start_runtime()
            for instance in self.instances:
                instance.wait_runtime(START_WAIT)
        with self.step("start the NETCONF servers"):
            for instance in self.instances:
                instance.start_netconf(credentials.instances[instance.name].host_key, credentials.users_file)
            for instance in self.instances:
                instance.wait_netconf(START_WAIT)
        self.pids = [pid for i in self.instances for pid in i.pids()]
        for instance, role in (
            (a, "TWAMP Server + Session-Reflector, IKE responder"),
            (b, "Control-Client + Session-Sender, IKE initiator"),
        ):
            assert instance.runtime is not None and instance.netconf is not None
            self.say(
                f"  {instance.name} ({FQDNS[instance.name]}): {role}; NETCONF server {instance.host}:"
                f"{instance.netconf_port} (pid {instance.netconf.pid}), runtime pid {instance.runtime.pid}"
            )
        nc_a = self._connect(a, credentials)
        nc_b = self._connect(b, credentials)
        ports = self._configure(nc_a, nc_b, credentials)
        opts = self.options
        self.say(
            f"  configured {a.name}: IKE on {a.host}:{ports['ike_a']}, peer {b.name}; TWAMP server on "
            f"{a.host}:{ports['twamp']} offering authenticated, encrypted, mixed, each also ikev2-derived "
            f"for {b.name}'s SAs"
        )
        self.say(
            f"  configured {b.name}: IKE on {b.host}:{ports['ike_b']}, peer {a.name} (auto-initiate); "
            f"control connection {CONNECTION} keyed by the IKE SA with {a.name}, test session of "
            f"{opts.count} packets every {opts.interval} s"
        )
        with self.step("establish the IKE SA (ike-sa-up on gw-b)", b, a):
            sa = ike_sa_up(nc_b.next_event(is_notification("ike-sa-up", IKE_NS), IKE_WAIT, self._abort))
        self.say(f"{b.name}: {sa.describe()}")
        with self.step("see the IKE SA on gw-a (ike-sa-up on gw-a)", a, b):
            sa_a = ike_sa_up(nc_a.next_event(is_notification("ike-sa-up", IKE_NS), IKE_WAIT, self._abort))
            if (sa_a.spi_i, sa_a.spi_r) != (sa.spi_i, sa.spi_r):
                raise ValueError(f"gw-a reports SPIs {sa_a.spi_i}/{sa_a.spi_r}, gw-b {sa.spi_i}/{sa.spi_r}")
        self.say(f"{a.name}: the same IKE SA, peer {sa_a.peer}, we are {sa_a.role}")
        with self.step("read the control connection's mode and key source (<get> on gw-b)", b, a):
            connection = self._selected(nc_b)
            if "ikev2-derived" not in connection.selected_mode.split():
                raise ValueError(f"selected mode is '{connection.selected_mode}', not IKEv2-derived")
            if (connection.spi_i, connection.spi_r) != (sa.spi_i, sa.spi_r):
                raise ValueError("the key source SPIs are not those of the IKE SA")
        self.say(f"{b.name}: {connection.describe()}")
        session_wait = opts.count * opts.interval + 90.0
        with self.step("run the test session (test-session-completed on gw-b)", b, a):
            completed = is_notification("test-session-completed", TWAMP_NS)
            completion = test_session_completed(nc_b.next_event(completed, session_wait, self._abort))
            if completion.outcome != "completed" or completion.summary is None:
                raise ValueError(f"the test session ended '{completion.outcome}' without results")
        self.say(f"{b.name}: test session {SESSION} completed, SID {completion.sid}")
        return Outcome(
            mode=connection.selected_mode,
            ike_sa=sa,
            connection=connection,
            completion=completion,
            instances={
                a.name: {
                    "fqdn": FQDNS[a.name],
                    "host": a.host,
                    "netconf_port": a.netconf_port,
                    "ike_port": ports["ike_a"],
                    "twamp_port": ports["twamp"],
                },
                b.name: {
                    "fqdn": FQDNS[b.name],
                    "host": b.host,
                    "netconf_port": b.netconf_port,
                    "ike_port": ports["ike_b"],
                },
            },
            directory=str(self.directory),
            pids=self.pids,
        )

    def _configure(
        self, nc_a: NetconfSession, nc_b: NetconfSession, credentials: DemoCredentials
    ) -> dict[str, int]:
        """A then B by edit-config. The ports were free a moment before the runtime binds them; if another
        program took one meanwhile (resource-denied), both are configured again with new ports."""
        a, b = self.instances
        opts = self.options
        attempt = 0
        while True:
            attempt += 1
            ports = {
                "ike_a": free_port(a.host, socket.SOCK_DGRAM),
                "ike_b": free_port(b.host, socket.SOCK_DGRAM),
                "twamp": free_port(a.host, socket.SOCK_STREAM),
            }
            end_a, end_b = (
                Endpoint(
                    i.name,
                    FQDNS[i.name],
                    i.host,
                    ports[key],
                    credentials.instances[i.name].certificate,
                    credentials.instances[i.name].private_key,
                )
                for i, key in ((a, "ike_a"), (b, "ike_b"))
            )
            try:
                with self.step("configure gw-a over NETCONF (edit-config running)", a):
                    nc_a.edit_running(server_config(end_a, end_b, credentials.ca_certificate, ports["twamp"]))
                with self.step("configure gw-b over NETCONF (edit-config running)", b):
                    nc_b.edit_running(
                        client_config(
                            end_b,
                            end_a,
                            credentials.ca_certificate,
                            ports["twamp"],
                            mode=opts.mode,
                            count=opts.count,
                            interval=opts.interval,
                        )
                    )
            except DemoFailure as failure:
                cause = failure.__cause__
                if (
                    not isinstance(cause, RPCError)
                    or cause.tag != "resource-denied"
                    or attempt == PORT_ATTEMPTS
                ):
                    raise
                self.say(f"  a port was taken meanwhile ({cause.message}); configuring again with new ports")
                continue
            return ports

    def _connect(self, instance: Instance, credentials: DemoCredentials) -> NetconfSession:
        with self.step(f"open a NETCONF session to {instance.name} and subscribe", instance):
            session = NetconfSession(
                instance.host,
                instance.netconf_port,
                credentials.instances[instance.name],
                credentials.login,
                NETCONF_WAIT,
            )
            self.sessions.append(session)
            session.subscribe()
        return session

    def _abort(self, body: etree._Element | None) -> str | None:
        """Stop waiting when a child died or gw-b reports that its control connection failed."""
        for instance in self.instances:
            for child in instance.children:
                if not child.running():
                    return f"{child.label} exited with status {child.proc.returncode}"
        if body is None:
            return None
        if body.tag == f"{{{TWAMP_NS}}}ctrl-connection-failed":
            reason = body.findtext(f"{{{TWAMP_NS}}}reason") or "?"
            accept = body.findtext(f"{{{TWAMP_NS}}}accept")
            return f"ctrl-connection-failed: {reason}" + (f", Accept {accept}" if accept else "")
        if body.tag == f"{{{BINDING_NS}}}key-source-fallback":
            return "the control connection fell back to a key chain instead of the IKE SA"
        return None

    def _selected(self, session: NetconfSession) -> ConnectionState:
        """Polls <get> until the connection has selected a mode (it runs while we poll)."""
        deadline = time.monotonic() + IKE_WAIT
        while True:
            connection: ConnectionState | None = None
            with contextlib.suppress(ReportError):  # not in state until the runtime has started it
                connection = client_connection(session.get(), CONNECTION)
            if connection is not None and connection.selected_mode:
                return connection
            for body in session.events:
                reason = self._abort(body)
                if reason is not None:
                    raise ValueError(reason)
            if time.monotonic() > deadline:
                state = connection.state if connection is not None else "absent"
                raise TimeoutError(f"no selected-mode after {IKE_WAIT:.0f} s (connection {state})")
            time.sleep(STATE_POLL)

    def close(self) -> None:
        """Everything this demo started or made goes, in every case."""
        for session in self.sessions:
            session.close()
        self.sessions.clear()
        stop_all(self.instances)
        if self.directory is not None and not self.options.keep_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
