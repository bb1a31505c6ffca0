"""RFC 6022 (ietf-netconf-monitoring), the schemas part: the /netconf-state/schemas list and <get-schema>.

Orchestrators discover and fetch our modules over NETCONF instead of needing them on disk. The served text is
what libyang loaded (`Schema.sources`), so the list can never disagree with what validates the data.
Sessions, locks and statistics of the same module are not reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lxml import etree

from nf_netconf.errors import Reason, RpcError, missing_element
from nf_netconf.schema import ModuleSource

MON_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
MON_MODULE = "ietf-netconf-monitoring"
YANG_FORMAT = "yang"  # the only format served (no yin, xsd or rng)


def schemas_state(sources: Iterable[ModuleSource]) -> dict[str, Any]:
    """The schema list as RFC 7951 JSON, for libyang to turn into the <get> reply's XML."""
    return {
        f"{MON_MODULE}:netconf-state": {
            "schemas": {
                "schema": [
                    {
                        "identifier": source.name,
                        "version": source.revision,
                        "format": f"{MON_MODULE}:{YANG_FORMAT}",
                        "namespace": source.namespace,
                        "location": ["NETCONF"],
                    }
                    for source in sources
                ]
            }
        }
    }


def _format_is_yang(param: etree._Element) -> bool:
    """An identityref in XML: 'yang' alone, or with a prefix bound to the monitoring namespace."""
    value = (param.text or "").strip()
    prefix, _, name = value.rpartition(":")
    if name != YANG_FORMAT:
        return False
    return not prefix or param.nsmap.get(prefix) == MON_NS


def find_schema(
    sources: Iterable[ModuleSource],
    identifier_el: etree._Element | None,
    version_el: etree._Element | None,
    format_el: etree._Element | None,
) -> ModuleSource:
    """The one module that get-schema's parameters name, or the RFC 6022 section 3.1 error."""
    if identifier_el is None:
        raise missing_element("identifier", "get-schema needs an identifier")
    identifier = (identifier_el.text or "").strip()
    # an empty version is read as absent: some clients send <version/> when they know no revision
    version = (version_el.text or "").strip() if version_el is not None else ""
    if format_el is not None and not _format_is_yang(format_el):
        raise RpcError(
            "invalid-value",
            f"schema format {(format_el.text or '').strip()!r} is not served; only yang is",
            reason=Reason.INVALID_VALUE,
            error_type="protocol",
        )
    matches = [s for s in sources if s.name == identifier and (not version or s.revision == version)]
    if not matches:
        named = f"{identifier!r}" + (f" revision {version!r}" if version else "")
        raise RpcError(
            "invalid-value",
            f"no schema {named} on this server",
            reason=Reason.INVALID_VALUE,
            error_type="protocol",
        )
    if len(matches) > 1:
        raise RpcError(
            "operation-failed",
            f"more than one revision of {identifier!r}: name a version",
            reason=Reason.INVALID_VALUE,
            error_type="protocol",
            app_tag="data-not-unique",
        )
    return matches[0]


def schema_reply(source: ModuleSource) -> etree._Element:
    data = etree.Element(f"{{{MON_NS}}}data", nsmap={None: MON_NS})
    data.text = source.text
    return data
