"""The YANG contract: modules lint clean, examples validate or fail for the stated reason, docs stay true.

Every pyang/yanglint invocation goes through yang/check, the same script CI runs, so the test and the CI
step cannot drift apart. The modules are also compared with the runtime's own Modes and Accept tables:
a renumbered bit would silently break the management-to-runtime mapping.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pyang import context, repository  # type: ignore[import-untyped]

from nf.ike.counters import Reason
from nf.ike.identities import IDType
from nf.ike.transforms import ENCRS, DhId, EncrId, IntegId, PrfId
from nf.net.limits import Limits, Refusal
from nf.net.sender import ReplyDrop
from nf.twamp.control_events import ControlFailure
from nf.twamp.modes import Accept, Modes, SecurityMode
from nf.twamp.results import DelayStats, Summary, VariationStats
from nf.twamp.test_reflector import DropReason

ROOT = Path(__file__).resolve().parent.parent
YANG = ROOT / "yang"
EXAMPLES = YANG / "examples"
MODULES = ("twamp-nf-twamp", "twamp-nf-ike", "twamp-nf-ike-binding")
IETF_DIR = Path(sys.prefix) / "share" / "yang" / "modules" / "ietf"
CHECK_TIMEOUT = 120
VALID_KINDS = {"config": "config", "state": "data", "notifications": "notif"}
EXPECT = re.compile(r"^<!-- expect: (.*) -->$", re.MULTILINE)

# YANG bit name -> runtime flag, and YANG Accept enum -> runtime Accept value.
MODE_NAMES = {
    "unauthenticated": Modes.UNAUTHENTICATED,
    "authenticated": Modes.AUTHENTICATED,
    "encrypted": Modes.ENCRYPTED,
    "unauth-test-encrypt-control": Modes.MIXED,
    "individual-session-control": Modes.INDIVIDUAL_SESSION_CONTROL,
    "reflect-octets": Modes.REFLECT_OCTETS,
    "symmetrical-size": Modes.SYMMETRICAL_SIZE,
    "ikev2-derived": Modes.IKEV2_DERIVED,
}
ACCEPT_NAMES = {
    "ok": Accept.OK,
    "failure": Accept.FAILURE,
    "internal-error": Accept.INTERNAL_ERROR,
    "not-supported": Accept.NOT_SUPPORTED,
    "permanent-resource-limit": Accept.PERMANENT_RESOURCE_LIMITATION,
    "temp-resource-limit": Accept.TEMPORARY_RESOURCE_LIMITATION,
    "unknown-sa": Accept.UNKNOWN_SA,
}


def run_check(*args: str, check_script: Path = YANG / "check") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHON"] = sys.executable
    return subprocess.run(
        ["bash", str(check_script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=CHECK_TIMEOUT,
        check=False,
    )


def examples(kind: str) -> list[Path]:
    found = sorted((EXAMPLES / kind).glob("*.xml"))
    assert found, f"no examples in {kind}"
    return found


def validate(kind: str, path: Path) -> subprocess.CompletedProcess[str]:
    return run_check("validate", kind, str(path))


def validate_all(kind: str, paths: list[Path]) -> dict[Path, subprocess.CompletedProcess[str]]:
    """Many documents at once: each yanglint run is mostly start-up, so a few in parallel save wall time."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(paths, pool.map(lambda path: validate(kind, path), paths), strict=True))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The three modules compiled by pyang's library, for questions yanglint's CLI cannot answer."""
    repo = repository.FileRepository(f"{IETF_DIR}{os.pathsep}{YANG}", use_env=False)
    ctx = context.Context(repo)
    modules = {}
    for name in MODULES:
        path = YANG / f"{name}.yang"
        modules[name] = ctx.add_module(str(path), path.read_text(encoding="utf-8"))
    ctx.validate()
    assert not ctx.errors, [(e[0].ref, e[0].line, e[1]) for e in ctx.errors]
    return modules


def schema_nodes(stmt: Any, path: str = "") -> list[tuple[str, Any]]:
    nodes = []
    for child in getattr(stmt, "i_children", []):
        child_path = f"{path}/{child.arg}"
        nodes.append((child_path, child))
        nodes.extend(schema_nodes(child, child_path))
    return nodes


