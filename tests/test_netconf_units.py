"""Pieces of the NETCONF server without SSH: framing, the users file, NACM decisions, edit and filter engines
on the real YANG schema, and the libyang conversions."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from nf_netconf.edit import Change, apply_edit
from nf_netconf.errors import RpcError
from nf_netconf.filters import apply_filter
from nf_netconf.framing import EOM, FrameDecoder, FramingError, Message, Oversized, encode
from nf_netconf.nacm import Nacm, Rule
from nf_netconf.runtime_link import EventStream
from nf_netconf.schema import Schema, strip_predicates
from nf_netconf.server import default_yang_dirs
from nf_netconf.users import UsersFileError, hash_password, load_users, verify_password
from tests.test_runtime_socket import Served

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
TW = "urn:twamp-nf:yang:twamp-nf-twamp"


# ------------------------------------------------------------------------------------------------------------
# framing
# ------------------------------------------------------------------------------------------------------------

messages = st.lists(
    st.binary(min_size=1, max_size=300).filter(lambda b: EOM not in b), min_size=1, max_size=5
)


def _drain(decoder: FrameDecoder, chunked: bool) -> Iterator[Message | Oversized]:
    while (event := decoder.next_event(chunked)) is not None:
        yield event


@settings(deadline=None)
@given(messages, st.booleans(), st.integers(min_value=1, max_value=64))
def test_framing_round_trip_in_any_pieces(msgs: list[bytes], chunked: bool, step: int) -> None:
    wire = b"".join(encode(m, chunked) for m in msgs)
    decoder = FrameDecoder(1000)
    out: list[Message | Oversized] = []
    for i in range(0, len(wire), step):
        decoder.feed(wire[i : i + step])
        out.extend(_drain(decoder, chunked))
    assert out == [Message(m) for m in msgs]


@settings(deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=8), st.booleans())
def test_oversized_message_is_dropped_whole_and_the_next_one_decodes(sizes: list[int], chunked: bool) -> None:
    limit = 100
    big = b"x" * (limit + 1)
    if chunked:
        wire = b"".join(b"\n#%d\n" % n + b"y" * n for n in sizes) + b"\n##\n"
        total = sum(sizes)
    else:
        wire = big + EOM
        total = len(big)
    wire += encode(b"<rpc/>", chunked)
    decoder = FrameDecoder(limit)
    decoder.feed(wire)
    events = list(_drain(decoder, chunked))
    first = Oversized(total) if total > limit else Message(b"y" * total)
    assert events == [first, Message(b"<rpc/>")]


@pytest.mark.parametrize(
    "wire", [b"\n#0\nx\n##\n", b"\n#abc\n", b"xx#1\n", b"\n#12345678901\n", b"\n##\n", b"\n#0001\nx"]
)
def test_bad_chunk_headers_are_framing_errors(wire: bytes) -> None:
    decoder = FrameDecoder(100)
    decoder.feed(wire)
    with pytest.raises(FramingError):
        list(_drain(decoder, True))


def test_framing_switches_to_chunked_after_hello_with_bytes_buffered() -> None:
    decoder = FrameDecoder(100)
    decoder.feed(encode(b"<hello/>", False) + encode(b"<rpc/>", True))
    assert decoder.next_event(False) == Message(b"<hello/>")
    assert decoder.next_event(True) == Message(b"<rpc/>")


# ------------------------------------------------------------------------------------------------------------
# users file
# ------------------------------------------------------------------------------------------------------------


def test_password_hash_verifies_only_its_password() -> None:
    stored = hash_password("s3cret-pass")
    assert stored.startswith("scrypt$") and "s3cret-pass" not in stored
    assert verify_password(stored, "s3cret-pass")
    assert not verify_password(stored, "s3cret-pasS")
    assert not verify_password("scrypt$garbage", "x")


def test_users_file_with_keys_groups_and_rules() -> None:
    users, nacm = load_users(
        f'[users.ops]\npassword-hash = "{hash_password("pw-ops-0001")}"\ngroups = ["admin"]\n'
        '[users.robot]\nauthorized-keys = ["ssh-ed25519 '
        'AAAAC3NzaC1lZDI1NTE5AAAAIGjOrTtAm4i9qIXBMmxQ2q3GvZVuhnGYyA0bDfrmPc8A robot"]\n'
        '[nacm]\nwrite-default = "permit"\n'
        '[[nacm.rule]]\ngroups = ["*"]\nrpc = "kill-session"\naccess = ["exec"]\naction = "permit"\n'
    )
    assert users["ops"].check_password("pw-ops-0001") and users["ops"].groups == {"admin"}
    assert users["robot"].password_hash is None and len(users["robot"].keys) == 1
    assert nacm.write_default and nacm.rules[0].rpc == "kill-session"
    assert "pw-ops" not in repr(users["ops"])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[users.a]\ngroups = []\n", "neither password-hash nor authorized-keys"),
        ('[users.a]\npassword-hash = "plain"\n', "scrypt hash"),
        ('[users.a]\nauthorized-keys = ["ssh-ed25519 !!!"]\n', r"authorized-keys\[0\]"),
        ("[users.a]\npassword = 'x'\n", "unknown keys"),
        ("[nacm]\nread-default = 'maybe'\n", "permit' or 'deny"),
        ("[[nacm.rule]]\naccess = ['fly']\naction = 'permit'\n", "unknown operations"),
        ("[[nacm.rule]]\naccess = '*'\n", "action is required"),
        ("[[nacm.rule]]\npath = 'relative'\naction = 'deny'\n", "absolute"),
        ("[other]\n", "unknown sections"),
        ("not toml [", "not TOML"),
    ],
)
def test_users_file_errors_name_the_entry(text: str, reason: str) -> None:
    with pytest.raises(UsersFileError, match=reason):  # the reason, never a password
        load_users(text)


# ------------------------------------------------------------------------------------------------------------
# schema, edit, filters, NACM on the real modules
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema(default_yang_dirs())


def _data(xml: str = "") -> etree._Element:
    return etree.fromstring(f'<data xmlns="{NC}">{xml}</data>'.encode())


def _config(xml: str) -> etree._Element:
    return etree.fromstring(f'<config xmlns="{NC}" xmlns:nc="{NC}">{xml}</config>'.encode())


def test_secret_leaves_come_from_default_deny_all(schema: Schema) -> None:
    assert schema.secret_paths == {
        "/twamp-nf-twamp:twamp/client/key-chain/secret-key",
        "/twamp-nf-twamp:twamp/server/key-chain/secret-key",
        "/twamp-nf-ike:ike/local-identity/psk",
    }


def test_strip_predicates_honours_quotes() -> None:
    assert strip_predicates("/a:b[k='x]y']/c[.=\"]\"]/d") == "/a:b/c/d"


def test_edit_reports_changes_and_refuses_unknown_nodes(schema: Schema) -> None:
    data = _data()
    changes = apply_edit(
        data,
        _config(
            f'<twamp xmlns="{TW}"><server><modes>authenticated</modes><key-chain><key-id>k</key-id>'
            "<secret-key>AAAA</secret-key></key-chain></server></twamp>"
        ),
        schema,
        "merge",
    )
    assert [(c.op, c.instance) for c in changes] == [
        ("create", "/twamp-nf-twamp:twamp"),
        ("create", "/twamp-nf-twamp:twamp/server"),
        ("create", "/twamp-nf-twamp:twamp/server/modes"),
        ("create", "/twamp-nf-twamp:twamp/server/key-chain[key-id='k']"),
        ("create", "/twamp-nf-twamp:twamp/server/key-chain[key-id='k']/secret-key"),
    ]
    with pytest.raises(RpcError) as err:
        apply_edit(data, _config(f'<twamp xmlns="{TW}"><nope/></twamp>'), schema, "merge")
    assert err.value.tag == "unknown-element" and err.value.path == "/twamp-nf-twamp:twamp"
    with pytest.raises(RpcError) as err:
        apply_edit(
            data, _config(f'<twamp xmlns="{TW}"><server><key-chain/></server></twamp>'), schema, "merge"
        )
    assert err.value.tag == "missing-element"


def test_check_config_converts_to_rfc7951_json_and_back(schema: Schema) -> None:
    roots, text = schema.check_config(
        list(
            _data(
                f'<twamp xmlns="{TW}"><server><modes>authenticated unauthenticated</modes>'
                "<count>001024</count></server></twamp>"
            )
        ),
        full=True,
    )
    assert json.loads(text) == {
        "twamp-nf-twamp:twamp": {"server": {"modes": "unauthenticated authenticated", "count": 1024}}
    }
    assert roots[0].findtext(f"{{{TW}}}server/{{{TW}}}count") == "1024"
    assert schema.state_to_xml({}) == []


def test_nacm_rules_first_match_and_default_deny_all(schema: Schema) -> None:
    server = schema.roots[f"{{{TW}}}twamp"].children[f"{{{TW}}}server"]
    secret = server.children[f"{{{TW}}}key-chain"].children[f"{{{TW}}}secret-key"]
    count = server.children[f"{{{TW}}}count"]
    nacm = Nacm(
        rules=(
            Rule(
                frozenset({"ops"}),
                "*",
                "/twamp-nf-twamp:twamp/server/count",
                None,
                frozenset({"update"}),
                False,
            ),
            Rule(frozenset({"ops"}), "twamp-nf-twamp", None, None, frozenset({"create", "update"}), True),
        )
    )
    ops = frozenset({"ops"})
    assert not nacm.may_write(ops, Change("update", count, count.path))
    assert nacm.may_write(ops, Change("create", count, count.path))
    assert nacm.may_write(ops, Change("create", secret, secret.path))  # explicitly permitted
    assert not nacm.may_write(frozenset(), Change("create", secret, secret.path))  # default-deny-all
    assert not nacm.may_read(ops, secret)  # write-only whatever the rules say
    assert nacm.may_exec(frozenset(), "ietf-netconf", "get")
    assert not nacm.may_exec(frozenset(), "ietf-netconf", "kill-session")
    assert nacm.may_exec(frozenset(), "ietf-netconf", "close-session")


def test_subtree_filter_content_match_selects_list_entries(schema: Schema) -> None:
    data = _data(
        f'<twamp xmlns="{TW}"><client><key-chain><key-id>a</key-id><secret-key>AAAA</secret-key></key-chain>'
        "<key-chain><key-id>b</key-id><secret-key>BBBB</secret-key></key-chain></client></twamp>"
    )
    spec = etree.fromstring(
        f'<filter xmlns="{NC}"><twamp xmlns="{TW}"><client><key-chain><key-id>b</key-id></key-chain>'
        "</client></twamp></filter>".encode()
    )
    out = apply_filter(data, spec, schema)
    assert [e.text for e in out.iter(f"{{{TW}}}key-id")] == ["b"]
    empty = apply_filter(data, etree.fromstring(f'<filter xmlns="{NC}"/>'.encode()), schema)
    assert len(empty) == 0


EXAMPLES = Path(__file__).resolve().parents[1] / "yang" / "examples"


def _example_config(path: Path) -> etree._Element:
    roots = etree.fromstring(f'<config xmlns="{NC}">{path.read_text()}</config>'.encode())
    return roots


@pytest.mark.parametrize("example", sorted((EXAMPLES / "config").glob("*.xml")), ids=lambda p: p.stem)
def test_every_config_example_goes_through_edit_and_validation(schema: Schema, example: Path) -> None:
    data = _data()
    changes = apply_edit(data, _example_config(example), schema, "merge")
    assert changes
    roots, text = schema.check_config(list(data), full=True)
    assert roots and json.loads(text)


@pytest.mark.parametrize("example", sorted((EXAMPLES / "invalid").glob("*.xml")), ids=lambda p: p.stem)
def test_every_invalid_example_is_refused_with_its_message(schema: Schema, example: Path) -> None:
    expected = example.read_text().split("expect:", 1)[1].split("-->", 1)[0].strip()
    data = _data()
    with pytest.raises(RpcError) as err:
        apply_edit(data, _example_config(example), schema, "merge")
        schema.check_config(list(data), full=True)
    assert expected in err.value.message
    assert err.value.path is None or err.value.path.startswith("/")


@pytest.mark.parametrize("value", ["not*base64*secret", "=====", "ab cd"])
def test_bad_secret_value_is_not_quoted_even_in_part(schema: Schema, value: str) -> None:
    server = (
        f'<twamp xmlns="{TW}"><server><modes>authenticated</modes><key-chain><key-id>k</key-id>'
        f"<secret-key>{value}</secret-key></key-chain></server></twamp>"
    )
    with pytest.raises(RpcError) as err:
        schema.check_config(list(_data(server)), full=True)
    assert err.value.message == "invalid value for a secret leaf (the value is not shown)"
    assert err.value.path == "/twamp-nf-twamp:twamp/server/key-chain[key-id='k']/secret-key"


def test_config_of_only_empty_containers_is_empty(schema: Schema) -> None:
    # found by fuzz_netconf_edit: libyang prints nothing (None) for an empty non-presence container
    assert schema.check_config(list(_data(f'<twamp xmlns="{TW}"/>')), full=True) == ([], "{}")


def test_fuzz_regressions_replay() -> None:
    from tests.fuzz.fuzz_netconf_edit import fuzz_one

    corpus = Path(__file__).resolve().parent / "fuzz" / "corpus" / "fuzz_netconf_edit"
    found = sorted(corpus.glob("regress-*"))
    assert found
    for case in found:
        fuzz_one(case.read_bytes())  # libyang quoting a cut UTF-8 character: an RpcError, nothing else


def test_a_failing_reconnect_hook_is_logged_without_its_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The hook re-sends running (secrets included): a bug's exception text must not reach the log."""
    secret = "c2VjcmV0LXJlY29ubmVjdC0yMDI2"
    path = str(tmp_path / "rt.sock")
    calls: list[int] = []

    def reapply() -> None:
        calls.append(1)
        raise KeyError(secret)

    runtime = Served(path)
    stream = EventStream(path, lambda event: None, on_reconnect=reapply, retry_min=0.05, retry_max=0.2)
    with caplog.at_level(logging.DEBUG):
        stream.start()
        try:
            assert stream.connected.wait(30)
            runtime.close()  # the runtime goes away and a new one takes its socket: the hook runs
            runtime = Served(path)
            deadline = time.monotonic() + 60
            while not calls and time.monotonic() < deadline:
                time.sleep(0.05)
            assert stream.connected.wait(30)
        finally:
            stream.stop()
            runtime.close()
    assert calls
    assert "reconnect hook failed: internal error (KeyError)" in caplog.text
    assert "in reapply" in caplog.text
    assert secret not in caplog.text
