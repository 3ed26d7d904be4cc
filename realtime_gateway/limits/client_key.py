"""Who a limit counts against: the authenticated principal, else the client address as the
platform's front end reported it.

A caller can send its own `X-Forwarded-For`; the App Service / Functions front end appends the
address it saw (as `ip:port`), so only entries counted from the right, as many as there are
trusted front ends (`CLIENT_IP_HOP`), are the platform's. docs/limits.md.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Mapping

UNSAFE_KEY = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")  # what a table key must not hold


def client_address(headers: Mapping[str, str], header: str, hop: int) -> str | None:
    """The address `hop` entries from the right of `header`, without its port; None if absent."""
    entries = [e.strip() for e in (headers.get(header) or "").split(",") if e.strip()]
    if len(entries) < hop:
        return None  # fewer entries than trusted front ends: nothing here was added by them
    return _address(entries[-hop])


def _address(entry: str) -> str | None:
    if entry.startswith("["):  # [v6]:port
        entry = entry[1 : entry.find("]")] if "]" in entry else entry
    elif entry.count(":") == 1:  # v4:port
        entry = entry.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


def client_key(headers: Mapping[str, str], principal: Mapping[str, Any] | None, header: str, hop: int) -> str:
    """A table-key-safe name for the client: `p-<principal id>`, `ip-<v4>`, `ip-<v6 /64>`, `unknown`."""
    pkey = principal_key(principal)
    if pkey:
        return pkey
    address = client_address(headers, header, hop)
    if address is None:
        return "unknown"
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return f"ip-{ip.ipv4_mapped}"
        # one subscriber holds a whole /64: counting single v6 addresses would be no limit at all
        return "ip-" + str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return f"ip-{ip}"


def principal_key(principal: Mapping[str, Any] | None) -> str | None:
    if not principal or not principal.get("id"):
        return None
    return "p-" + UNSAFE_KEY.sub("_", str(principal["id"]))[:200]
