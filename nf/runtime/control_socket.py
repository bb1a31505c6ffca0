"""The runtime control socket (docs/control-socket.md): JSON lines over a Unix stream socket, mode 0600.

One request per line, answered in order per connection; `subscribe` turns a connection into an event
stream as well. A line over the size limit is answered `too-big` and the connection closed (its rest cannot
be framed reliably); malformed JSON is answered `malformed-message` and the connection stays usable. No
request can stop the server: any failure is an error reply. Replies never carry secrets: ConfigError
messages name nodes, and state holds identifiers only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import traceback
from collections import Counter
from typing import Any

from nf.net.rate_limited_log import RateLimitedLog
from nf.runtime.config import MODULES, ConfigError
from nf.runtime.daemon import Runtime
from nf.runtime.events import Subscription

log = logging.getLogger("nf.runtime.control_socket")

VERSION = 1
DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024


def _remove_stale_socket(path: str) -> None:
    """A socket left by a runtime that died is removed; a live runtime's socket or any other file is not."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # nobody listens: stale
            return
    raise OSError(errno.EADDRINUSE, "another runtime is listening there", path)


def _log_bug(what: str, exc: BaseException) -> None:
    """A bug's traceback without the exception's text, which could quote the request and so its secrets."""
    frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    log.error("%s: internal error (%s); traceback:\n%s", what, type(exc).__name__, frames)


def _error(request_id: Any, tag: str, message: str, path: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"tag": tag, "message": message}
    if path is not None:
        error["path"] = path
    return {"id": request_id, "ok": False, "error": error}


class _Client:
    """One connection: a writer shared by replies and (after subscribe) events."""

    def __init__(self, runtime: Runtime, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.runtime = runtime
        self.reader = reader
        self.writer = writer
        self.lock = asyncio.Lock()
        self.subscription: Subscription | None = None
        self.pump: asyncio.Task[None] | None = None

    async def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"
        async with self.lock:
            self.writer.write(line)
            await self.writer.drain()

    async def events(self) -> None:
        assert self.subscription is not None
        while True:
            event = await self.subscription.queue.get()
            await self.send(event)

    def close(self) -> None:
        if self.subscription is not None:
            self.runtime.bus.unsubscribe(self.subscription)
        if self.pump is not None:
            self.pump.cancel()


class ControlSocketServer:
    def __init__(self, runtime: Runtime, path: str, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.runtime = runtime
        self.path = path
        self.max_message = max_message
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.refused: Counter[str] = Counter()  # error replies by tag
        self._log = RateLimitedLog(log)

    async def start(self) -> None:
        """Creates the socket; OSError when the path is taken by a live runtime or by something else."""
        _remove_stale_socket(self.path)
        old_umask = os.umask(0o177)  # created 0600: no window in which others could connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, self.path, limit=self.max_message + 1)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        client = _Client(self.runtime, reader, writer)
        try:
            await self._loop(client)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug costs this connection, never the runtime
            _log_bug("control socket connection failed", exc)
        finally:
            client.close()
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):  # shutdown cancels this wait
                await writer.wait_closed()
            self._clients.discard(task)

    async def _loop(self, client: _Client) -> None:
        while True:
            try:
                line = await client.reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    await self._reply(
                        client, _error(None, "malformed-message", "request not terminated by a newline")
                    )
                return
            except asyncio.LimitOverrunError:
                line = b""
            if not line or len(line) > self.max_message + 1:
                await self._reply(
                    client, _error(None, "too-big", f"request longer than {self.max_message} octets; closing")
                )
                return
            if not line.strip():
                continue
            await self._reply(client, await self._handle(client, line))

    async def _reply(self, client: _Client, reply: dict[str, Any]) -> None:
        if reply["ok"] is False:
            self._refuse(reply)
        await client.send(reply)

    def _refuse(self, reply: dict[str, Any]) -> None:
        """Counts an error reply and logs it, at most once per tag and interval (a local client that loops
        on a bad request cannot flood the log)."""
        error = reply["error"]
        self.refused[error["tag"]] += 1
        where = f" at {error['path']}" if "path" in error else ""
        self._log.warning(error["tag"], "control socket: %s: %s%s", error["tag"], error["message"], where)

    async def _handle(self, client: _Client, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error(
                None, "malformed-message", f"not JSON: {exc.msg if hasattr(exc, 'msg') else 'bad UTF-8'}"
            )
        if not isinstance(request, dict):
            return _error(None, "malformed-message", "a request must be a JSON object")
        request_id = request.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            return _error(None, "malformed-message", "a request needs an integer id")
        op = request.get("op")
        try:
            if op == "hello":
                if request.get("version") != VERSION:
                    return _error(
                        request_id, "invalid-value", f"unsupported version; this runtime speaks {VERSION}"
                    )
                return {"id": request_id, "ok": True, "version": VERSION, "modules": list(MODULES)}
            if op in ("validate", "apply"):
                if "config" not in request:
                    return _error(request_id, "malformed-message", f"{op} needs config")
                if op == "apply":
                    await self.runtime.apply(request["config"])
                else:
                    await self.runtime.validate(request["config"])
                return {"id": request_id, "ok": True}
            if op == "get-state":
                paths = request.get("paths")
                if paths is not None and (
                    not isinstance(paths, list) or not all(isinstance(p, str) for p in paths)
                ):
                    return _error(request_id, "malformed-message", "paths must be a list of names")
                return {"id": request_id, "ok": True, "state": self.runtime.state(paths)}
            if op == "subscribe":
                if client.subscription is None:
                    client.subscription = self.runtime.bus.subscribe()
                    client.pump = asyncio.ensure_future(client.events())
                return {"id": request_id, "ok": True}
        except ConfigError as exc:
            return _error(request_id, exc.tag, exc.message, exc.path)
        except Exception as exc:  # the runtime stays up; reply and log name the failure type only
            _log_bug(f"{op} failed", exc)
            return _error(request_id, "operation-failed", f"internal error ({type(exc).__name__})")
        return _error(
            request_id, "unknown-element", f"unknown op {op!r}" if isinstance(op, str) else "missing op"
        )
