"""The control socket server in-process (a real Unix socket, the runtime's loop in a thread).

Any line gets exactly one reply and leaves the connection usable; only an over-long line closes it. Replies
to requests with an integer id carry that id. A reply is always a JSON object with `ok`, and an error always
has a NETCONF error-tag from docs/control-socket.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nf.runtime.control_socket import ControlSocketServer
from nf.runtime.daemon import Runtime

MAX_MESSAGE = 4096
TAGS = {
    "invalid-value",
    "operation-failed",
    "resource-denied",
    "too-big",
    "malformed-message",
    "unknown-element",
}


class Served:
    """A Runtime and its control socket on an event loop in a background thread."""

    def __init__(self, path: str, runtime: type[Runtime] = Runtime) -> None:
        self.path = path
        self._runtime_class = runtime
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runtime = self._runtime_class()
        self.server = ControlSocketServer(self.runtime, self.path, MAX_MESSAGE)
        self.loop.run_until_complete(self.server.start())
        self.ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        async def stop() -> None:
            await self.server.close()
            await self.runtime.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


class Line:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.buffer = b""

    def exchange(self, data: bytes) -> dict[str, Any] | None:
        self.sock.sendall(data)
        return self.read()

    def read(self) -> dict[str, Any] | None:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        reply = json.loads(line)
        assert isinstance(reply, dict)
        return reply


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    directory = tempfile.mkdtemp(prefix="rtsock")
    running = Served(str(Path(directory) / "c.sock"))
    yield running
    running.close()


@pytest.fixture(scope="module")
def line(served: Served) -> Iterator[Line]:
    connection = Line(served.path)
    yield connection
    connection.sock.close()


def check_error(reply: dict[str, Any] | None) -> dict[str, Any]:
    assert reply is not None and reply["ok"] is False
    assert reply["error"]["tag"] in TAGS and isinstance(reply["error"]["message"], str)
    return reply


@given(st.binary(max_size=300).filter(lambda b: b"\n" not in b and b.strip()))
@settings(max_examples=150, deadline=None)
def test_any_line_gets_one_reply(line: Line, data: bytes) -> None:
    reply = line.exchange(data + b"\n")
    assert reply is not None and "ok" in reply
    if reply["ok"] is False:
        check_error(reply)
    assert line.exchange(b'{"id": 1, "op": "hello", "version": 1}\n') == {
        "id": 1,
        "ok": True,
        "version": 1,
        "modules": ["twamp-nf-twamp", "twamp-nf-ike", "twamp-nf-ike-binding"],
    }


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@given(
    request_id=st.integers(-(2**40), 2**40),
    op=st.sampled_from(["hello", "validate", "apply", "get-state", "bogus"]),
    extra=st.dictionaries(st.sampled_from(["version", "config", "paths"]), JSON, max_size=3),
)
@settings(max_examples=150, deadline=None)
def test_requests_with_any_fields_are_answered_with_their_id(
    line: Line, request_id: int, op: str, extra: dict[str, Any]
) -> None:
    reply = line.exchange(json.dumps({"id": request_id, "op": op, **extra}).encode() + b"\n")
    assert reply is not None and reply["id"] == request_id
    if not reply["ok"]:
        check_error(reply)
    if op == "apply" and reply["ok"]:  # leave nothing running for the next example
        assert line.exchange(b'{"id": 0, "op": "apply", "config": {}}\n') == {"id": 0, "ok": True}


def test_state_of_an_empty_runtime(line: Line) -> None:
    reply = line.exchange(b'{"id": 5, "op": "get-state"}\n')
    assert reply == {"id": 5, "ok": True, "state": {"twamp-nf-twamp:twamp": {}, "twamp-nf-ike:ike": {}}}


def test_too_big_closes_only_that_connection(served: Served) -> None:
    victim = Line(served.path)
    reply = victim.exchange(b'{"id": 1, "op": "hello", "x": "' + b"y" * MAX_MESSAGE + b'"}\n')
    assert check_error(reply)["error"]["tag"] == "too-big"
    assert victim.read() is None
    other = Line(served.path)
    assert other.exchange(b'{"id": 2, "op": "hello", "version": 1}\n') is not None
    exactly = b'{"id": 3, "op": "hello", "version": 1, "pad": "' + b"z" * (MAX_MESSAGE - 50) + b'"}'
    assert len(exactly) <= MAX_MESSAGE
    assert other.exchange(exactly + b"\n") is not None  # at the limit is still accepted


def test_refusals_are_counted_by_tag(served: Served, line: Line) -> None:
    before = served.server.refused.copy()
    check_error(line.exchange(b"{broken\n"))
    check_error(line.exchange(b'{"id": 7, "op": "apply", "config": {"x:y": {}}}\n'))
    assert served.server.refused["malformed-message"] == before["malformed-message"] + 1
    assert served.server.refused["unknown-element"] == before["unknown-element"] + 1


def test_unreadable_requests_are_answered_with_id_null(line: Line) -> None:
    for data in (b"{broken\n", b'"text"\n', b'{"id": "7", "op": "hello"}\n', b'{"op": "hello"}\n'):
        reply = check_error(line.exchange(data))
        assert reply["id"] is None and reply["error"]["tag"] == "malformed-message"


class _BuggyRuntime(Runtime):
    """A bug whose exception quotes the request, as a KeyError on a dict holding secrets would."""

    async def validate(self, config: Any) -> None:
        raise KeyError(json.dumps(config))


def test_an_internal_error_never_quotes_the_request(caplog: pytest.LogCaptureFixture) -> None:
    secret = "c2VjcmV0LW1hcmtlci0xNzA5"  # base64 of a recognisable secret
    running = Served(str(Path(tempfile.mkdtemp(prefix="rtsock")) / "c.sock"), _BuggyRuntime)
    connection = Line(running.path)
    try:
        with caplog.at_level(logging.DEBUG):
            request = {"id": 3, "op": "validate", "config": {"twamp-nf-ike:ike": {"psk": secret}}}
            reply = connection.exchange(json.dumps(request).encode() + b"\n")
            assert reply == {
                "id": 3,
                "ok": False,
                "error": {"tag": "operation-failed", "message": "internal error (KeyError)"},
            }
            assert connection.exchange(b'{"id": 4, "op": "hello", "version": 1}\n') is not None
    finally:
        connection.sock.close()
        running.close()
    assert "validate failed: internal error (KeyError)" in caplog.text
    assert "in validate" in caplog.text  # the traceback frames are kept for the bug report
    assert secret not in caplog.text
