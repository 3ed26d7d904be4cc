"""The phone calls' postprovision hook (infra/hooks/sip_webhook.py) run as azd runs it: a child process
with a fake `azd` on PATH (`env get-values` and `auth token`), against loopback fakes of the three truly
external Azure services it talks to: Azure Resource Manager (the account's internalId and location,
listKeys, the app's Key Vault reference refresh), the Azure OpenAI webhook endpoints API
(`/openai/v1/dashboard/webhook_endpoints`) and Key Vault's secrets API.

The fakes check what a real service would: each API takes only a token of its own audience (the
dashboard, in "key" mode, only the account's key), and the request the hook registers with must validate
against the `openai` package's `WebhookCreateParams`; the endpoints they answer with validate against its
`WebhookEndpoint` types (Azure's `object` is `webhook.endpoint` where OpenAI's is `webhook_endpoint`)."""

from __future__ import annotations

import base64
import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest
from openai.types.webhooks import WebhookCreateParams, WebhookEndpoint, WebhookEndpointWithSecret
from pydantic import TypeAdapter

from realtime_gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "infra" / "hooks" / "sip_webhook.py"
SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
RESOURCE_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-dev/providers/Microsoft.CognitiveServices/accounts/cog-abc123"
)
SITE_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-dev/providers/Microsoft.Web/sites/func-api-abc123"
INTERNAL_ID = "88c4a88817034471a0ba0fcae24ceb1b"
WEBHOOK_URL = "https://func-api-abc123.azurewebsites.net/api/sip/incoming"
SIP_URI = f"sip:proj_{INTERNAL_ID}@eastus2.sip.ai.azure.com;transport=tls"
EVENT = "realtime.call.incoming"
SCOPES = {
    "arm": "https://management.azure.com/.default",
    "vault": "https://vault.azure.net/.default",
    "openai": "https://cognitiveservices.azure.com/.default",
}
CREATE_PARAMS = TypeAdapter(WebhookCreateParams)


