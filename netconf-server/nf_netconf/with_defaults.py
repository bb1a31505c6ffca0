"""RFC 6243 with-defaults: the retrieval modes and the wd:default attribute.

The datastores keep what clients set (basic mode explicit); report-all, report-all-tagged and trim are
computed at retrieval by libyang (`Schema.with_defaults`), which knows the YANG defaults and evaluates their
`when` conditions. libyang marks default nodes with an attribute in its module's namespace; RFC 6243 s6
puts `default` in its own namespace, so the marks are moved there before a reply leaves.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from lxml import etree

from nf_netconf.errors import bad_attribute

WD_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults"  # the <with-defaults> parameter
TAG_NS = "urn:ietf:params:xml:ns:netconf:default:1.0"  # the default="true" attribute (RFC 6243 s6)
WD_MODULE = "ietf-netconf-with-defaults"
MODES = ("report-all", "report-all-tagged", "trim", "explicit")
BASIC_MODE = "explicit"
CAPABILITY = (
    "urn:ietf:params:netconf:capability:with-defaults:1.0?basic-mode="
    + BASIC_MODE
    + "&also-supported="
    + ",".join(m for m in MODES if m != BASIC_MODE)
)
_LIBYANG_TAG = f"{{{WD_NS}}}default"
TAG = f"{{{TAG_NS}}}default"


def retag(roots: list[etree._Element]) -> None:
    """Moves libyang's default marks to the RFC 6243 attribute, wd:default="true"."""
    for root in roots:
        for element in root.iter():
            if _LIBYANG_TAG in element.attrib:
                del element.attrib[_LIBYANG_TAG]
                element.set(TAG, "true")
        etree.cleanup_namespaces(root, top_nsmap={"wd": TAG_NS})


def asks_for_default(element: etree._Element) -> bool:
    """Whether edit content marks a leaf wd:default (RFC 6243 s4.5.2: set it back to its default)."""
    value = element.get(TAG)
    if value is None:
        return False
    if value.strip() not in ("true", "1", "false", "0"):
        raise bad_attribute("default", etree.QName(element).localname, "wd:default must be true or false")
    return value.strip() in ("true", "1")


def same_value(text: str, default: str) -> bool:
    """A leaf's text against its canonical default: numbers by value ("0.10" is "0.1"), the rest as text."""
    text = text.strip()
    if text == default:
        return True
    try:
        return Decimal(text) == Decimal(default)
    except InvalidOperation:
        return False
