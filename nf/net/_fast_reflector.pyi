"""Types of the C extension nf/net/_fast_reflector.c (the reflector's per-packet path)."""

UNHANDLED: int
SHORT: int
BAD_HMAC: int
TOO_LONG: int
RATE_LIMITED: int
SEND_FAILED: int
CRYPTO_FAILED: int
MAX_UDP_PAYLOAD: int

class Keys:
    def __init__(self, aes_key: bytes, hmac_key: bytes) -> None: ...

class Session:
    @property
    def seq(self) -> int: ...
    @property
    def reflected(self) -> int: ...
    @property
    def last_activity(self) -> int: ...
    error_estimate: int
    def __init__(
        self,
        sender: tuple[int, int, int, int, int, int],
        reply: tuple[int, int, int, int, int, int, int, int, int, int, int],
        keys: Keys | None = None,
        keep_octets: int = 0,
        rate: float = 0.0,
        burst: float = 1.0,
        now_ns: int = 0,
    ) -> None: ...
    def reflect(
        self, data: bytes | bytearray | memoryview, receive_ntp: int, ttl: int, t3: int | None = None
    ) -> bytes | int: ...
    def take(self, now_ns: int, /) -> bool: ...
    def activate(self, until_ns: int, /) -> None: ...

Deferred = tuple[int, bytes | None, tuple[str, int] | tuple[str, int, int, int], int, int, int]

class Port:
    receive_calls: int
    send_calls: int
    dscp: int
    def __init__(self, fd: int, batch: int = 16, send_batch: int = 1) -> None: ...
    def add(self, session: Session, host: bytes, port: int, dscp: int) -> None: ...
    def remove(self, session: Session, /) -> bool: ...
    def serve(self, until_ns: int, busy_poll_ns: int, /) -> tuple[bool, list[Deferred]]: ...
    def stop(self) -> None: ...
