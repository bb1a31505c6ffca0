"""One NETCONF session over an SSH channel, on the `netconf` library's hello exchange.

Replaces the library's reader and dispatcher: bad XML or a missing message-id gets an rpc-error and the
session goes on (the library closes it), messages are size-limited by `framing.FrameDecoder`, and every send
holds one lock so a notification from the event thread never interleaves with a reply.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import netconf.base
import netconf.error
import netconf.server
from lxml import etree
from netconf import MAXSSHBUF

from nf_netconf.errors import NC_NS, Reason, RpcError, malformed
from nf_netconf.framing import FrameDecoder, FramingError, Message, Oversized
from nf_netconf.notifications import Actor
from nf_netconf.schema import safe_parser

if TYPE_CHECKING:
    from nf_netconf.server import NetconfApp

log = logging.getLogger(__name__)


class _ChannelClosed(Exception):
    pass


class BoundedTransport(netconf.base.NetconfFramingTransport):  # type: ignore[misc]
    """The library's transport for sending; receiving through a size-limited sans-IO decoder."""

    def __init__(self, stream: Any, max_message: int) -> None:
        super().__init__(stream, MAXSSHBUF, False)
        self.decoder = FrameDecoder(max_message)
        self.in_hello = True

    def receive_event(self, chunked: bool) -> Message | Oversized:
        while True:
            event = self.decoder.next_event(chunked)
            if event is not None:
                return event
            stream = self.stream
            if stream is None:
                raise _ChannelClosed()
            try:
                data = stream.recv(self.max_chunk)
            except TimeoutError:
                if self.in_hello:
                    raise
                continue  # the hello's timeout, still set on the channel when the reader started
            if not data:
                raise _ChannelClosed()
            self.decoder.feed(data)

    def receive_pdu(self, new_framing: bool) -> str:
        """Used by the library for the hello only."""
        try:
            event = self.receive_event(new_framing)
        except _ChannelClosed:
            raise EOFError("the client closed the channel during the hello") from None
        if isinstance(event, Oversized):
            raise netconf.error.SessionError(None, "hello over the message size limit")
        return event.data.decode("utf-8", errors="replace")


