"""Keep key material out of core dumps.

The runtime holds SK_*, derived TWAMP secrets and PSKs in memory; a crash must not write them to disk, and
another process of the same user must not ptrace them out. Every twamp-nf command calls forbid_core_dumps()
before it touches a key.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def _prctl(option: int, value: int) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    result: int = libc.prctl(option, value, 0, 0, 0)
    return result


def forbid_core_dumps() -> None:
    """RLIMIT_CORE 0 (hard and soft, so it cannot be raised again) and not dumpable (no core, no ptrace)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _prctl(PR_SET_DUMPABLE, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def core_dumps_forbidden() -> bool:
    return resource.getrlimit(resource.RLIMIT_CORE) == (0, 0) and _prctl(PR_GET_DUMPABLE, 0) == 0
