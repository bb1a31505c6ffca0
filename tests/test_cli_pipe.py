"""A twamp-nf command whose reader goes away (`twamp-nf demo | head -1`) ends quietly and cleans up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


def test_demo_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nf.cli", "demo", "--count", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip()
    proc.stdout.close()  # what `head -1` does after its line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=240) == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert not list(tmp_path.glob("twamp-nf-demo-*")), "the demo left its directory behind"
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False)
    assert left.stdout == "", f"processes left behind: {left.stdout}"
