"""Key-holding processes can neither dump core nor be ptraced: checked on a real twamp-nf process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nf.core_dumps import core_dumps_forbidden


def test_forbid_core_dumps_in_a_fresh_interpreter() -> None:
    code = (
        "from nf.core_dumps import core_dumps_forbidden, forbid_core_dumps\n"
        "assert not core_dumps_forbidden()\n"
        "forbid_core_dumps()\n"
        "assert core_dumps_forbidden()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not core_dumps_forbidden()  # the test process itself is untouched


def test_running_command_has_no_core_limit() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nf.cli", "reflect", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "listening on" in proc.stdout.readline()
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
        assert core.split()[4:6] == ["0", "0"], core
    finally:
        proc.terminate()
        proc.wait(timeout=30)
