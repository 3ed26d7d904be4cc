"""x-ms-client-principal from Static Web Apps and App Service Easy Auth."""

import base64
import json

from realtime_gateway.gateway.principal import principal_from_headers


def b64(data) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def test_static_web_apps_shape():
    p = principal_from_headers(
        {
            "x-ms-client-principal": b64(
                {
                    "identityProvider": "aad",
                    "userId": "u1",
                    "userDetails": "ada@example.com",
                    "userRoles": ["anonymous", "authenticated"],
                }
            )
        }
    )
    assert p == {"id": "u1", "name": "ada@example.com", "provider": "aad", "roles": ["anonymous", "authenticated"]}


def test_easy_auth_shape():
    p = principal_from_headers(
        {
            "x-ms-client-principal": b64(
                {
                    "auth_typ": "aad",
                    "name_typ": "name",
                    "role_typ": "roles",
                    "claims": [
                        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": "oid-1"},
                        {"typ": "name", "val": "Ada"},
                        {"typ": "roles", "val": "caller"},
                    ],
                }
            )
        }
    )
    assert p == {"id": "oid-1", "name": "Ada", "provider": "aad", "roles": ["caller"]}


def test_absent_or_garbage_is_none():
    assert principal_from_headers({}) is None
    assert principal_from_headers({"x-ms-client-principal": "%%%not base64"}) is None
    assert principal_from_headers({"x-ms-client-principal": b64([1, 2])}) is None
    assert principal_from_headers({"x-ms-client-principal": b64({"userRoles": []})}) is None