class Session(netconf.server.NetconfServerSession):  # type: ignore[misc]
    def __init__(self, channel: Any, server: Any, unused_extra_args: Any, debug: bool) -> None:
        self.server = server
        self.app: NetconfApp = server.app
        self.methods = server.server_methods
        transport = channel.get_transport()
        self._ssh_transport = transport
        self.username: str = transport.get_username() or ""
        peer = transport.getpeername()
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.source_host: str | None = str(peer[0]) if isinstance(peer, tuple) else None
        self.groups: frozenset[str] = self.app.groups_of(self.username)
        self._send_lock = threading.Lock()
        self._closed = False
        self._after_reply: list[Callable[[], None]] = []
        sid = server._allocate_session_id()
        netconf.base.NetconfSession.__init__(self, channel, debug, sid)
        library_transport: Any = getattr(self, "pkt_stream")  # noqa: B009 (untyped base attribute)
        library_transport.stream = None  # its __del__ would close the channel it shares with ours
        self.pkt_stream: BoundedTransport = BoundedTransport(channel, self.app.config.max_message_size)
        self.sid = sid
        if not self.app.register(self):
            log.warning(
                "refusing NETCONF session for %r from %s: session limit reached", self.username, self.peer
            )
            self._closed = True
            netconf.base.NetconfSession.close(self)
            transport.close()
            return
        channel.settimeout(self.app.config.hello_timeout)  # an authenticated client that never says hello
        try:
            self._open_session(True)
        except Exception as exc:
            log.info("session %d: hello exchange failed (%s)", sid, type(exc).__name__)
            self.close("timeout" if isinstance(exc, TimeoutError) else "bad-hello")
            raise
        self.pkt_stream.in_hello = False
        channel.settimeout(None)
        log.info("session %d opened for %r from %s", sid, self.username, self.peer)

    def __del__(self) -> None:
        pass

    def __str__(self) -> str:
        return f"Session({self.sid}, {self.username!r})"

    @property
    def actor(self) -> Actor:
        return Actor(self.username, self.sid, self.source_host)

    def close(self, reason: str = "dropped", killed_by: int | None = None) -> None:
        """Ends the session; `reason` is RFC 6470's termination-reason, the first caller's counts."""
        first = False
        with self._send_lock:
            if not self._closed:
                self._closed = True
                first = True
        if first:
            self.app.unregister(self, reason, killed_by)
            log.info("session %d closed", self.sid)
        with contextlib.suppress(EOFError):
            netconf.base.NetconfSession.close(self)
        # one NETCONF session per SSH connection: its end frees the connection slot too
        with contextlib.suppress(Exception):
            self._ssh_transport.close()

    def abort(self) -> None:
        """Drops the connection without waiting for the send lock, which a send blocked on a client that
        does not read holds: the blocked send then fails and the reader sees the end (reason dropped)."""
        with contextlib.suppress(Exception):
            self._ssh_transport.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # ----------------------------------------------------------------------------------------------------
    # sending
    # ----------------------------------------------------------------------------------------------------

    def send_message(self, msg: str) -> None:
        with self._send_lock:
            stream = self.pkt_stream
            if stream is None:
                return
            stream.send_pdu(netconf.base.XML_HEADER + msg, self.new_framing)

    def send_element(self, element: etree._Element) -> None:
        self.send_message(etree.tostring(element, encoding="unicode"))

    def after_reply(self, action: Callable[[], None]) -> None:
        """Runs `action` once the current rpc's <ok/> is sent: a subscription's first notifications (the
        replay) must not reach the client before the reply to create-subscription."""
        self._after_reply.append(action)

    def _reply(self, rpc: etree._Element | None, body: list[etree._Element] | etree._Element) -> None:
        attrib = dict(rpc.attrib) if rpc is not None else {}
        nsmap = dict(rpc.nsmap) if rpc is not None else {}
        nsmap.update(self.app.schema.xml_prefixes)
        nsmap[None] = NC_NS
        reply = etree.Element(f"{{{NC_NS}}}rpc-reply", attrib=attrib, nsmap=nsmap)
        if isinstance(body, list):
            reply.extend(body)
        else:
            reply.append(body)
        self.send_element(reply)

    def _reply_error(self, rpc: etree._Element | None, error: RpcError) -> None:
        self.app.counters.count(error.reason)
        self.app.bad_input_log.warning(
            error.reason.value, "session %d (%r): %s", self.sid, self.username, error
        )
        self._reply(rpc, error.to_xml(self.app.schema.prefixes()))

    # ----------------------------------------------------------------------------------------------------
    # receiving
    # ----------------------------------------------------------------------------------------------------

    def _read_message_thread(self) -> None:
        reason = "dropped"  # the client went away without close-session
        # started here, on the thread that also ends it, so no one sees this session end before it starts
        if not self._closed:
            self.app.session_started(self)
        try:
            while not self._closed:
                try:
                    event = self.pkt_stream.receive_event(self.new_framing)
                except FramingError as exc:
                    self.app.counters.count(Reason.FRAMING_ERROR)
                    self.app.bad_input_log.warning(
                        Reason.FRAMING_ERROR.value, "session %d: %s; closing", self.sid, exc
                    )
                    reason = "other"
                    break
                if isinstance(event, Oversized):
                    self._reply_error(
                        None,
                        RpcError(
                            "too-big",
                            f"message of {event.size} octets or more is over the limit of "
                            f"{self.app.config.max_message_size}",
                            reason=Reason.TOO_BIG,
                            error_type="rpc",
                        ),
                    )
                    continue
                self._handle(event.data)
        except (_ChannelClosed, EOFError, OSError, AttributeError):
            pass  # the client went away (AttributeError: the library cleared the stream under us)
        finally:
            self.close(reason)

    def _handle(self, data: bytes) -> None:
        try:
            root = etree.fromstring(data, parser=safe_parser())
        except (etree.XMLSyntaxError, ValueError):
            self._reply_error(None, malformed("the message is not well-formed XML"))
            return
        if root.getroottree().docinfo.doctype:
            self._reply_error(None, malformed("a DOCTYPE is not allowed"))
            return
        if root.tag != f"{{{NC_NS}}}rpc":
            self._reply_error(
                None, malformed(f"expected an <rpc> element, got {etree.QName(root).localname!r}")
            )
            return
        if root.get("message-id") is None:
            self._reply_error(
                root,
                RpcError(
                    "missing-attribute",
                    "the rpc has no message-id",
                    reason=Reason.MALFORMED_MESSAGE,
                    error_type="rpc",
                    info={"bad-attribute": "message-id", "bad-element": "rpc"},
                ),
            )
            return
        operations = [child for child in root if isinstance(child.tag, str)]
        if len(operations) != 1:
            self._reply_error(root, malformed("an rpc must hold exactly one operation"))
            return
        self._after_reply.clear()
        try:
            body = self.app.dispatch(self, operations[0])
        except RpcError as error:
            self._reply_error(root, error)
            return
        except Exception as exc:  # never let an exception's text (it could quote data) reach client or log
            log.error(
                "session %d: internal error (%s) in %s",
                self.sid,
                type(exc).__name__,
                etree.QName(operations[0]).localname,
            )
            self._reply_error(
                root, RpcError("operation-failed", "internal error", reason=Reason.INTERNAL_ERROR)
            )
            return
        self._reply(root, body)
        actions, self._after_reply = self._after_reply, []
        for action in actions:
            action()
        if etree.QName(operations[0]).localname == "close-session":
            self.close("closed")
