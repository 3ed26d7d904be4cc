"""The caller's principal from Static Web Apps / App Service Easy Auth (`x-ms-client-principal`).

Those front ends strip any client-sent copy of the header, so it is trustworthy only behind them.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Mapping

HEADER = "x-ms-client-principal"


def principal_from_headers(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """{"id", "name", "provider", "roles"} or None when absent or unreadable."""
    raw = headers.get(HEADER)
    if not raw:
        return None
    try:
        data = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4), validate=False))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    if "userId" in data or "identityProvider" in data:  # Static Web Apps shape
        result = {
            "id": data.get("userId"),
            "name": data.get("userDetails"),
            "provider": data.get("identityProvider"),
            "roles": data.get("userRoles") or [],
        }
    else:  # App Service Easy Auth shape: claims list
        claims = {c.get("typ"): c.get("val") for c in data.get("claims") or [] if isinstance(c, dict)}
        oid = claims.get("http://schemas.microsoft.com/identity/claims/objectidentifier") or claims.get("oid")
        result = {
            "id": oid or headers.get("x-ms-client-principal-id"),
            "name": claims.get(data.get("name_typ")) or headers.get("x-ms-client-principal-name"),
            "provider": data.get("auth_typ") or headers.get("x-ms-client-principal-idp"),
            "roles": [
                c.get("val")
                for c in data.get("claims") or []
                if isinstance(c, dict) and c.get("typ") == data.get("role_typ")
            ],
        }
    return result if result.get("id") or result.get("name") else None
