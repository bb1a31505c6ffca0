"""HOST:PORT text as operators write it: 127.0.0.1:862, [::1]:862, a name, or a bare IPv6 address."""

from __future__ import annotations

import ipaddress


def parse_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    """Split HOST:PORT; IPv6 literals must be bracketed when a port follows ([::1]:862)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"{text!r}: missing ']' after the IPv6 address")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected ':PORT' after ']'")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
    elif text.count(":") > 1:  # bare IPv6 address, no port
        host, port_text = text, ""
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: bracket an IPv6 address that has a port, e.g. [::1]:862") from None
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"{text!r}: missing host")
    if "[" in host or "]" in host:
        raise ValueError(f"{text!r}: stray bracket in the host")
    if not port_text:
        if default_port is None:
            raise ValueError(f"{text!r}: missing :PORT")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: port must be 0..65535")
    return host, int(port_text)


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