class FakeAzure:
    """ARM, the Azure OpenAI dashboard API and Key Vault, each on a loopback port of its own."""

    def __init__(self, tokens: dict[str, str], key: str, *, dashboard_auth: str = "entra", page_size: int = 100):
        self.tokens, self.key = tokens, key
        self.dashboard_auth = dashboard_auth  # entra | key (Entra refused) | none (both refused)
        self.page_size = page_size
        self.vault_forbidden = 0  # answer 403 to this many vault requests (a role still propagating)
        self.requests: list[tuple[str, str, str, str]] = []  # (service, method, path with query, auth kind)
        self.problems: list[str] = []  # what a real service would have refused
        self.endpoints: dict[str, dict] = {}
        self.issued: dict[str, str] = {}  # endpoint id -> the signing secret handed out once
        self.vault: dict[str, dict] = {}  # name -> {"value", "tags", "version"}
        self.refreshes = 0
        self.list_keys = 0
        self.lock = threading.Lock()
        self.servers = {name: self._serve(name) for name in ("arm", "openai", "vault")}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.servers[service].server_address[1]}"

    def seed_endpoint(self, url: str, events: list[str]) -> str:
        endpoint_id = f"we_seed{len(self.endpoints)}"
        self.endpoints[endpoint_id] = self._endpoint(endpoint_id, "someone else's", url, events)
        return endpoint_id

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()

    def _endpoint(self, endpoint_id: str, name: str, url: str, events: list[str]) -> dict:
        return {
            "id": endpoint_id,
            "object": "webhook.endpoint",
            "created_at": 1757528725,
            "event_types": events,
            "name": name,
            "signing_secret_hint": "whsec_...8s8=",
            "url": url,
        }

    def _serve(self, service: str) -> http.server.ThreadingHTTPServer:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self, status: int, body: object | None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                with fake.lock:
                    status, answer = getattr(fake, f"_{service}")(self, body)
                self._reply(status, answer)

            do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815 (http.server's names)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # a short poll: shutdown() waits for it, three times per test
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return server

    def _auth(self, request, service: str) -> str:
        """'entra', 'key', 'wrong-token' or 'none', and the request recorded with it."""
        auth = request.headers.get("authorization") or ""
        kind = "none"
        if auth == f"Bearer {self.tokens[service]}":
            kind = "entra"
        elif auth.startswith("Bearer "):
            kind = "wrong-token"
            self.problems.append(f"{service} got a token of another audience")
        elif request.headers.get("api-key"):
            kind = "key" if request.headers["api-key"] == self.key else "wrong-key"
        self.requests.append((service, request.command, request.path, kind))
        return kind

    def _arm(self, request, body):
        if self._auth(request, "arm") != "entra":
            return 401, {"error": {"code": "InvalidAuthenticationToken", "message": "The access token is invalid."}}
        path, _, query = request.path.partition("?")
        version = urllib.parse.parse_qs(query).get("api-version", [""])[0]
        if not version:
            return 400, {"error": {"code": "MissingApiVersionParameter", "message": "api-version is required"}}
        if request.command == "GET" and path == RESOURCE_ID:
            return 200, {
                "id": RESOURCE_ID,
                "name": "cog-abc123",
                "type": "Microsoft.CognitiveServices/accounts",
                "kind": "OpenAI",
                "location": "eastus2",
                "properties": {"internalId": INTERNAL_ID, "customSubDomainName": "cog-abc123"},
            }
        if request.command == "POST" and path == f"{RESOURCE_ID}/listKeys":
            self.list_keys += 1
            return 200, {"key1": self.key, "key2": "k2-" + self.key[::-1]}
        if request.command == "POST" and path == f"{SITE_ID}/config/configreferences/appsettings/refresh":
            self.refreshes += 1
            return 200, {"value": [{"name": "SIP_WEBHOOK_SECRET", "properties": {"status": "Resolved"}}]}
        return 404, {"error": {"code": "ResourceNotFound", "message": path}}

    def _openai(self, request, body):
        kind = self._auth(request, "openai")
        allowed = {"entra": {"entra"}, "key": {"key"}, "none": set()}[self.dashboard_auth]
        if kind not in allowed:
            if kind == "key":
                return 401, {
                    "error": {"code": "401", "message": "Key based authentication is disabled for this resource."}
                }
            return 401, {
                "error": {"code": "PermissionDenied", "message": "The principal lacks the required data action."}
            }
        path, _, query = request.path.partition("?")
        base = "/openai/v1/dashboard/webhook_endpoints"
        if request.command == "GET" and path == base:
            params = urllib.parse.parse_qs(query)
            items = list(self.endpoints.values())
            after = params.get("after", [""])[0]
            if after:
                items = items[[e["id"] for e in items].index(after) + 1 :]
            page = items[: min(int(params.get("limit", ["20"])[0]), self.page_size)]
            for entry in page:
                WebhookEndpoint.model_validate({**entry, "object": "webhook_endpoint"})
            return 200, {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > len(page),
            }
        if request.command == "POST" and path == base:
            try:
                CREATE_PARAMS.validate_python(body, strict=True)
                assert set(body) == {"name", "url", "event_types"}
            except Exception as exc:  # what the service would answer 400 to
                self.problems.append(f"create body {body!r}: {exc}")
                return 400, {"error": {"code": "invalid_request", "message": "bad body"}}
            endpoint_id = f"we_{secrets.token_hex(6)}"
            secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
            self.endpoints[endpoint_id] = self._endpoint(endpoint_id, body["name"], body["url"], body["event_types"])
            self.issued[endpoint_id] = secret
            answer = {**self.endpoints[endpoint_id], "signing_secret": secret}
            WebhookEndpointWithSecret.model_validate({**answer, "object": "webhook_endpoint"})
            return 200, answer
        endpoint_id = path[len(base) + 1 :] if path.startswith(base + "/") else ""
        if endpoint_id not in self.endpoints:
            return 404, {"error": {"code": "not_found", "message": "no such webhook endpoint"}}
        if request.command == "POST":
            self.endpoints[endpoint_id].update({k: body[k] for k in ("name", "url", "event_types") if k in body})
            return 200, self.endpoints[endpoint_id]
        if request.command == "DELETE":
            del self.endpoints[endpoint_id]
            return 200, {"id": endpoint_id, "object": "webhook.endpoint", "deleted": True}
        return 405, {"error": {"code": "method_not_allowed", "message": request.command}}

    def _vault(self, request, body):
        if self._auth(request, "vault") != "entra":
            return 401, {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer token."}}
        if self.vault_forbidden:
            self.vault_forbidden -= 1
            return 403, {"error": {"code": "Forbidden", "message": "Caller is not authorized to perform action."}}
        path, _, query = request.path.partition("?")
        if urllib.parse.parse_qs(query).get("api-version") != ["7.4"] or not path.startswith("/secrets/"):
            return 400, {"error": {"code": "BadParameter", "message": request.path}}
        name = path[len("/secrets/") :]
        secret_id = f"{self.url('vault')}/secrets/{name}"
        if request.command == "GET":
            if name not in self.vault:
                return 404, {
                    "error": {"code": "SecretNotFound", "message": f"A secret with (name/id) {name} was not found"}
                }
            entry = self.vault[name]
            return 200, {"value": entry["value"], "id": f"{secret_id}/{entry['version']}", "tags": entry["tags"]}
        if request.command == "PUT":
            version = secrets.token_hex(8)
            self.vault[name] = {"value": body["value"], "tags": body.get("tags") or {}, "version": version}
            return 200, {"value": body["value"], "id": f"{secret_id}/{version}", "tags": self.vault[name]["tags"]}
        return 405, {"error": {"code": "BadParameter", "message": request.command}}


@pytest.fixture
def tokens() -> dict[str, str]:
    return {service: f"eyJ{service}.{secrets.token_hex(12)}" for service in SCOPES}


@pytest.fixture
def key() -> str:
    return secrets.token_hex(16)


@pytest.fixture
def azure(tokens, key):
    fake = FakeAzure(tokens, key)
    yield fake
    fake.close()


class Azd:
    """A fake `azd` on PATH: `env get-values --output json` from values.json, `auth token --scope S` from
    tokens.json (the scope's token, or a failure for an unknown scope), every call logged."""

    def __init__(self, folder: Path, values: dict[str, str], tokens: dict[str, str]):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.log = folder, folder / "azd.log"
        (folder / "values.json").write_text(json.dumps(values))
        (folder / "tokens.json").write_text(json.dumps({SCOPES[s]: t for s, t in tokens.items()}))
        script = folder / "azd"
        script.write_text(
            f"#!{sys.executable}\n"
            "import json, sys\n"
            "from pathlib import Path\n"
            "here = Path(__file__).parent\n"
            "args = sys.argv[1:]\n"
            "with open(here / 'azd.log', 'a') as log:\n"
            "    log.write(' '.join(args) + '\\n')\n"
            "if args[:2] == ['env', 'get-values']:\n"
            "    print((here / 'values.json').read_text()); sys.exit(0)\n"
            "if args[:2] == ['auth', 'token']:\n"
            "    token = json.loads((here / 'tokens.json').read_text()).get(args[args.index('--scope') + 1])\n"
            "    if not token:\n"
            "        print('ERROR: no token for that scope', file=sys.stderr); sys.exit(1)\n"
            "    print(json.dumps({'token': token, 'expiresOn': '2099-01-01T00:00:00Z'})); sys.exit(0)\n"
            "sys.exit(2)\n",
            encoding="utf-8",
        )
        script.chmod(0o755)

    def set(self, **values: str) -> None:
        path = self.folder / "values.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **values}))

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def values_for(azure: FakeAzure) -> dict[str, str]:
    return {
        "AZURE_ENV_NAME": "dev",
        "SIP_ENABLED": "true",
        "SERVICE_API_URI": "https://func-api-abc123.azurewebsites.net",
        "SERVICE_API_NAME": "func-api-abc123",
        "AZURE_OPENAI_ENDPOINT": azure.url("openai"),
        "AZURE_OPENAI_RESOURCE_ID": RESOURCE_ID,
        "SIP_KEY_VAULT_URI": azure.url("vault") + "/",
        "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION,
        "AZURE_RESOURCE_GROUP": "rg-dev",
        "AZURE_TENANT_ID": "tenant-0000",
    }


@pytest.fixture
def azd(tmp_path, azure, tokens) -> Azd:
    return Azd(tmp_path / "bin", values_for(azure), tokens)


def run_hook(azd: Azd, azure: FakeAzure, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIP_", "AZURE_", "SERVICE_"))}
    env.update({"PATH": str(azd.folder), "AZURE_ENV_NAME": "dev"})  # only the fake azd: no real az or azd
    command = [sys.executable, str(HOOK), "--arm-endpoint", azure.url("arm"), "--wait-seconds", "10"]
    return subprocess.run([*command, "--interval", "0.05", *args], capture_output=True, text=True, env=env, timeout=60)


def assert_nothing_secret_printed(result, azure: FakeAzure, tokens, key) -> None:
    printed = result.stdout + result.stderr
    held = [*tokens.values(), key, *azure.issued.values(), *(e["value"] for e in azure.vault.values())]
    for value in held:
        assert value not in printed
    assert "whsec_" not in printed.replace("whsec_...", "")


def creates(azure: FakeAzure) -> list[tuple]:
    return [
        r for r in azure.requests if r[:2] == ("openai", "POST") and r[2] == "/openai/v1/dashboard/webhook_endpoints"
    ]


@pytest.mark.parametrize("flag", ["false", "", None])
def test_does_nothing_unless_sip_is_enabled(azd, azure, flag):
    if flag is None:
        values = json.loads((azd.folder / "values.json").read_text())
        del values["SIP_ENABLED"]
        (azd.folder / "values.json").write_text(json.dumps(values))
    else:
        azd.set(SIP_ENABLED=flag)
    result = run_hook(azd, azure)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout
    assert azure.requests == []  # not one call to ARM, the dashboard or the vault
    assert [c for c in azd.calls() if not c.startswith("env get-values")] == []  # and no token asked for


def test_registers_once_stores_the_secret_and_prints_the_sip_uri(azd, azure, tokens, key):
    first = run_hook(azd, azure)
    assert first.returncode == 0, first.stderr
    assert azure.problems == []

    [(endpoint_id, endpoint)] = azure.endpoints.items()
    assert (endpoint["url"], endpoint["event_types"]) == (WEBHOOK_URL, [EVENT])
    assert [r[3] for r in creates(azure)] == ["entra"]  # with the deployer's Entra token
    assert azure.list_keys == 0  # the key is read only when Entra is refused
    stored = azure.vault["sip-webhook-secret"]
    assert stored["value"] == azure.issued[endpoint_id]
    assert stored["tags"] == {"webhook-endpoint-id": endpoint_id}
    salt = azure.vault["sip-caller-salt"]["value"]
    # what the hook stored is what the app accepts as SIP_WEBHOOK_SECRET and SIP_CALLER_SALT
    sip = load_settings(
        {
            "AZURE_OPENAI_ENDPOINT": "https://cog-abc123.openai.azure.com",
            "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime-1.5",
            "SIP_WEBHOOK_SECRET": stored["value"],
            "SIP_CALLER_SALT": salt,
        }
    ).sip
    assert sip.enabled and sip.caller_salt == salt
    assert azure.refreshes == 1  # the app resolves its references now, not within 24 hours
    assert SIP_URI in first.stdout.splitlines()[-1]
    assert_nothing_secret_printed(first, azure, tokens, key)
    token_calls = [c for c in azd.calls() if c.startswith("auth token")]
    assert token_calls and all("--no-prompt" in c and "--tenant-id tenant-0000" in c for c in token_calls)

    second = run_hook(azd, azure)
    assert second.returncode == 0, second.stderr
    assert len(creates(azure)) == 1 and list(azure.endpoints) == [endpoint_id]  # not registered twice
    assert azure.vault["sip-webhook-secret"] == stored  # same value, same version: not even rewritten
    assert azure.vault["sip-caller-salt"]["value"] == salt
    assert not [r for r in azure.requests if r[:2] == ("vault", "PUT")][2:]  # the first run's two writes only
    assert azure.refreshes == 1
    assert "already registered" in second.stdout and SIP_URI in second.stdout
    assert_nothing_secret_printed(second, azure, tokens, key)


def test_rotates_only_when_asked(azd, azure, tokens, key):
    assert run_hook(azd, azure).returncode == 0
    [old] = azure.endpoints
    salt = azure.vault["sip-caller-salt"]["value"]

    result = run_hook(azd, azure, "--rotate")
    assert result.returncode == 0, result.stderr
    [new] = azure.endpoints  # the old endpoint is deleted once the new secret is stored
    assert new != old
    assert azure.vault["sip-webhook-secret"]["value"] == azure.issued[new]
    assert azure.vault["sip-webhook-secret"]["tags"] == {"webhook-endpoint-id": new}
    assert azure.vault["sip-caller-salt"]["value"] == salt  # the salt is never rotated
    assert azure.refreshes == 2
    assert f"deleted the older webhook endpoint {old}" in result.stdout
    assert_nothing_secret_printed(result, azure, tokens, key)


def test_reads_every_page_and_replaces_an_endpoint_whose_secret_it_does_not_hold(azd, azure, tokens, key):
    azure.page_size = 1
    others = [azure.seed_endpoint("https://elsewhere.example.com/hook", ["response.completed"]) for _ in range(2)]
    orphan = azure.seed_endpoint(WEBHOOK_URL, [EVENT])  # registered by hand; its secret is nowhere

    result = run_hook(azd, azure)
    assert result.returncode == 0, result.stderr
    lists = [r for r in azure.requests if r[:2] == ("openai", "GET") and "limit=100" in r[2]]
    assert len(lists) == 3 and "after=" in lists[-1][2]  # followed has_more to the last page
    assert orphan not in azure.endpoints and set(others) <= set(azure.endpoints)  # other URLs untouched
    [mine] = [i for i, e in azure.endpoints.items() if e["url"] == WEBHOOK_URL]
    assert azure.vault["sip-webhook-secret"]["value"] == azure.issued[mine]
    assert_nothing_secret_printed(result, azure, tokens, key)


def test_uses_the_key_only_when_the_entra_token_is_refused_and_never_keeps_it(azd, azure, tokens, key):
    azure.dashboard_auth = "key"
    result = run_hook(azd, azure)
    assert result.returncode == 0, result.stderr
    assert azure.list_keys == 1  # read once
    assert [r[3] for r in creates(azure)] == ["key"]
    assert "Entra token was refused" in result.stdout
    # nothing but the two secrets in the vault, and the key in neither value nor tags
    assert set(azure.vault) == {"sip-webhook-secret", "sip-caller-salt"}
    assert key not in json.dumps(azure.vault)
    assert_nothing_secret_printed(result, azure, tokens, key)
    assert SIP_URI in result.stdout


def test_waits_while_the_vault_role_propagates(azd, azure, tokens, key):
    azure.vault_forbidden = 2
    result = run_hook(azd, azure)
    assert result.returncode == 0, result.stderr
    assert "waiting for the role assignment" in result.stderr
    assert "sip-webhook-secret" in azure.vault


def test_fails_clearly_when_neither_the_token_nor_a_key_is_taken(azd, azure, tokens, key):
    azure.dashboard_auth = "none"  # e.g. the template's account: key access off, and no role yet
    result = run_hook(azd, azure, "--wait-seconds", "0.2")
    assert result.returncode == 1
    assert "refused your Entra token" in result.stderr and "Cognitive Services User" in result.stderr
    assert azure.endpoints == {} and "sip-webhook-secret" not in azure.vault
    assert_nothing_secret_printed(result, azure, tokens, key)


def test_refuses_a_missing_or_plain_http_gateway_url(azd, azure):
    azd.set(SERVICE_API_URI="http://func-api-abc123.azurewebsites.net")
    result = run_hook(azd, azure)
    assert result.returncode == 1 and "SERVICE_API_URI" in result.stderr
    assert [r for r in azure.requests if r[0] == "openai"] == []
