"""`twamp-nf netconf` as a process: listens where told, serves a session, stops cleanly on SIGTERM; the
--hash-password helper and usage errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from nf_netconf.server import NetconfApp, ServerConfig
from nf_netconf.users import verify_password
from tests.test_netconf_harness import WAIT, FakeRuntime, netconf_connect, users_toml

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "nf.cli", "netconf"]


def test_netconf_command_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    sockdir = tempfile.mkdtemp(prefix="nccli")
    runtime_path = os.path.join(sockdir, "rt.sock")
    runtime = FakeRuntime(runtime_path)
    (tmp_path / "users.toml").write_text(users_toml())
    proc = subprocess.Popen(
        [
            *CLI,
            "--listen",
            "127.0.0.1:0",
            "--runtime-socket",
            runtime_path,
            "--host-key",
            str(tmp_path / "hostkey"),
            "--users",
            str(tmp_path / "users.toml"),
            "--max-sessions",
            "2",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("twamp-nf netconf: listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        assert (tmp_path / "hostkey").stat().st_mode & 0o777 == 0o600
        m = netconf_connect(port)
        assert "data" in m.get_config("running").xml
        m.close_session()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        runtime.close()
        os.unlink(runtime_path)
        os.rmdir(sockdir)


def test_hash_password_and_usage_errors() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [*CLI, "--hash-password"],
        input="pw-0123456789\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 0
    stored = result.stdout.strip()
    assert verify_password(stored, "pw-0123456789") and "pw-0123456789" not in stored
    result = subprocess.run(
        [*CLI, "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 2
    assert "--runtime-socket, --host-key, --users required" in result.stderr


def test_listens_only_on_the_given_address(tmp_path: Path) -> None:
    (tmp_path / "users.toml").write_text(users_toml())
    app = NetconfApp(
        ServerConfig(
            host="::1",
            port=0,
            runtime_socket=str(tmp_path / "none.sock"),
            host_key=str(tmp_path / "hk"),
            users_file=str(tmp_path / "users.toml"),
        )
    )
    app.start()
    try:
        m = netconf_connect(app.port, host="::1")
        assert m.session_id is not None
        m.close_session()
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", app.port), timeout=WAIT),
        ):
            pass
    finally:
        app.stop()
