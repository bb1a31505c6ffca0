"""yangcli (yuma123, libssh2) as a second, independent NETCONF client: get-config and an edit through the
candidate it picks because :candidate is advertised."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nf_netconf.server import default_yang_dirs
from tests.test_netconf_harness import PASSWORD, SECRET_B64, SERVER_CONFIG, WAIT, Rig, rig

__all__ = ["rig"]

YANG_DIRS = default_yang_dirs()


def yangcli(rig: Rig, tmp: Path, script: str, *, modpath: bool = True) -> str:
    """Runs a yangcli script against the rig; without `modpath` yangcli finds the modules by get-schema."""
    exe = shutil.which("yangcli")
    if exe is None:
        pytest.fail("yangcli is missing: tests/run installs the Debian yangcli package")
    home = tmp / "yangcli-home"
    home.mkdir(exist_ok=True)
    (tmp / "script.txt").write_text(script)
    result = subprocess.run(
        [
            exe,
            "--server=127.0.0.1",
            f"--ncport={rig.app.port}",
            "--user=admin",
            f"--password={PASSWORD}",
            *(["--modpath=" + ":".join(YANG_DIRS)] if modpath else []),
            "--batch-mode",
            f"--run-script={tmp / 'script.txt'}",
            "--display-mode=xml",
        ],
        cwd=home,
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        check=False,
    )
    return result.stdout + result.stderr


def test_yangcli_reads_and_edits_through_the_candidate(rig: Rig, tmp_path: Path) -> None:
    m = rig.connect()
    m.edit_config(target="running", config=SERVER_CONFIG)
    out = yangcli(
        rig,
        tmp_path,
        "sget-config /twamp source=running\nmerge /twamp/server/count value=2048\ncommit\n"
        "sget-config /twamp/server/count source=running\n",
    )
    assert "<count>65536</count>" in out, out
    assert "<key-id>site-a</key-id>" in out
    assert SECRET_B64 not in out
    assert "<count>2048</count>" in out, out
    assert rig.runtime.applied[-1]["twamp-nf-twamp:twamp"]["server"]["count"] == 2048
    assert "2048" in m.get_config("running").xml
