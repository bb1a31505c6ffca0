"""Batched UDP receive (Linux recvmmsg) for the reflector's port threads.

Python's socket module has no recvmmsg, so it is called through ctypes (which releases the GIL around the
call). One call returns every datagram already queued (MSG_WAITFORONE: it blocks only for the first), each
with its own source address and control buffer, so each keeps its own kernel receive timestamp (T2 stays
exact per packet). The headers, addresses and control buffers live in preallocated arrays that are read
through memoryviews at fixed offsets: no per-datagram allocation beyond the address key.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct

MSG_WAITFORONE = 0x10000  # Linux socket.h
POLL = MSG_WAITFORONE | socket.MSG_DONTWAIT  # what is queued now, without blocking
_NAME_SIZE = 28  # sockaddr_in6, the larger of the two families
_CONTROL_SIZE = 64  # room for a timespec and an int control message


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("hdr", _Msghdr), ("len", ctypes.c_uint))


_HEADER_SIZE = ctypes.sizeof(_Mmsghdr)
_NAMELEN_AT = _Msghdr.namelen.offset
_CONTROLLEN_AT = _Msghdr.controllen.offset
_FLAGS_AT = _Msghdr.flags.offset
_LEN_AT = _Mmsghdr.len.offset
# What the kernel writes back per message: the length and flags of each, the lengths of address and control.
RESULT = struct.Struct(f"@{_NAMELEN_AT}xI{_CONTROLLEN_AT - _NAMELEN_AT - 4}xQi{_LEN_AT - _FLAGS_AT - 4}xI")

_libc: ctypes.CDLL | None = None


def _recvmmsg() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    function = _libc.recvmmsg
    function.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    function.restype = ctypes.c_int
    return function


def available() -> bool:
    """recvmmsg exists here (Linux with glibc or musl)."""
    try:
        _recvmmsg()
    except (OSError, AttributeError):
        return False
    return True


class BatchReceiver:
    """Up to `count` datagrams per call on one socket; slots are reused, valid until the next receive()."""

    __slots__ = (
        "_call",
        "_control",
        "_fd",
        "_headers",
        "_iov",
        "_names",
        "_pristine",
        "_slots",
        "control",
        "count",
        "headers",
        "names",
        "slot_size",
        "views",
    )

    def __init__(self, sock: socket.socket, count: int = 32, slot_size: int = 65536) -> None:
        self._call = _recvmmsg()
        self._fd = sock.fileno()
        self.count = count
        self.slot_size = slot_size
        self._slots = (ctypes.c_char * (slot_size * count))()
        self._names = (ctypes.c_char * (_NAME_SIZE * count))()
        self._control = (ctypes.c_char * (_CONTROL_SIZE * count))()
        self._iov = (_Iovec * count)()
        self._headers = (_Mmsghdr * count)()
        base = ctypes.addressof(self._slots)
        for i in range(count):
            self._iov[i].base = base + i * slot_size
            self._iov[i].len = slot_size
            hdr = self._headers[i].hdr
            hdr.name = ctypes.addressof(self._names) + i * _NAME_SIZE
            hdr.namelen = _NAME_SIZE
            hdr.iov = ctypes.addressof(self._iov) + i * ctypes.sizeof(_Iovec)
            hdr.iovlen = 1
            hdr.control = ctypes.addressof(self._control) + i * _CONTROL_SIZE
            hdr.controllen = _CONTROL_SIZE
        self.headers = memoryview(self._headers).cast("B")
        self._pristine = bytes(self.headers)  # the in/out lengths to restore before each call
        self.names = memoryview(self._names).cast("B")
        self.control = memoryview(self._control).cast("B")
        slots = memoryview(self._slots).cast("B")
        self.views = [slots[i * slot_size : (i + 1) * slot_size] for i in range(count)]

    def __repr__(self) -> str:
        return f"BatchReceiver(fd={self._fd}, count={self.count})"

    def receive(self, flags: int = MSG_WAITFORONE) -> int:
        """Blocks for one datagram (SO_RCVTIMEO bounds it); returns how many came. OSError as recv raises."""
        self.headers[:] = self._pristine
        got = self._call(self._fd, ctypes.addressof(self._headers), self.count, flags, None)
        if got < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise BlockingIOError(code, os.strerror(code))
            if code == errno.EINTR:
                raise InterruptedError(code, os.strerror(code))
            raise OSError(code, os.strerror(code))
        return int(got)

    @staticmethod
    def header_offset(i: int) -> int:
        return i * _HEADER_SIZE

    @staticmethod
    def name_offset(i: int) -> int:
        return i * _NAME_SIZE

    @staticmethod
    def control_offset(i: int) -> int:
        return i * _CONTROL_SIZE


_CMSG_HEADER = struct.Struct("@Qii")
_CMSG_ALIGN = ctypes.sizeof(ctypes.c_size_t)
# The control data the reflector's sockets produce, in the kernel's order: SCM_TIMESTAMPNS, then IP_TTL or
# IPV6_HOPLIMIT. Read in one unpack when the lengths say it is exactly that; parse_control otherwise.
USUAL_CONTROL = struct.Struct("@QiiqqQiii")
USUAL_CONTROL_LENGTH = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)


def parse_control(control: memoryview, offset: int, length: int) -> list[tuple[int, int, bytes]]:
    """The control messages of one datagram as recvmsg would list them (level, type, data)."""
    found = []
    end = min(offset + min(length, _CONTROL_SIZE), len(control))
    while offset + _CMSG_HEADER.size <= end:
        cmsg_len, level, kind = _CMSG_HEADER.unpack_from(control, offset)
        if cmsg_len < _CMSG_HEADER.size or offset + cmsg_len > end:
            break
        found.append((level, kind, bytes(control[offset + _CMSG_HEADER.size : offset + cmsg_len])))
        offset += (cmsg_len + _CMSG_ALIGN - 1) & ~(_CMSG_ALIGN - 1)
    return found


def decode_name(names: memoryview, offset: int, length: int) -> tuple[str, int] | tuple[str, int, int, int]:
    """A sockaddr as the socket module gives it: (host, port) or (host, port, flowinfo, scope_id).

    Raises OSError for an address that is too short or of another family.
    """
    if length < 2 or offset + length > len(names):
        raise OSError(errno.EINVAL, f"a {length}-octet address")
    (family,) = struct.unpack_from("=H", names, offset)
    if family == socket.AF_INET and length >= 8:
        return socket.inet_ntop(socket.AF_INET, names[offset + 4 : offset + 8]), int.from_bytes(
            names[offset + 2 : offset + 4], "big"
        )
    if family == socket.AF_INET6 and length >= 28:
        port, flowinfo = struct.unpack_from("!HI", names, offset + 2)
        (scope,) = struct.unpack_from("=I", names, offset + 24)
        return socket.inet_ntop(socket.AF_INET6, names[offset + 8 : offset + 24]), port, flowinfo, scope
    raise OSError(errno.EAFNOSUPPORT, f"address family {family}")


def _sendmmsg() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    function = _libc.sendmmsg
    function.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    function.restype = ctypes.c_int
    return function


_IOV_LEN_AT = _Iovec.len.offset
_IOV_SIZE = ctypes.sizeof(_Iovec)


class BatchSender:
    """Queues up to `count` datagrams (payload copied into a slot, raw sockaddr) and sends them in one call.

    Saves the per-datagram syscall entry (about 2 us of the ~6 us a sendto costs on the test VM), at the
    price of timestamps: a reply's T3 is read when it is built, before the replies queued ahead of it leave.
    """

    __slots__ = (
        "_call",
        "_fd",
        "_headers",
        "_iov",
        "_iov_view",
        "_names",
        "_slots",
        "count",
        "headers",
        "names",
        "pending",
        "slot_size",
        "views",
    )

    def __init__(self, sock: socket.socket, count: int = 16, slot_size: int = 65536) -> None:
        self._call = _sendmmsg()
        self._fd = sock.fileno()
        self.count = count
        self.slot_size = slot_size
        self.pending = 0
        self._slots = (ctypes.c_char * (slot_size * count))()
        self._names = (ctypes.c_char * (_NAME_SIZE * count))()
        self._iov = (_Iovec * count)()
        self._headers = (_Mmsghdr * count)()
        base = ctypes.addressof(self._slots)
        for i in range(count):
            self._iov[i].base = base + i * slot_size
            hdr = self._headers[i].hdr
            hdr.name = ctypes.addressof(self._names) + i * _NAME_SIZE
            hdr.iov = ctypes.addressof(self._iov) + i * _IOV_SIZE
            hdr.iovlen = 1
        self.headers = memoryview(self._headers).cast("B")
        self._iov_view = memoryview(self._iov).cast("B")
        self.names = memoryview(self._names).cast("B")
        slots = memoryview(self._slots).cast("B")
        self.views = [slots[i * slot_size : (i + 1) * slot_size] for i in range(count)]

    def __repr__(self) -> str:
        return f"BatchSender(fd={self._fd}, count={self.count}, pending={self.pending})"

    def add(self, data: memoryview | bytes, name: bytes) -> bool:
        """Queues one datagram to the raw sockaddr `name`; True when the batch is now full."""
        i = self.pending
        size = len(data)
        self.views[i][:size] = data
        at = i * _NAME_SIZE
        self.names[at : at + len(name)] = name
        _SIZE_T.pack_into(self._iov_view, i * _IOV_SIZE + _IOV_LEN_AT, size)
        _UINT.pack_into(self.headers, i * _HEADER_SIZE + _NAMELEN_AT, len(name))
        self.pending = i + 1
        return self.pending == self.count

    def flush(self) -> int:
        """Sends what is queued; returns how many left (the rest failed: OSError for the first failure)."""
        pending = self.pending
        self.pending = 0
        if not pending:
            return 0
        sent = self._call(self._fd, ctypes.addressof(self._headers), pending, 0)
        if sent < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return int(sent)


_SIZE_T = struct.Struct("@N")
_UINT = struct.Struct("@I")
