"""The client side of the runtime control socket (docs/control-socket.md): requests and the event stream.

Blocking sockets and threads, like the `netconf` library's sessions: one connection for requests (guarded by
a lock, reconnected on demand), one per event subscription (a thread that reconnects with backoff).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import socket
import threading
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_LINE = 16 * 1024 * 1024


def _log_bug(what: str, exc: BaseException) -> None:
    """A bug's traceback without the exception's text: the reconnect hook re-sends running, secrets too."""
    frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    log.error("%s: internal error (%s); traceback:\n%s", what, type(exc).__name__, frames)


class RuntimeUnavailable(Exception):
    """The runtime could not be reached or broke the protocol; the text says which."""


class RuntimeRefused(Exception):
    """The runtime answered ok=false: its tag, path and message go to the client unchanged."""

    def __init__(self, tag: str, path: str | None, message: str) -> None:
        super().__init__(f"{tag}: {message}" + (f" at {path}" if path else ""))
        self.tag = tag
        self.path = path
        self.message = message


class _LineConnection:
    def __init__(self, path: str, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self._buf = bytearray()

    def send(self, obj: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def read_line(self) -> dict[str, Any]:
        while True:
            idx = self._buf.find(b"\n")
            if idx >= 0:
                line = bytes(self._buf[:idx])
                del self._buf[: idx + 1]
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise RuntimeUnavailable("the runtime sent a line that is not JSON") from None
                if not isinstance(obj, dict):
                    raise RuntimeUnavailable("the runtime sent a JSON value that is not an object")
                return obj
            if len(self._buf) > MAX_LINE:
                raise RuntimeUnavailable("the runtime sent a line over the size limit")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeUnavailable("the runtime closed the control connection")
            self._buf += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class RuntimeLink:
    """Request/reply over one control connection; thread-safe, reconnects when the runtime restarts."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: _LineConnection | None = None
        self._ids = itertools.count(1)
        self.modules: list[str] = []

    def _connect(self) -> _LineConnection:
        try:
            conn = _LineConnection(self.path, self.timeout)
        except OSError as exc:
            raise RuntimeUnavailable(
                f"cannot connect to the runtime at {self.path}: {exc.strerror}"
            ) from None
        try:
            reply = self._exchange(conn, {"op": "hello", "version": PROTOCOL_VERSION})
        except BaseException:
            conn.close()
            raise
        modules = reply.get("modules", [])
        self.modules = [m for m in modules if isinstance(m, str)] if isinstance(modules, list) else []
        return conn

    def _exchange(self, conn: _LineConnection, request: dict[str, Any]) -> dict[str, Any]:
        request_id = next(self._ids)
        try:
            conn.send({"id": request_id, **request})
            while True:
                reply = conn.read_line()
                if reply.get("id") == request_id:
                    break
                if "id" in reply:
                    raise RuntimeUnavailable(
                        f"reply id {reply.get('id')!r} does not match request {request_id}"
                    )
        except OSError as exc:
            raise RuntimeUnavailable(
                f"control connection failed: {exc.strerror or type(exc).__name__}"
            ) from None
        if reply.get("ok") is True:
            return reply
        error = reply.get("error")
        if not isinstance(error, dict):
            raise RuntimeUnavailable("the runtime refused without an error object")
        path = error.get("path")
        raise RuntimeRefused(
            str(error.get("tag") or "operation-failed"),
            path if isinstance(path, str) and path else None,
            str(error.get("message") or "refused by the runtime"),
        )

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """One request; a broken connection is retried once on a fresh connection (the runtime may have
        restarted). A refusal is not retried."""
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None:
                    self._conn = self._connect()
                try:
                    return self._exchange(self._conn, {"op": op, **fields})
                except RuntimeUnavailable:
                    self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def validate(self, config: dict[str, Any]) -> None:
        self.request("validate", config=config)

    def apply(self, config: dict[str, Any]) -> None:
        self.request("apply", config=config)

    def get_state(self, paths: list[str] | None = None) -> dict[str, Any]:
        reply = self.request("get-state", **({"paths": paths} if paths else {}))
        state = reply.get("state", {})
        if not isinstance(state, dict):
            raise RuntimeUnavailable("get-state returned a state that is not an object")
        return state

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class EventStream:
    """A thread that subscribes to the runtime's events and hands each to `on_event`, reconnecting with
    backoff while the runtime is away."""

    def __init__(
        self,
        path: str,
        on_event: Callable[[dict[str, Any]], None],
        *,
        on_reconnect: Callable[[], None] | None = None,
        retry_min: float = 0.2,
        retry_max: float = 5.0,
    ) -> None:
        self.path = path
        self.on_event = on_event
        self.on_reconnect = on_reconnect
        self._was_connected = False
        self.retry_min = retry_min
        self.retry_max = retry_max
        self._stop = threading.Event()
        self._conn: _LineConnection | None = None
        self._conn_lock = threading.Lock()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runtime-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        delay = self.retry_min
        while not self._stop.is_set():
            try:
                conn = _LineConnection(self.path, 30.0)
            except OSError:
                self._stop.wait(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            with self._conn_lock:
                if self._stop.is_set():
                    conn.close()
                    return
                self._conn = conn
            try:
                conn.send({"id": 1, "op": "hello", "version": PROTOCOL_VERSION})
                if conn.read_line().get("ok") is not True:
                    raise RuntimeUnavailable("hello refused")
                conn.send({"id": 2, "op": "subscribe"})
                if conn.read_line().get("ok") is not True:
                    raise RuntimeUnavailable("subscribe refused")
                conn.sock.settimeout(None)
                if self._was_connected and self.on_reconnect is not None:
                    try:
                        self.on_reconnect()
                    except Exception as exc:  # the reconnect hook must not end the stream
                        _log_bug("reconnect hook failed", exc)
                self._was_connected = True
                self.connected.set()
                delay = self.retry_min
                while not self._stop.is_set():
                    message = conn.read_line()
                    if "event" in message:
                        try:
                            self.on_event(message)
                        except Exception as exc:  # one bad event must not end the stream
                            _log_bug("dropping an event the server could not forward", exc)
            except (RuntimeUnavailable, OSError) as exc:
                if not self._stop.is_set():
                    log.warning("runtime event stream lost (%s); reconnecting", exc)
            finally:
                self.connected.clear()
                with self._conn_lock:
                    self._conn = None
                conn.close()
            self._stop.wait(delay)
            delay = min(delay * 2, self.retry_max)
