"""Fuzz target for the runtime's configuration mapping (nf.runtime.config.build_plan).

The input is either a whole JSON document (when it parses) or, far more productive, an edit of a complete
valid configuration: the first two octets pick a node of the template and whether to delete or replace it,
the rest is the replacement (JSON when it parses, else text). The documented error is ConfigError; anything
else escaping is a finding. Errors must never quote the secrets of the template.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
from typing import Any

from nf.runtime.config import ConfigError, build_plan

_SECRET = "fuzz-secret-value-not-to-be-echoed"
_B64 = base64.b64encode(_SECRET.encode()).decode()

_TEMPLATE: dict[str, Any] = {
    "twamp-nf-ike:ike": {
        "listen-address": ["127.0.0.1"],
        "local-identity": [{"name": "me", "id-type": "fqdn", "id-value": "me.example", "psk": _B64}],
        "peer": [
            {
                "name": "gw",
                "local-identity": "me",
                "address": "192.0.2.1",
                "remote-identity": {"id-type": "ipv4-addr", "id-value": "192.0.2.1"},
                "proposal": [
                    {
                        "name": "p",
                        "encryption": "aes-cbc-256",
                        "integrity": "hmac-sha2-256-128",
                        "prf": "hmac-sha2-256",
                        "dh-group": "modp-2048",
                    }
                ],
                "lifetime": {"rekey-time": 100, "hard-lifetime": 200},
                "liveness": {"interval": 5, "action": "clear"},
            }
        ],
    },
    "twamp-nf-twamp:twamp": {
        "server": {
            "modes": "unauthenticated authenticated ikev2-derived",
            "count": 2048,
            "key-chain": [{"key-id": "k", "secret-key": _B64}],
            "twamp-nf-ike-binding:ikev2-derived": {"allowed-peer": ["gw"]},
        },
        "session-reflector": {"refwait": 10, "limits": {"max-packet-rate": 5}},
        "client": {
            "mode-preference-chain": [
                {"priority": 0, "mode": "authenticated ikev2-derived"},
                {"priority": 1, "mode": "encrypted"},
            ],
            "key-chain": [{"key-id": "k", "secret-key": _B64}],
            "ctrl-connection": [
                {
                    "name": "c",
                    "server-ip": "192.0.2.1",
                    "key-id": "k",
                    "twamp-nf-ike-binding:ikev2-derived": {"ike-peer": "gw", "no-sa-policy": "fallback"},
                    "test-session-request": [
                        {
                            "name": "r",
                            "reflector-ip": "192.0.2.1",
                            "sender-udp-port": 50000,
                            "padding-length": 64,
                            "reflect-octets": {"octets-to-be-reflected": 2},
                        }
                    ],
                }
            ],
        },
        "session-sender": {
            "test-session": [
                {
                    "name": "s",
                    "ctrl-connection": "c",
                    "test-session-request": "r",
                    "number-of-packets": 10,
                    "periodic-interval": "0.100000",
                }
            ]
        },
    },
}


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


_PATHS = [p for p in _paths(_TEMPLATE) if p]


def _edit(data: bytes) -> Any:
    with contextlib.suppress(UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return json.loads(data)
    if len(data) < 2:
        return _TEMPLATE
    config = copy.deepcopy(_TEMPLATE)
    path = _PATHS[data[0] % len(_PATHS)]
    parent: Any = config
    for step in path[:-1]:
        parent = parent[step]
    if data[1] & 1:
        del parent[path[-1]]
        return config
    text = data[2:].decode("utf-8", "replace")
    try:
        value: Any = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        value = text
    parent[path[-1]] = value
    return config


def fuzz_one(data: bytes) -> None:
    try:
        build_plan(_edit(data))
    except ConfigError as exc:
        assert exc.path.startswith("/"), exc.path
        assert _SECRET not in str(exc) and _B64 not in str(exc)
