"""The NETCONF server process: wires the SSH listener, sessions, datastores, NACM, notifications and the
runtime link together, and owns their lifecycle."""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxml import etree

from nf.net.rate_limited_log import RateLimitedLog
from nf_netconf.datastore import Datastores
from nf_netconf.errors import Counters, Reason
from nf_netconf.notifications import NotificationHub, session_end, session_start
from nf_netconf.operations import Operations
from nf_netconf.runtime_link import EventStream, RuntimeLink
from nf_netconf.schema import DEFAULT_MODULES, Schema
from nf_netconf.ssh import AuthController, BoundSSHServer, load_or_create_host_key
from nf_netconf.users import load_users
from nf_netconf.with_defaults import CAPABILITY as WITH_DEFAULTS_CAPABILITY
from nf_netconf.with_defaults import WD_MODULE

if TYPE_CHECKING:
    from nf_netconf.session import Session

log = logging.getLogger(__name__)

CAPABILITIES = (
    "urn:ietf:params:netconf:capability:writable-running:1.0",
    "urn:ietf:params:netconf:capability:candidate:1.0",
    "urn:ietf:params:netconf:capability:confirmed-commit:1.1",  # RFC 6241 section 8.4
    "urn:ietf:params:netconf:capability:validate:1.1",
    "urn:ietf:params:netconf:capability:rollback-on-error:1.0",
    "urn:ietf:params:netconf:capability:xpath:1.0",
    "urn:ietf:params:netconf:capability:notification:1.0",
    "urn:ietf:params:netconf:capability:interleave:1.0",
    "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring",  # RFC 6022: schema list and get-schema
    WITH_DEFAULTS_CAPABILITY,  # RFC 6243
)
DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024


def default_yang_dirs() -> list[str]:
    """The repository's yang/ and pyang's bundled IETF modules (docs/yang.md: imported, never copied)."""
    here = Path(__file__).resolve()
    return [str(here.parents[2] / "yang"), str(Path(sys.prefix) / "share" / "yang" / "modules" / "ietf")]


@dataclass
class ServerConfig:
    host: str
    port: int
    runtime_socket: str
    host_key: str
    users_file: str
    yang_dirs: tuple[str, ...] = ()
    max_sessions: int = 16
    max_ssh_connections: int = 0  # 0: twice max_sessions
    max_message_size: int = DEFAULT_MAX_MESSAGE
    runtime_timeout: float = 30.0
    hello_timeout: float = 60.0
    replay_events: int = 1000  # RFC 5277 replay log: the last this many events (0: replay off)
    replay_max_age: float | None = None  # and none older than this, in seconds
    notification_queue: int = 10_000  # notifications waiting for one subscriber; past it, it is dropped


class NetconfApp:
    def __init__(self, config: ServerConfig) -> None:
        if config.max_sessions < 1 or config.max_message_size < 1024:
            raise ValueError("max_sessions must be at least 1 and max_message_size at least 1024")
        self.config = config
        self.users, self.nacm = load_users(Path(config.users_file).read_text())
        self.counters = Counters()
        self.bad_input_log = RateLimitedLog(log)
        self.schema = Schema(config.yang_dirs or default_yang_dirs(), DEFAULT_MODULES)
        self.runtime = RuntimeLink(config.runtime_socket, config.runtime_timeout)
        self.hub = NotificationHub(
            self.schema, self.nacm, config.replay_events, config.replay_max_age, config.notification_queue
        )
        self.datastores = Datastores(self.schema, self.runtime, self.nacm, self.hub.publish_server_events)
        self.operations = Operations(
            self.schema, self.datastores, self.runtime, self.nacm, self.hub, self.kill
        )
        self.events = EventStream(
            config.runtime_socket, self._on_event, on_reconnect=self._on_runtime_restart
        )
        self._sessions: dict[int, Session] = {}
        self._sessions_lock = threading.Lock()
        self.ssh: BoundSSHServer | None = None

    # lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        from nf_netconf.session import Session

        host_key = load_or_create_host_key(self.config.host_key)
        self.events.start()
        self.ssh = BoundSSHServer(
            AuthController(self.users, self.counters),
            self,
            Session,
            self.config.host,
            self.config.port,
            host_key,
            self.config.max_ssh_connections or 2 * self.config.max_sessions,
            self.counters,
            self,
        )
        log.info("NETCONF over SSH listening on %s", self.ssh.address)

    @property
    def port(self) -> int:
        assert self.ssh is not None
        return int(self.ssh.port)

    def stop(self) -> None:
        if self.ssh is not None:
            self.ssh.stop()
        with self._sessions_lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.close("other")
        self.datastores.shutdown()  # a pending confirmed commit is rolled back while the runtime link is up
        self.events.stop()
        self.runtime.close()
        log.info("NETCONF server stopped; refusals by reason: %s", self.counters.snapshot())

    # sessions ---------------------------------------------------------------------------------------------

    def groups_of(self, username: str) -> frozenset[str]:
        user = self.users.get(username)
        return user.groups if user is not None else frozenset()

    def register(self, session: Session) -> bool:
        with self._sessions_lock:
            if len(self._sessions) >= self.config.max_sessions:
                self.counters.count(Reason.SESSION_LIMIT)
                return False
            self._sessions[session.sid] = session
            return True

    def session_started(self, session: Session) -> None:
        self.hub.publish_server_events([session_start(session.actor)])

    def unregister(self, session: Session, reason: str, killed_by: int | None = None) -> None:
        """The session's end (RFC 6470 termination-reason) is notified to the others before a confirmed
        commit bound to it is rolled back."""
        with self._sessions_lock:
            self._sessions.pop(session.sid, None)
        self.hub.unsubscribe(session)
        self.hub.publish_server_events([session_end(session.actor, reason, killed_by)])
        self.datastores.session_closed(session.sid)

    def session_count(self) -> int:
        with self._sessions_lock:
            return len(self._sessions)

    def kill(self, sid: int, killed_by: int) -> bool:
        with self._sessions_lock:
            session = self._sessions.get(sid)
        if session is None:
            return False
        session.close("killed", killed_by)
        return True

    def dispatch(self, session: Session, op: etree._Element) -> etree._Element:
        return self.operations.dispatch(session, op)

    # the netconf library's hooks ------------------------------------------------------------------------

    def nc_append_capabilities(self, capabilities: Any) -> None:
        for uri in CAPABILITIES:
            etree.SubElement(capabilities, "capability").text = uri
        # ietf-netconf-with-defaults is announced as a module too: yangcli adds the <with-defaults> parameter
        # only for a server that lists it (ietf-netconf-monitoring is left out: yangcli's autoload then
        # trips over its own copy of it).
        for module in (*self.schema.modules, WD_MODULE):
            uri = f"{self.schema.namespaces[module]}?module={module}"
            if module in self.schema.revisions:
                uri += f"&revision={self.schema.revisions[module]}"
            if self.schema.features.get(module):
                uri += "&features=" + ",".join(self.schema.features[module])
            etree.SubElement(capabilities, "capability").text = uri

    def _on_event(self, event: dict[str, Any]) -> None:
        self.hub.publish(event)

    def _on_runtime_restart(self) -> None:
        """The event stream came back after a loss: the runtime may have restarted empty, so push running
        again (not on the first connection: a NETCONF server that restarted has an empty running, and
        pushing that would wipe the configuration the runtime still runs)."""
        log.warning("runtime connection re-established; applying the running configuration again")
        self.datastores.reapply()
