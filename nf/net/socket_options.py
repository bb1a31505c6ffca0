"""Linux UDP socket options of the TWAMP test plane, and parsing of the ancillary data they produce.

Python's socket module lacks several of the constants (SO_TIMESTAMPNS, IP_RECVTTL, SO_RCVBUFFORCE), so
their Linux values are kept here, each next to the option it enables.
"""

from __future__ import annotations

import errno
import socket
import struct

SO_TIMESTAMPNS = 35  # Linux asm-generic/socket.h (SO_TIMESTAMPNS_OLD; a 64-bit timespec on 64-bit hosts)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SO_RCVBUFFORCE = 33
IP_RECVTTL = 12  # Linux in.h
IP_TTL = socket.IP_TTL
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
IPV6_TCLASS = getattr(socket, "IPV6_TCLASS", 67)

TEST_TTL = 255  # RFC 5357 s4.1.2/s4.2: TWAMP-Test packets leave with TTL / Hop Limit 255

_TIMESPEC = struct.Struct("@qq")
_INT = struct.Struct("@i")
_TIMEVAL = struct.Struct("@qq")
# Room for one timespec and one int control message, with cmsg headers and alignment.
ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_INT.size) + 64


def enable_receive_timestamps(sock: socket.socket) -> bool:
    """Asks the kernel to stamp each datagram on arrival (SO_TIMESTAMPNS); False when it cannot."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def enable_receive_ttl(sock: socket.socket) -> bool:
    """Asks for the received TTL / Hop Limit as ancillary data; False when the kernel refuses."""
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    except OSError:
        return False
    return True


def set_send_ttl(sock: socket.socket, ttl: int = TEST_TTL) -> None:
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_TTL, ttl)


def set_dscp(sock: socket.socket, dscp: int) -> None:
    """DSCP goes in the upper six bits of the TOS / Traffic Class octet; ECN bits stay zero."""
    if not 0 <= dscp <= 63:
        raise ValueError(f"DSCP {dscp} is not in 0..63")
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, dscp << 2)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """SO_RCVBUF, beyond net.core.rmem_max when privileged (SO_RCVBUFFORCE); returns what the kernel gave."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOPROTOOPT, errno.EINVAL):
            raise
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def set_receive_timeout(sock: socket.socket, seconds: float) -> None:
    """SO_RCVTIMEO on a blocking socket: recvmsg then fails with EAGAIN after `seconds` of silence.

    Unlike socket.settimeout this adds no poll() per datagram, so the fast path stays one syscall per receive
    while the loop still wakes up regularly for housekeeping and shutdown.
    """
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(whole, int((seconds - whole) * 1e6)))


def parse_ancillary(ancdata: list[tuple[int, int, bytes]]) -> tuple[int | None, int | None]:
    """(kernel receive time in Unix nanoseconds, received TTL / Hop Limit); None for whatever is absent."""
    stamp: int | None = None
    ttl: int | None = None
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanos = _TIMESPEC.unpack_from(data)
            stamp = seconds * 1_000_000_000 + nanos
        elif len(data) >= _INT.size and (
            (level == socket.IPPROTO_IP and kind == IP_TTL)
            or (level == socket.IPPROTO_IPV6 and kind == IPV6_HOPLIMIT)
        ):
            (ttl,) = _INT.unpack_from(data)
    return stamp, ttl
