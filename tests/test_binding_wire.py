"""RFC 7717 end to end on loopback: our IKE endpoints establish a childless SA, and a real TWAMP server
(ControlListener + Reflector) keyed by ServerBinding talks to a real Control-Client keyed by ClientBinding.

Covers the modes 130/132/136 with PSK and certificate SAs, unknown SPIs (Accept 6, counted and reported),
rekey and delete under a running control connection (R10), and the three no-SA policies.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from nf.binding import (
    KeyingFallback,
    NoIKESA,
    NoSAPolicy,
    SAKeying,
    UnknownSA,
    UnknownSAReason,
    client_config,
)
from nf.ike.auth import PreSharedKey
from nf.ike.exchanges import PeerConfig
from nf.ike.identities import Identity
from nf.ike.proposals import parse_proposals
from nf.ike.sa import Established, Rekeyed
from nf.net.control_connector import ControlClientError
from nf.twamp.control_events import ControlFailure
from nf.twamp.keysource import SharedSecret
from nf.twamp.modes import Accept, Modes
from tests.conftest import tshark
from tests.strongswan_peer import CharonPKI, make_pki
from tests.test_binding_rig import (
    CLIENT_ID,
    IKEV2_AUTH,
    IKEV2_ENC,
    IKEV2_MIXED,
    KEYCHAIN,
    SERVER_ID,
    Rig,
    cert_peer,
    psk_peer,
    run,
    run_test_session,
    setup,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CharonPKI:
    return make_pki(tmp_path_factory.mktemp("pki"), {CLIENT_ID: "ed25519", SERVER_ID: "ecdsa"})


async def psk_rig(allowed: tuple[str, ...] = (CLIENT_ID,), host: str = "127.0.0.1") -> Rig:
    client, server = psk_peer(CLIENT_ID, SERVER_ID), psk_peer(SERVER_ID, "%any")
    return await Rig.open(client, server, allowed=allowed, host=host)


async def establish(rig: Rig) -> Established:
    event = await rig.client_ike.initiate(rig.server_ike.local, rig.client_peer, 60.0)
    assert isinstance(event, Established), event
    return event


async def gone(rig: Rig, spis: tuple[bytes, bytes]) -> None:
    """Until neither endpoint has the SA (the responder learns of a delete from an INFORMATIONAL)."""
    for _ in range(6000):
        if rig.client_ike.lookup(*spis) is None and rig.server_ike.lookup(*spis) is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the IKE SA was never deleted on both ends")


@pytest.mark.parametrize("auth", ["psk", "cert", "psk-v6"])
@pytest.mark.parametrize("mode", [IKEV2_AUTH, IKEV2_ENC, IKEV2_MIXED], ids=["130", "132", "136"])
def test_ikev2_derived_session_in_every_protected_mode(pki: CharonPKI, auth: str, mode: Modes) -> None:
    async def scenario() -> None:
        if auth.startswith("psk"):
            rig = await psk_rig(host="::1" if auth == "psk-v6" else "127.0.0.1")
        else:
            rig = await Rig.open(cert_peer(pki, CLIENT_ID, SERVER_ID), cert_peer(pki, SERVER_ID, "%any"))
        try:
            binding = rig.client_binding()
            established = await establish(rig)
            keying = await binding.keying()
            assert keying is not None and keying.spis == established.spis
            assert keying.key_id == established.spis[0] + established.spis[1]
            connection = await rig.connect(keying, (mode,))
            assert connection.local == rig.address
            try:
                done = await setup(connection)
                assert int(done.mode) == int(mode) and done.key_id == keying.key_id
                result = await run_test_session(connection)
            finally:
                await connection.close()
            assert result.sent == 5 and result.received == 5
            assert rig.server_binding.counters() == {"served": 1}
            assert binding.counters["initiated"] == 0 and binding.counters["keyed"] == 1
            security = {IKEV2_AUTH: "authenticated", IKEV2_ENC: "encrypted", IKEV2_MIXED: "mixed"}[mode]
            assert rig.listener.counters.modes == {security: 1}
            assert rig.listener.counters.bad_input == {}
        finally:
            await rig.close()

    run(scenario())


def test_unknown_spis_get_accept_6_counted_and_reported() -> None:
    async def scenario() -> None:
        async with await psk_rig() as rig:
            await establish(rig)
            stranger = SAKeying((os.urandom(8), os.urandom(8)), SharedSecret(os.urandom(32)))
            connection = await rig.connect(stranger, (IKEV2_AUTH,))
            assert connection.writer is not None
            client_port = connection.writer.get_extra_info("sockname")[1]
            try:
                with pytest.raises(ControlClientError) as failure:
                    await setup(connection)
            finally:
                await connection.close()
            assert failure.value.reason is ControlFailure.UNKNOWN_SA
            assert failure.value.accept is Accept.UNKNOWN_SA
            assert "Accept=6" in str(failure.value)
            assert rig.server_binding.counters() == {"served": 0, "no-sa": 1}
            # the event carries what the unknown-sa notification needs (RFC 7717 s5.3: log for operations)
            assert rig.unknown == [
                UnknownSA(
                    stranger.spis[0],
                    stranger.spis[1],
                    UnknownSAReason.NO_SA,
                    client_address="127.0.0.1",
                    client_port=client_port,
                    server_address="127.0.0.1",
                    server_port=rig.port,
                )
            ]
            assert f"from 127.0.0.1 port {client_port}: no-sa" in str(rig.unknown[0])
            assert rig.listener.counters.bad_input == {"unknown-sa": 1}

    run(scenario())


def test_sa_of_a_peer_not_allowed_is_unknown() -> None:
    async def scenario() -> None:
        async with await psk_rig(allowed=("someone-else.test",)) as rig:
            binding = rig.client_binding()
            await establish(rig)
            keying = await binding.keying()
            assert keying is not None
            async with rig.connected(keying, (IKEV2_ENC,)) as connection:
                with pytest.raises(ControlClientError) as failure:
                    await setup(connection)
            assert failure.value.accept is Accept.UNKNOWN_SA
            assert [(u.reason, u.peer_id) for u in rig.unknown] == [
                (UnknownSAReason.PEER_NOT_ALLOWED, CLIENT_ID)
            ]
            # allowing the peer (a configuration change) lets the next connection in
            allowed = [Identity.parse("someone-else.test"), Identity.parse(CLIENT_ID)]
            rig.server_binding.set_allowed_peers(allowed)
            async with rig.connected(keying, (IKEV2_ENC,)) as connection:
                await setup(connection)
            assert rig.server_binding.counters() == {"served": 1, "peer-not-allowed": 1}

    run(scenario())


def test_rekey_keeps_the_running_connection_and_new_connections_use_new_spis() -> None:
    async def scenario() -> None:
        async with await psk_rig() as rig:
            binding = rig.client_binding()
            established = await establish(rig)
            old = await binding.keying()
            assert old is not None and old.spis == established.spis
            async with rig.connected(old, (IKEV2_AUTH,)) as running:
                await setup(running)
                sa = rig.client_ike.lookup(*established.spis)
                assert sa is not None
                # rekey while a test session of this connection is running
                during = asyncio.ensure_future(run_test_session(running, count=40))
                rekeyed = await rig.client_ike.rekey(sa)
                assert isinstance(rekeyed, Rekeyed) and rekeyed.old_spis == established.spis
                assert (await during).received == 40
                await gone(rig, established.spis)
                # the old SA is gone on both ends; a new connection naming it is refused ...
                async with rig.connected(old, (IKEV2_AUTH,)) as stale:
                    with pytest.raises(ControlClientError) as failure:
                        await setup(stale)
                assert failure.value.accept is Accept.UNKNOWN_SA
                # ... while the running connection still works with the keys set up from it (R10)
                result = await run_test_session(running)
                assert result.received == result.sent == 5
                new = await binding.keying()
                assert new is not None and new.spis == rekeyed.new_spis != old.spis
                async with rig.connected(new, (IKEV2_AUTH,)) as fresh:
                    done = await setup(fresh)
                    assert done.key_id == new.key_id
                    assert (await run_test_session(fresh)).received == 5
                # the old snapshot keeps its own secret, which differs from the new SA's
                assert old.secret_for(old.key_id) != new.secret_for(new.key_id)
            assert rig.server_binding.counters() == {"served": 2, "no-sa": 1}
            assert rig.listener.counters.sessions["accepted"] == 3

    run(scenario())


def test_deleted_sa_refuses_new_connections_while_the_running_one_finishes() -> None:
    async def scenario() -> None:
        async with await psk_rig() as rig:
            binding = rig.client_binding(NoSAPolicy.FAIL)
            established = await establish(rig)
            keying = await binding.keying()
            assert keying is not None
            async with rig.connected(keying, (IKEV2_ENC,)) as running:
                await setup(running)
                sa = rig.client_ike.lookup(*established.spis)
                assert sa is not None
                await rig.client_ike.delete(sa)
                await gone(rig, established.spis)
                async with rig.connected(keying, (IKEV2_ENC,)) as stale:
                    with pytest.raises(ControlClientError) as failure:
                        await setup(stale)
                assert failure.value.accept is Accept.UNKNOWN_SA
                result = await run_test_session(running)
                assert result.received == result.sent == 5
            assert rig.server_binding.counters() == {"served": 1, "no-sa": 1}
            assert [u.spi_i + u.spi_r for u in rig.unknown] == [keying.key_id]
            # no SA any more: policy fail refuses to connect at all
            with pytest.raises(NoIKESA, match="no-sa-policy fail"):
                await binding.keying()

    run(scenario())


def test_newest_sa_is_current_and_an_older_one_takes_over_when_it_goes() -> None:
    async def scenario() -> None:
        async with await psk_rig() as rig:
            binding = rig.client_binding(NoSAPolicy.FAIL)
            first, second = await establish(rig), await establish(rig)
            keying = await binding.keying()
            assert keying is not None and keying.spis == second.spis != first.spis
            newest = rig.client_ike.lookup(*second.spis)
            assert newest is not None
            await rig.client_ike.delete(newest)
            older = await binding.keying()
            assert older is not None and older.spis == first.spis
            spis = f"{first.spis[0].hex()}_i/{first.spis[1].hex()}_r"
            assert repr(binding) == f"ClientBinding(server, fail, current={spis})"
            async with rig.connected(older, (IKEV2_ENC,)) as connection:
                assert (await setup(connection)).key_id == older.key_id

    run(scenario())


def test_no_sa_initiate_and_wait() -> None:
    async def scenario() -> None:
        async with await psk_rig() as rig:
            binding = rig.client_binding(NoSAPolicy.INITIATE)
            assert binding.current() is None
            # two connections at once share one initiation
            first, second = await asyncio.gather(binding.keying(), binding.keying())
            assert first is not None and second is not None and first.spis == second.spis
            assert binding.counters["initiated"] == 1
            assert rig.server_ike.lookup(*first.spis) is not None
            async with rig.connected(first, (IKEV2_MIXED,)) as connection:
                await setup(connection)
                assert (await run_test_session(connection)).received == 5

    run(scenario())


def test_no_sa_initiate_fails_when_the_peer_does_not_answer() -> None:
    async def scenario() -> None:
        async with await psk_rig() as rig:
            binding = rig.client_binding(NoSAPolicy.INITIATE, timeout=1.0)
            rig.server_ike.close()  # nobody answers IKE_SA_INIT any more
            with pytest.raises(NoIKESA, match="no IKE SA with server within 1 s"):
                await binding.keying()
            assert binding.counters["failed"] == binding.counters["initiated"] == 1

    run(scenario())


def test_no_sa_initiate_reports_why_the_ike_sa_failed() -> None:
    async def scenario() -> None:
        wrong = PeerConfig(
            Identity.parse(CLIENT_ID),
            Identity.parse(SERVER_ID),
            parse_proposals("aes128gcm16-prfsha256-x25519"),
            psk=PreSharedKey(b"not the server's pre-shared key at all"),
        )
        async with await Rig.open(wrong, psk_peer(SERVER_ID, "%any")) as rig:
            binding = rig.client_binding(NoSAPolicy.INITIATE)
            with pytest.raises(NoIKESA, match="IKE SA with server failed: ") as failure:
                await binding.keying()
            assert "not the server" not in str(failure.value)
            assert binding.counters["failed"] == 1 and binding.current() is None

    run(scenario())


def test_no_sa_initiate_fails_cleanly_when_our_endpoint_is_gone() -> None:
    async def scenario() -> None:
        async with await psk_rig() as rig:
            binding = rig.client_binding(NoSAPolicy.INITIATE)
            rig.client_ike.close()
            with pytest.raises(NoIKESA, match="could not be initiated: RuntimeError: endpoint is closed"):
                await binding.keying()
            assert binding.counters["failed"] == 1

    run(scenario())


def test_waiting_client_is_woken_by_an_sa_the_peer_initiates() -> None:
    async def scenario() -> None:
        async with await Rig.open(psk_peer(CLIENT_ID, SERVER_ID), psk_peer(SERVER_ID, CLIENT_ID)) as rig:
            binding = rig.client_binding()
            waiting = asyncio.ensure_future(binding.wait_established(60.0))
            event = await rig.server_ike.initiate(rig.client_ike.local, psk_peer(SERVER_ID, CLIENT_ID), 60.0)
            assert isinstance(event, Established)
            keying = await waiting
            assert keying is not None and keying.spis == event.spis
            async with rig.connected(keying, (IKEV2_AUTH,)) as connection:
                assert (await setup(connection)).key_id == keying.key_id

    run(scenario())


def test_no_sa_fallback_uses_the_key_chain_mode() -> None:
    async def scenario() -> None:
        async with await psk_rig() as rig:
            binding = rig.client_binding(NoSAPolicy.FALLBACK)
            fallbacks: list[KeyingFallback] = []
            binding.add_observer(fallbacks.append)
            keying = await binding.keying()
            assert keying is None
            assert fallbacks == [KeyingFallback("server", "no IKE SA; using key-chain modes")]
            async with rig.connected(keying, (IKEV2_AUTH, Modes.ENCRYPTED)) as connection:
                done = await setup(connection)
                assert int(done.mode) == int(Modes.ENCRYPTED) and done.key_id == b"fallback"
                assert (await run_test_session(connection)).received == 5
            assert rig.server_binding.counters() == {"served": 0}
            assert binding.counters["fallback"] == 1 and rig.listener.counters.modes == {"encrypted": 1}
            with pytest.raises(NoIKESA, match="without ikev2-derived"):
                client_config(None, (IKEV2_AUTH,), key_id=b"fallback", key_source=KEYCHAIN)

    run(scenario())


def test_accept_6_makes_the_client_initiate_a_fresh_sa() -> None:
    """Q5: a server that lost the SA answers 6; the client stops naming it; initiate makes a new one."""

    async def scenario() -> None:
        async with await psk_rig() as rig:
            binding = rig.client_binding(NoSAPolicy.INITIATE)
            established = await establish(rig)
            server_sa = rig.server_ike.lookup(*established.spis)
            assert server_sa is not None
            assert rig.server_ike.engine is not None
            rig.server_ike.engine.registry.remove(server_sa)  # the server forgets the SA (e.g. a restart)
            keying = await binding.keying()
            assert keying is not None
            async with rig.connected(keying, (IKEV2_AUTH,)) as connection:
                with pytest.raises(ControlClientError) as failure:
                    await setup(connection)
            assert failure.value.reason is ControlFailure.UNKNOWN_SA
            binding.server_rejected(keying)
            fresh = await binding.keying()
            assert fresh is not None and fresh.spis != keying.spis and binding.counters["initiated"] == 1
            async with rig.connected(fresh, (IKEV2_AUTH,)) as connection:
                await setup(connection)
            assert rig.server_binding.counters() == {"served": 1, "no-sa": 1}

    run(scenario())


def _wait_until_capturing(pcap: Path, probe: socket.socket, port: int) -> None:
    """dumpcap's filter goes live slightly after it announces itself: probe with UDP datagrams to a port of
    our own until one shows up in the file."""
    for _ in range(600):
        probe.sendto(b"probe", ("127.0.0.1", port))
        if pcap.exists() and tshark(["-r", str(pcap), "-Y", f"udp.port == {port}"]).strip():
            return
        time.sleep(0.05)
    raise AssertionError("the capture never saw a probe datagram")


def _fields(pcap: Path, decode: list[str], display: str, names: list[str]) -> list[dict[str, str]]:
    args = ["-r", str(pcap), "-Y", display, "-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
    for rule in decode:
        args += ["-d", rule]
    for name in names:
        args += ["-e", name]
    rows = []
    for line in tshark(args).splitlines():
        rows.append({n: v for n, v in zip(names, line.split("|"), strict=True) if v})
    return rows


@pytest.mark.tshark
def test_wireshark_sees_the_ike_header_spis_as_the_key_id(capture: Any) -> None:
    """Independent dissectors: Wireshark's ISAKMP SPIs of our IKE SA lead the TWAMP Key ID of Mode 130
    (R15), and the Server-Start carries Accept 0; unknown SPIs get Accept 6 (R18)."""
    found: dict[str, Any] = {}

    async def scenario() -> None:
        rig = await psk_rig()
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("127.0.0.1", 0))
            probe_port = probe.getsockname()[1]
            ike = (rig.client_ike.local[1], rig.server_ike.local[1])
            ports = f"tcp port {rig.port} or udp port {ike[0]} or udp port {ike[1]} or udp port {probe_port}"
            cap = await asyncio.to_thread(capture, ports)
            await asyncio.to_thread(_wait_until_capturing, cap.path, probe, probe_port)
            binding = rig.client_binding()
            await establish(rig)
            keying = await binding.keying()
            assert keying is not None
            async with rig.connected(keying, (IKEV2_AUTH,)) as connection:
                await setup(connection)
            stranger = SAKeying((os.urandom(8), os.urandom(8)), SharedSecret(os.urandom(20)))
            async with rig.connected(stranger, (IKEV2_AUTH,)) as refused:
                with pytest.raises(ControlClientError):
                    await setup(refused)
            found.update(pcap=await asyncio.to_thread(cap.stop), keying=keying, stranger=stranger)
            found.update(ike=ike, port=rig.port)
        finally:
            probe.close()
            await rig.close()

    run(scenario())
    pcap, keying, stranger = found["pcap"], found["keying"], found["stranger"]
    # off port 500 our endpoint frames IKE as on port 4500 (non-ESP marker): Wireshark's udpencap reads that
    ike_rows = _fields(
        pcap, [f"udp.port=={p},udpencap" for p in found["ike"]], "isakmp", ["isakmp.ispi", "isakmp.rspi"]
    )
    header_spis = {(bytes.fromhex(r["isakmp.ispi"]), bytes.fromhex(r["isakmp.rspi"])) for r in ike_rows}
    assert keying.spis in header_spis  # the SPIs as carried in the IKE headers, initiator's first (Q4)
    rows = _fields(
        pcap,
        [f"tcp.port=={found['port']},twamp.control"],
        "twamp.control",
        ["twamp.control.mode", "twamp.control.keyid", "twamp.control.accept"],
    )
    setups = [r for r in rows if "twamp.control.mode" in r]
    assert [int(r["twamp.control.mode"], 0) for r in setups] == [130, 130]
    # Wireshark 4.0 shows the first 40 octets of the Key ID: SPIi | SPIr, then zeros
    assert [bytes.fromhex(r["twamp.control.keyid"]) for r in setups] == [
        keying.key_id.ljust(40, b"\0"),
        stranger.key_id.ljust(40, b"\0"),
    ]
    accepts = [int(r["twamp.control.accept"]) for r in rows if "twamp.control.accept" in r]
    assert accepts == [0, 6]