def test_modules_pass_pyang_strict_lint_and_yanglint() -> None:
    result = run_check("lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == "", "warnings count as failures"


@pytest.mark.parametrize("kind", sorted(VALID_KINDS))
def test_valid_examples_are_accepted(kind: str) -> None:
    for path, result in validate_all(VALID_KINDS[kind], examples(kind)).items():
        assert result.returncode == 0, f"{path.name}: {result.stderr}"
        assert result.stderr == "", f"{path.name}: {result.stderr}"
        if kind in ("config", "state"):
            assert libyang_binding_verdict(path, with_state=kind == "state") in (None, ""), path.name


def libyang_binding_verdict(path: Path, with_state: bool = False) -> str | None:
    """The NETCONF server validates with the libyang Python binding; when it is installed it must agree.

    Returns None when the binding is absent, "" when the document is valid, else the error text.
    """
    if importlib.util.find_spec("libyang") is None:
        return None
    libyang: Any = importlib.import_module("libyang")
    ctx = libyang.Context(f"{IETF_DIR}:{YANG}")
    try:
        for name in MODULES:
            ctx.load_module(name).feature_enable_all()
        tree = ctx.parse_data_mem(
            path.read_text(encoding="utf-8"),
            "xml",
            no_state=not with_state,
            strict=True,
            validate_present=True,
        )
        if tree is not None:
            tree.free()
        return ""
    except libyang.LibyangError as exc:
        return str(exc) or "rejected"
    finally:
        ctx.destroy()


@pytest.mark.parametrize("path", examples("invalid"), ids=lambda p: p.stem)
def test_invalid_examples_are_rejected_with_their_reason(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    expected = EXPECT.findall(text)
    assert len(expected) == 1, "each invalid example states exactly one expected message"
    result = validate("config", path)
    assert result.returncode != 0, "accepted"
    assert expected[0] in result.stderr
    verdict = libyang_binding_verdict(path)
    assert verdict is None or expected[0] in verdict


def test_the_three_required_invalid_cases_exist() -> None:
    """Issue 5 names these three rejections; keep them even if the others change."""
    stems = {p.stem for p in examples("invalid")}
    assert {"bad-mode-combination", "dangling-leafref", "count-out-of-range"} <= stems


def test_examples_cover_every_role_and_an_ikev2_pair() -> None:
    text = {p.stem: p.read_text(encoding="utf-8") for p in examples("config")}
    assert any("<client>" in t for t in text.values())
    assert any("<server>" in t for t in text.values())
    assert any("<session-sender>" in t for t in text.values())
    assert any("<session-reflector>" in t for t in text.values())
    assert "<ike-peer>" in text["client-ikev2"] and "ikev2-derived</mode>" in text["client-ikev2"]
    assert "<allowed-peer>" in text["server-ikev2"] and "ikev2-derived</modes>" in text["server-ikev2"]


def test_rejected_secret_is_not_echoed() -> None:
    """libyang's default length message quotes the value; our error-message must replace it."""
    path = EXAMPLES / "invalid" / "psk-too-short.xml"
    psk = re.search(r"<psk>(.*)</psk>", path.read_text(encoding="utf-8"))
    assert psk is not None
    result = validate("config", path)
    assert result.returncode != 0
    assert psk.group(1) not in result.stderr


def test_config_check_rejects_state_data() -> None:
    """State examples carry config false nodes, so they are not valid configuration."""
    result = validate("config", EXAMPLES / "state" / "client-ikev2-state.xml")
    assert result.returncode != 0


SERVER_WITH_COUNT = """<twamp xmlns="urn:twamp-nf:yang:twamp-nf-twamp">
  <server>
    <count>{count}</count><max-count-exponent>{exponent}</max-count-exponent><modes>authenticated</modes>
  </server>
</twamp>
"""


COUNT_CASES = {
    0: False,
    512: False,
    1023: False,
    1024: True,
    1025: False,
    3072: False,
    32768: True,
    2**20: True,
    2**31 - 1: False,
    2**31: True,
}


def server_documents(tmp_path: Path, cases: list[tuple[int, int]]) -> list[Path]:
    paths = []
    for count, exponent in cases:
        path = tmp_path / f"server-{count}-{exponent}.xml"
        path.write_text(SERVER_WITH_COUNT.format(count=count, exponent=exponent), encoding="utf-8")
        paths.append(path)
    return paths


def test_count_accepts_exactly_powers_of_two_from_1024(tmp_path: Path) -> None:
    paths = server_documents(tmp_path, [(count, 31) for count in COUNT_CASES])
    for (count, accepted), (path, result) in zip(
        COUNT_CASES.items(), validate_all("config", paths).items(), strict=True
    ):
        assert (result.returncode == 0) is accepted, f"count {count}: {result.stderr}"
        if not accepted:
            assert "count must be a power of two" in result.stderr, path.name


def test_count_is_capped_by_max_count_exponent(tmp_path: Path) -> None:
    exponents = [10, 11, 15, 20, 30]
    at_cap = validate_all("config", server_documents(tmp_path, [(2**e, e) for e in exponents]))
    for path, result in at_cap.items():
        assert result.returncode == 0, f"{path.name}: {result.stderr}"
    above = validate_all("config", server_documents(tmp_path, [(2 ** (e + 1), e) for e in exponents]))
    for path, result in above.items():
        assert result.returncode != 0, f"{path.name} accepted"
        assert "count must not exceed 2^max-count-exponent" in result.stderr


def chain_document(words: list[int]) -> str:
    entries = "".join(
        f"<mode-preference-chain><priority>{i}</priority><mode>{mode_bits(word)}</mode>"
        "</mode-preference-chain>"
        for i, word in enumerate(words)
    )
    return f'<twamp xmlns="urn:twamp-nf:yang:twamp-nf-twamp"><client>{entries}</client></twamp>\n'


def mode_bits(word: int) -> str:
    return " ".join(name for name, flag in MODE_NAMES.items() if word & flag)


def runtime_accepts_client_mode(word: int) -> bool:
    """The rule the control client enforces: one security mode, and IKEv2 keying only with a secret."""
    security = SecurityMode.from_modes(word)
    if security is None:
        return False
    return not (word & Modes.IKEV2_DERIVED and security is SecurityMode.UNAUTHENTICATED)


def test_every_client_mode_the_runtime_accepts_validates(tmp_path: Path) -> None:
    words = [w for w in range(1, 256) if runtime_accepts_client_mode(w)]
    assert len(words) == 56
    path = tmp_path / "chain.xml"
    path.write_text(chain_document(words), encoding="utf-8")
    result = validate("config", path)
    assert result.returncode == 0, result.stderr


def test_client_modes_the_runtime_refuses_are_rejected(tmp_path: Path) -> None:
    # Feature bits 4-6 do not affect the rule, so every combination of bits 0-3 and 7 covers it.
    words = [w for w in range(256) if not w & 0b01110000 and not runtime_accepts_client_mode(w)]
    assert len(words) == 25
    paths = []
    for word in words:
        path = tmp_path / f"chain-{word}.xml"
        path.write_text(chain_document([word]), encoding="utf-8")
        paths.append(path)
    for word, result in zip(words, validate_all("config", paths).values(), strict=True):
        assert result.returncode != 0, f"mode {word} ({mode_bits(word)}) accepted"
        assert "mode must select exactly one security mode" in result.stderr or (
            "ikev2-derived needs a mode that uses a secret" in result.stderr
        )


def test_mode_bits_match_the_runtime_modes(schema: dict[str, Any]) -> None:
    typedef = schema["twamp-nf-twamp"].search_one("typedef", "twamp-modes")
    bits = {b.arg: 1 << int(b.search_one("position").arg) for b in typedef.search_one("type").search("bit")}
    assert bits == {name: int(flag) for name, flag in MODE_NAMES.items()}
    assert set(MODE_NAMES.values()) == set(Modes)


def test_accept_values_match_the_runtime_accept(schema: dict[str, Any]) -> None:
    typedef = schema["twamp-nf-twamp"].search_one("typedef", "accept-value")
    enums = {e.arg: int(e.search_one("value").arg) for e in typedef.search_one("type").search("enum")}
    assert enums == {name: int(value) for name, value in ACCEPT_NAMES.items()}
    assert set(ACCEPT_NAMES.values()) == set(Accept)


def identities(module: Any) -> dict[str, str | None]:
    """Identity name -> its base's local name (None for a root)."""
    found = {}
    for stmt in module.search("identity"):
        base = stmt.search_one("base")
        found[stmt.arg] = None if base is None else base.arg.split(":")[-1]
    return found


def runtime_reasons() -> dict[str, tuple[str, str, list[str]]]:
    """Every counter reason the runtime has, as (module, identity base, identity names) per source enum."""

    def named(prefix: str, members: Any) -> list[str]:
        return [prefix + str(m.value).replace("_", "-") for m in members]

    return {
        "ControlFailure": ("twamp-nf-twamp", "control-error", named("control-", ControlFailure)),
        "Refusal": ("twamp-nf-twamp", "control-error", named("control-", Refusal)),
        "DropReason": ("twamp-nf-twamp", "reflector-drop", named("reflector-", DropReason)),
        "ReplyDrop": ("twamp-nf-twamp", "sender-drop", named("sender-", ReplyDrop)),
        "ike Reason": ("twamp-nf-ike", "error-reason", named("", Reason)),
    }


def test_every_runtime_counter_reason_has_an_identity(schema: dict[str, Any]) -> None:
    """error-counter entries are keyed by identity; a runtime reason without one could not be reported."""
    for source, (module, base, names) in runtime_reasons().items():
        known = identities(schema[module])
        for name in names:
            assert name in known, f"{source}: add identity {name} (base {base}) to yang/{module}.yang"
            assert known[name] == base, f"{name} should derive from {base}"


def test_limit_defaults_match_the_runtime_limits(schema: dict[str, Any]) -> None:
    nodes = dict(schema_nodes(schema["twamp-nf-twamp"]))

    def default(path: str) -> str | None:
        stmt = nodes[path].search_one("default")
        return None if stmt is None else str(stmt.arg)

    runtime = Limits()
    assert default("/twamp/server/limits/max-ctrl-connections") == str(runtime.max_connections)
    assert default("/twamp/server/limits/max-ctrl-connections-per-client") == str(
        runtime.max_connections_per_client
    )
    assert default("/twamp/server/limits/max-test-sessions-per-connection") == str(
        runtime.max_sessions_per_connection
    )
    assert default("/twamp/session-reflector/limits/max-packet-rate") is None and runtime.max_pps is None
    assert float(default("/twamp/server/servwait") or "nan") == runtime.servwait
    assert float(default("/twamp/session-reflector/refwait") or "nan") == runtime.refwait


def enum_values(module: Any, typedef: str) -> dict[str, int | None]:
    type_stmt = module.search_one("typedef", typedef).search_one("type")
    return {
        e.arg: None if e.search_one("value") is None else int(e.search_one("value").arg)
        for e in type_stmt.search("enum")
    }


def runtime_name(yang_name: str) -> str:
    return yang_name.upper().replace("-", "_")


def test_ike_algorithms_are_the_runtime_transforms(schema: dict[str, Any]) -> None:
    """Each configurable transform exists in nf.ike.transforms with its IANA ID; only SHA-1 is held back."""
    ike = schema["twamp-nf-ike"]
    for typedef, runtime in (("integrity-algorithm", IntegId), ("prf-algorithm", PrfId), ("dh-group", DhId)):
        values = enum_values(ike, typedef)
        assert {runtime_name(n): v for n, v in values.items()} == {
            m.name: int(m) for m in runtime if m.name not in ("NONE", "HMAC_SHA1", "HMAC_SHA1_96")
        }, typedef
    encryption = set()
    for name in enum_values(ike, "encryption-algorithm"):
        algorithm, bits = name.rsplit("-", 1)
        encryption.add((int(EncrId[runtime_name(algorithm)]), int(bits)))
    assert encryption == set(ENCRS)


def test_ike_identity_types_are_the_runtime_id_types(schema: dict[str, Any]) -> None:
    values = enum_values(schema["twamp-nf-ike"], "identity-type")
    assert values
    for name, value in values.items():
        assert value == int(IDType[runtime_name(name)]), name


# nf.twamp.results.Summary field -> results node.
SUMMARY_NODES = {
    "sent": "sent",
    "received": "received",
    "lost": "lost",
    "loss_ratio": "loss-ratio",
    "duplicates": "duplicates",
    "reordered": "reordered",
    "rtt_ms": "rtt",
    "ipdv_ms": "ipdv",
    "forward_ms": "forward-delay",
    "backward_ms": "backward-delay",
    "clock_synchronized": "clocks-synchronized",
}


def test_results_carry_every_runtime_statistic(schema: dict[str, Any]) -> None:
    """A statistic the runtime computes but the YANG cannot hold would be silently dropped by the mapping."""
    nodes = dict(schema_nodes(schema["twamp-nf-twamp"]))
    results = "/twamp/session-sender/test-session/results"
    assert {f.name for f in dataclasses.fields(Summary)} == set(SUMMARY_NODES)
    for node in SUMMARY_NODES.values():
        assert f"{results}/{node}" in nodes, node
    for stats, container in ((DelayStats, "rtt"), (VariationStats, "ipdv")):
        for field in dataclasses.fields(stats):
            assert f"{results}/{container}/{field.name}" in nodes, f"{container}/{field.name}"
    notification = schema["twamp-nf-twamp"].search_one("notification", "test-session-completed")
    in_notification = {path for path, _ in schema_nodes(notification, "")}
    assert {path.removeprefix(results.rsplit("/", 1)[0]) for path in nodes if path.startswith(results)} == {
        path for path in in_notification if path.startswith("/results")
    }


def test_secrets_are_default_deny_all_and_nothing_else_looks_secret(schema: dict[str, Any]) -> None:
    denied = set()
    secret_looking = set()
    for module in schema.values():
        for path, node in schema_nodes(module):
            if node.search_one(("ietf-netconf-acm", "default-deny-all")) is not None:
                denied.add(path)
            if node.keyword in ("leaf", "leaf-list") and re.search(r"secret|psk|private-key$|sk-", node.arg):
                secret_looking.add(path)
    assert denied == {
        "/twamp/client/key-chain/secret-key",
        "/twamp/server/key-chain/secret-key",
        "/ike/local-identity/credential/psk/psk",
    }
    assert secret_looking == denied, "a secret-looking leaf without nacm:default-deny-all"


def test_no_key_material_in_state_or_notifications(schema: dict[str, Any]) -> None:
    """State and notifications may name SAs by SPI, never carry SK_*, tokens, IVs or derived secrets."""
    seen = set()
    for module in schema.values():
        roots = [(f"notification {n.arg}", n) for n in module.search("notification")]
        roots += [(path, node) for path, node in schema_nodes(module) if node.i_config is False]
        for root_path, root in roots:
            for path, node in [(root_path, root), *schema_nodes(root, root_path)]:
                seen.add(path)
                assert not re.search(r"secret|psk|token|-iv$|^iv$|sk-|private", node.arg), path
    # The walk reaches augmented state and other modules' notifications, so the check covers them.
    assert "/twamp/server/ctrl-connection/key-source/source/ikev2-derived/spi-i" in seen
    assert "notification unknown-sa/spi-r" in seen
    assert "/ike/ike-sa/algorithms/prf" in seen


def doc_trees() -> dict[str, str]:
    text = (ROOT / "docs" / "yang.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- tree: ([a-z-]+) -->\n```text\n(.*?)```\n", text, re.DOTALL)
    return dict(blocks)


def test_docs_carry_the_current_tree_of_each_module() -> None:
    trees = doc_trees()
    assert sorted(trees) == sorted(MODULES)
    with ThreadPoolExecutor(max_workers=len(MODULES)) as pool:
        results = dict(zip(MODULES, pool.map(lambda name: run_check("tree", name), MODULES), strict=True))
    for name, result in results.items():
        assert result.returncode == 0, result.stderr
        assert trees[name] == result.stdout, f"docs/yang.md tree of {name} is stale: run bash yang/check docs"


def test_lint_includes_yangcli_whose_parser_is_stricter(tmp_path: Path) -> None:
    """pyang and libyang accept a decimal64 range without spaces around "..", yangcli does not."""
    copy = tmp_path / "yang"
    shutil.copytree(YANG, copy)
    module = copy / "twamp-nf-twamp.yang"
    text = module.read_text(encoding="utf-8")
    assert '"0.000001 .. 3600"' in text
    module.write_text(text.replace('"0.000001 .. 3600"', '"0.000001..3600"'), encoding="utf-8")
    result = run_check("yangcli", check_script=copy / "check")
    assert result.returncode != 0
    assert "yangcli cannot load the modules" in result.stderr


def test_ci_check_fails_on_a_broken_example(tmp_path: Path) -> None:
    """yang/check is the CI gate: it must fail, not just print, when an example misbehaves."""
    copy = tmp_path / "yang"
    shutil.copytree(YANG, copy)
    # Keep one document per directory besides the two broken ones: enough to see the gate work.
    keep = {"client-ikev2.xml", "client-ikev2-state.xml", "unknown-sa.xml", "count-out-of-range.xml"}
    for path in (copy / "examples").glob("*/*.xml"):
        if path.name not in keep:
            path.unlink()
    shutil.copy(EXAMPLES / "invalid" / "bad-mode-combination.xml", copy / "examples" / "config")
    relaxed = copy / "examples" / "invalid" / "count-out-of-range.xml"
    relaxed.write_text(relaxed.read_text(encoding="utf-8").replace("<count>512", "<count>2048"), "utf-8")
    result = run_check("examples", check_script=copy / "check")
    assert result.returncode != 0
    assert "valid example rejected" in result.stderr and "bad-mode-combination.xml" in result.stderr
    assert "invalid example accepted" in result.stderr and "count-out-of-range.xml" in result.stderr
