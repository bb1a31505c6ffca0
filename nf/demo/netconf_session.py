"""The demo's NETCONF client side: one ncclient session per instance, pinned to the host key the demo made.

ncclient is the independent NETCONF client here (the server is nf_netconf); its transport polls every TICK
seconds, 0.1 by default, which would add 100 ms to every RPC (/work/shared/stack.md), so the demo sets it to
1 ms. Notifications are read from ncclient's queue with a deadline; `next_event` hands back the first one a
caller asks for and keeps the others for later calls.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import ncclient.transport.session
from lxml import etree
from ncclient import manager

from nf.demo.credentials import InstanceFiles, Login

ncclient.transport.session.TICK = 0.001
NOTIF_NS = "urn:ietf:params:xml:ns:netconf:notification:1.0"
POLL = 0.5  # seconds between checks of the caller's abort condition while waiting for a notification


class EventTimeout(Exception):
    """No wanted notification arrived in time."""


class Aborted(Exception):
    """The caller's abort check said stop (e.g. a failure notification or a child that exited)."""


class NetconfSession:
    """One ncclient session to one instance, subscribed to its notifications."""

    def __init__(self, host: str, port: int, files: InstanceFiles, login: Login, timeout: float) -> None:
        self.manager: Any = manager.connect(
            host=host,
            port=port,
            hostkey_verify=True,
            hostkey_b64=files.host_key_b64,
            allow_agent=False,
            look_for_keys=False,
            timeout=timeout,
            **login.ncclient_arguments(),
        )
        self.manager.timeout = timeout
        self.events: list[etree._Element] = []  # every notification body received, in order

    def subscribe(self) -> None:
        self.manager.create_subscription()

    def edit_running(self, config: str) -> None:
        self.manager.edit_config(target="running", config=config)

    def get(self) -> etree._Element:
        return etree.fromstring(str(self.manager.get().xml).encode())

    def next_event(
        self,
        wanted: Callable[[etree._Element], bool],
        timeout: float,
        abort: Callable[[etree._Element | None], str | None] = lambda _: None,
    ) -> etree._Element:
        """The first notification body (the element after eventTime) for which `wanted` is true, already
        received or arriving within `timeout`. `abort` sees every new body (and None every POLL seconds) and
        returns a reason to stop waiting, raised as Aborted."""
        seen = 0
        deadline = time.monotonic() + timeout
        while True:
            for earlier in self.events[seen:]:
                if wanted(earlier):
                    self.events.remove(earlier)
                    return earlier
            seen = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EventTimeout(f"nothing after {timeout:.0f} s")
            notification = self.manager.take_notification(timeout=min(POLL, remaining))
            body: etree._Element | None = None
            if notification is not None:
                root = etree.fromstring(notification.notification_xml.encode())
                body = next((c for c in root if c.tag != f"{{{NOTIF_NS}}}eventTime"), None)
                if body is not None:
                    self.events.append(body)
            reason = abort(body)
            if reason is not None:
                raise Aborted(reason)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.manager.close_session()
