"""azd postprovision hook for phone calls: register the webhook, keep its secret in Key Vault, print the SIP URI.

Does nothing unless SIP_ENABLED is true. Then, with the azd environment's values (`azd env get-values`;
this process's environment when azd is not on PATH):

1. The callers' salt: the vault's (SIP_KEY_VAULT_URI) `sip-caller-salt`, generated once when it is missing
   and never rewritten: it keys the callers' hashes, which must stay comparable from one deploy to the next.
2. The webhook endpoint: the resource's endpoints are listed (every page) at
   AZURE_OPENAI_ENDPOINT/openai/v1/dashboard/webhook_endpoints. One for SERVICE_API_URI/api/sip/incoming
   whose signing secret is in the vault is kept as it is; otherwise one is registered (POST {name, url,
   event_types: [realtime.call.incoming]}) and the `signing_secret` the service returns once goes into the
   vault's `sip-webhook-secret`, tagged with the endpoint's id (how a later run knows the stored secret is
   that endpoint's). Endpoints for the same URL whose secret the vault does not hold are then deleted: their
   deliveries could not be verified anyway. `--rotate` registers a new endpoint even when one is kept.
3. When a secret was written: asks App Service to resolve the app's Key Vault references now
   (POST <app>/config/configreferences/appsettings/refresh) rather than within 24 hours.
4. Prints the SIP URI for the trunk, sip:proj_<internalId>@<region>.sip.ai.azure.com;transport=tls, from the
   Azure OpenAI account's ARM resource (AZURE_OPENAI_RESOURCE_ID): properties.internalId and location.

Credentials: Entra tokens from `azd auth token` (what azure-identity's AzureDeveloperCliCredential runs),
else `az account get-access-token`, for ARM, Key Vault and Azure OpenAI. Microsoft's webhooks page shows the
registration with the `api-key` header only, so the hook tries an Entra token first and, only when the
service refuses it, reads the account's key once (ARM listKeys) and keeps it in memory for these requests:
never stored, never printed (docs/phone.md: Deploying). No secret is printed: not the signing secret, the
salt, a token or a key (every line goes through `scrub`). Standard library only: it runs with whatever python
azd finds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_settings import read_values  # noqa: E402 (a sibling hook: the azd environment's values)

EVENT = "realtime.call.incoming"
ROUTE = "/api/sip/incoming"
SECRET_NAME = "sip-webhook-secret"  # infra/main.bicep: sipWebhookSecretName
SALT_NAME = "sip-caller-salt"  # infra/main.bicep: sipCallerSaltName
ENDPOINT_TAG = "webhook-endpoint-id"
ARM_SCOPE = "https://management.azure.com/.default"
VAULT_SCOPE = "https://vault.azure.net/.default"
OPENAI_SCOPE = "https://cognitiveservices.azure.com/.default"
ACCOUNT_API = "2024-10-01"
SITE_API = "2022-03-01"
VAULT_API = "7.4"
SIP_REGIONS = ("eastus2", "swedencentral")
HTTPS_ORIGIN = re.compile(r"^https://[A-Za-z0-9.-]+(:\d+)?$")
LOOPBACK_ORIGIN = re.compile(r"^http://(127\.0\.0\.1|localhost)(:\d+)?$")  # local fakes in the tests only
PREFIX = "sip_webhook: "

SENSITIVE: set[str] = set()  # every token, key, secret and salt this run has held


class HookError(Exception):
    pass


def scrub(text: str) -> str:
    for value in sorted(SENSITIVE, key=len, reverse=True):
        if value:
            text = text.replace(value, "***")
    return text


def say(message: str, *, err: bool = False) -> None:
    print(scrub(PREFIX + message), file=sys.stderr if err else sys.stdout, flush=True)


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def base_url(name: str, value: str | None, *, trailing_slash: bool = False) -> str:
    """An https origin (or a loopback http one, for the tests' fakes), without a path."""
    url = (value or "").strip().rstrip("/")
    if not (HTTPS_ORIGIN.match(url) or LOOPBACK_ORIGIN.match(url)):
        raise HookError(f"{name} must be https://host (provision with SIP_ENABLED=true first), got {url!r}")
    return url + ("/" if trailing_slash else "")


def same_url(a: object, b: str) -> bool:
    if not isinstance(a, str):
        return False
    pa, pb = urllib.parse.urlsplit(a.strip()), urllib.parse.urlsplit(b)
    return (pa.scheme.lower(), pa.netloc.lower(), pa.path.rstrip("/")) == (
        pb.scheme.lower(),
        pb.netloc.lower(),
        pb.path.rstrip("/"),
    )


# ---- HTTP ------------------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int  # 0: nothing answered
    body: Any
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def call(method: str, url: str, headers: dict[str, str], body: Any = None, timeout: float = 30.0) -> Reply:
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={
            "accept": "application/json",
            "user-agent": "azd-sip-webhook-hook",
            **({"content-type": "application/json"} if data is not None else {}),
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (https, or loopback in tests)
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    except (urllib.error.URLError, OSError) as err:
        return Reply(0, None, str(err))
    text = raw.decode("utf-8", "replace")
    try:
        doc = json.loads(text) if text.strip() else None
    except ValueError:
        doc = None
    return Reply(status, doc, text)


def describe(reply: Reply) -> str:
    """Status and the service's error code and message, short; never a whole body."""
    if reply.status == 0:
        return f"no answer ({reply.text[:200]})"
    error = reply.body.get("error") if isinstance(reply.body, dict) else None
    if isinstance(error, dict):
        detail = f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    else:
        detail = reply.text.strip()
    return f"{reply.status} {detail[:300]}".strip()


# ---- Entra tokens ----------------------------------------------------------------------------------
class Tokens:
    """Tokens from the developer CLIs the deployer is signed in to: azd first (azd runs this hook), then az."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.cache: dict[str, str] = {}

    def commands(self, scope: str) -> list[list[str]]:
        found = []
        azd, az = shutil.which("azd"), shutil.which("az")
        if azd:
            found.append([azd, "auth", "token", "--output", "json", "--no-prompt", "--scope", scope])
            if self.tenant:
                found[-1] += ["--tenant-id", self.tenant]
        if az:
            found.append([az, "account", "get-access-token", "--scope", scope, "--output", "json"])
            if self.tenant:
                found[-1] += ["--tenant", self.tenant]
        return found

    def get(self, scope: str) -> str:
        if scope in self.cache:
            return self.cache[scope]
        failures = []
        for command in self.commands(scope):
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
            if result.returncode == 0:
                try:
                    doc = json.loads(result.stdout)
                except ValueError:
                    doc = {}
                token = (doc.get("token") or doc.get("accessToken")) if isinstance(doc, dict) else None
                if isinstance(token, str) and token:
                    SENSITIVE.add(token)
                    self.cache[scope] = token
                    return token
            failures.append(f"{Path(command[0]).name}: {(result.stderr or result.stdout).strip()[:200]}")
        raise HookError(
            f"no Entra token for {scope} ({'; '.join(failures) or 'neither azd nor az is on PATH'}): "
            "sign in with `azd auth login`"
        )

    def bearer(self, scope: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.get(scope)}"}


# ---- the hook --------------------------------------------------------------------------------------
class Hook:
    def __init__(self, values: dict[str, str], args: argparse.Namespace) -> None:
        self.values = values
        self.rotate = bool(args.rotate)
        self.wait_seconds = float(args.wait_seconds)
        self.interval = float(args.interval)
        self.arm = base_url("--arm-endpoint", args.arm_endpoint)
        api = base_url("SERVICE_API_URI", values.get("SERVICE_API_URI"))
        if not api.startswith("https://"):
            raise HookError(f"SERVICE_API_URI must be https://host, got {api!r}")
        self.webhook_url = api + ROUTE
        self.openai = base_url("AZURE_OPENAI_ENDPOINT", values.get("AZURE_OPENAI_ENDPOINT"))
        self.vault = base_url("SIP_KEY_VAULT_URI", values.get("SIP_KEY_VAULT_URI"), trailing_slash=True)
        self.resource_id = (values.get("AZURE_OPENAI_RESOURCE_ID") or "").strip()
        self.app_name = (values.get("SERVICE_API_NAME") or "").strip()
        self.tokens = Tokens((values.get("AZURE_TENANT_ID") or "").strip())
        self.dashboard_headers: dict[str, str] | None = None
        self.key_tried = False
        self.written = False

    # -- waiting for role assignments: a new one takes minutes to reach the service --------------------
    def patiently(self, what: str, attempt: Callable[[], Reply], waits_on: tuple[int, ...] = (403,)) -> Reply:
        deadline = time.monotonic() + self.wait_seconds
        while True:
            reply = attempt()
            if reply.status not in waits_on or time.monotonic() + self.interval > deadline:
                return reply
            say(f"{what}: {reply.status}, waiting for the role assignment to take effect", err=True)
            time.sleep(self.interval)

    # -- Key Vault -------------------------------------------------------------------------------------
    def vault_get(self, name: str) -> dict | None:
        url = f"{self.vault}secrets/{name}?api-version={VAULT_API}"
        reply = self.patiently(f"reading {name}", lambda: call("GET", url, self.tokens.bearer(VAULT_SCOPE)))
        if reply.status == 404:
            return None
        if not reply.ok or not isinstance(reply.body, dict):
            raise HookError(f"reading {name} from {self.vault}: {describe(reply)} (you need Key Vault Secrets Officer)")
        if isinstance(reply.body.get("value"), str):
            SENSITIVE.add(reply.body["value"])
        return reply.body

    def vault_set(self, name: str, value: str, tags: dict[str, str]) -> None:
        SENSITIVE.add(value)
        url = f"{self.vault}secrets/{name}?api-version={VAULT_API}"
        body = {"value": value, "tags": tags}
        reply = self.patiently(f"writing {name}", lambda: call("PUT", url, self.tokens.bearer(VAULT_SCOPE), body))
        if not reply.ok:
            raise HookError(f"writing {name} to {self.vault}: {describe(reply)} (you need Key Vault Secrets Officer)")
        self.written = True

    def ensure_salt(self) -> None:
        if self.vault_get(SALT_NAME) is not None:
            say(f"callers' salt: kept ({self.vault}secrets/{SALT_NAME})")
            return
        self.vault_set(SALT_NAME, secrets.token_urlsafe(32), {"setting": "SIP_CALLER_SALT"})
        say(f"callers' salt: generated into {self.vault}secrets/{SALT_NAME} (never rewritten: it keys the hashes)")

    # -- the webhook endpoints -------------------------------------------------------------------------
    def dashboard(self, method: str, path: str = "", body: Any = None) -> Reply:
        assert self.dashboard_headers is not None
        return call(method, f"{self.openai}/openai/v1/dashboard/webhook_endpoints{path}", self.dashboard_headers, body)

    def read_key(self) -> tuple[str | None, str]:
        """The account's key1 from ARM listKeys, held in memory only: (key, why not)."""
        if not self.resource_id:
            return None, "no AZURE_OPENAI_RESOURCE_ID to read a key from"
        reply = call(
            "POST", f"{self.arm}{self.resource_id}/listKeys?api-version={ACCOUNT_API}", self.tokens.bearer(ARM_SCOPE)
        )
        key = reply.body.get("key1") if reply.ok and isinstance(reply.body, dict) else None
        if not isinstance(key, str) or not key:
            return None, f"listKeys: {describe(reply)}"
        SENSITIVE.add(key)
        return key, ""

    def choose_dashboard_auth(self) -> None:
        """An Entra token if the service takes one; else the key, read once; waits while a role propagates."""
        url = f"{self.openai}/openai/v1/dashboard/webhook_endpoints?limit=1"
        deadline = time.monotonic() + self.wait_seconds
        key_refusal = ""
        while True:
            bearer = self.tokens.bearer(OPENAI_SCOPE)
            reply = call("GET", url, bearer)
            if reply.ok:
                self.dashboard_headers = bearer
                say("webhook endpoints: signed in with your Entra token")
                return
            if reply.status not in (401, 403):
                raise HookError(f"listing the webhook endpoints at {self.openai}: {describe(reply)}")
            refusal = describe(reply)
            if not self.key_tried:
                self.key_tried = True
                key, key_refusal = self.read_key()
                if key:
                    with_key = call("GET", url, {"api-key": key})
                    if with_key.ok:
                        self.dashboard_headers = {"api-key": key}
                        say(
                            f"webhook endpoints: your Entra token was refused ({refusal}); using the resource's key "
                            "for these requests (read now, held in memory only, never stored)"
                        )
                        return
                    key_refusal = f"the key: {describe(with_key)}"
            if time.monotonic() + self.interval > deadline:
                raise HookError(
                    f"the webhook endpoints refused your Entra token ({refusal}) and no key worked ({key_refusal}). "
                    "Give yourself Cognitive Services User on the resource (the template does with AZURE_PRINCIPAL_ID), "
                    "or, if the service takes keys only, turn the resource's key access on for this run (docs/phone.md: Deploying)"
                )
            say(f"webhook endpoints: {refusal}; waiting for the role assignment to take effect", err=True)
            time.sleep(self.interval)

    def list_endpoints(self) -> list[dict]:
        found: list[dict] = []
        after = ""
        for _ in range(100):  # pages of 100: far more endpoints than a resource has
            query = urllib.parse.urlencode({"limit": 100, **({"after": after} if after else {})})
            reply = self.dashboard("GET", f"?{query}")
            if not reply.ok:
                raise HookError(f"listing the webhook endpoints: {describe(reply)}")
            doc = reply.body
            page = doc.get("data") if isinstance(doc, dict) else doc
            page = [e for e in page or [] if isinstance(e, dict)]
            found += page
            if not (isinstance(doc, dict) and doc.get("has_more") and page):
                break
            after = str(doc.get("last_id") or page[-1].get("id") or "")
        return found

    def register(self) -> dict:
        name = f"realtime-gateway {self.app_name or self.values.get('AZURE_ENV_NAME', '')}".strip()[:256]
        reply = self.dashboard("POST", body={"name": name, "url": self.webhook_url, "event_types": [EVENT]})
        body = reply.body if isinstance(reply.body, dict) else {}
        secret, endpoint_id = body.get("signing_secret"), body.get("id")
        if isinstance(secret, str):
            SENSITIVE.add(secret)
        if not reply.ok or not isinstance(secret, str) or not secret or not endpoint_id:
            raise HookError(f"registering {self.webhook_url}: {describe(reply)}")
        return body

    def delete(self, endpoint: dict) -> None:
        reply = self.dashboard("DELETE", f"/{urllib.parse.quote(str(endpoint.get('id')), safe='')}")
        if reply.ok or reply.status == 404:
            say(f"deleted the older webhook endpoint {endpoint.get('id')} for {self.webhook_url}")
        else:
            say(
                f"could not delete webhook endpoint {endpoint.get('id')}: {describe(reply)}; delete it by hand",
                err=True,
            )

    def ensure_event(self, endpoint: dict) -> None:
        events = [e for e in endpoint.get("event_types") or [] if isinstance(e, str)]
        if EVENT in events:
            return
        body = {
            "name": endpoint.get("name") or "realtime-gateway",
            "url": self.webhook_url,
            "event_types": [*events, EVENT],
        }
        reply = self.dashboard("POST", f"/{urllib.parse.quote(str(endpoint.get('id')), safe='')}", body)
        if not reply.ok:
            raise HookError(f"adding {EVENT} to webhook endpoint {endpoint.get('id')}: {describe(reply)}")
        say(f"added {EVENT} to webhook endpoint {endpoint.get('id')}")

    def ensure_endpoint(self) -> None:
        self.choose_dashboard_auth()
        mine = [e for e in self.list_endpoints() if same_url(e.get("url"), self.webhook_url)]
        stored = self.vault_get(SECRET_NAME)
        stored_for = ((stored or {}).get("tags") or {}).get(ENDPOINT_TAG)
        kept = next((e for e in mine if stored_for and e.get("id") == stored_for), None)
        if kept and not self.rotate:
            self.ensure_event(kept)
            say(
                f"webhook endpoint {kept.get('id')} for {self.webhook_url}: already registered, its secret in the vault (kept)"
            )
            stale = [e for e in mine if e is not kept]
        else:
            if mine and not self.rotate:
                say(
                    f"{len(mine)} webhook endpoint(s) for {self.webhook_url} without their secret in the vault: replacing"
                )
            created = self.register()
            try:
                self.vault_set(SECRET_NAME, created["signing_secret"], {ENDPOINT_TAG: str(created["id"])})
            except HookError:
                self.delete(created)  # a registered endpoint whose secret nobody holds is no use to anyone
                raise
            verb = "rotated" if self.rotate and mine else "registered"
            say(
                f"{verb} webhook endpoint {created['id']} for {self.webhook_url} ({EVENT}); its signing secret is in "
                f"{self.vault}secrets/{SECRET_NAME}"
            )
            stale = mine
        for endpoint in stale:
            self.delete(endpoint)

    # -- the app and the trunk -------------------------------------------------------------------------
    def refresh_app(self) -> None:
        sub, group = self.values.get("AZURE_SUBSCRIPTION_ID", ""), self.values.get("AZURE_RESOURCE_GROUP", "")
        if not (sub and group and self.app_name):
            say("the app picks the new secret up at its next restart (azd deploy) or within 24 hours", err=True)
            return
        site = f"/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Web/sites/{self.app_name}"
        url = f"{self.arm}{site}/config/configreferences/appsettings/refresh?api-version={SITE_API}"
        reply = call("POST", url, self.tokens.bearer(ARM_SCOPE))
        if reply.ok:
            say(f"asked App Service to resolve {self.app_name}'s Key Vault references now")
        else:
            say(
                f"could not ask App Service to resolve the Key Vault references ({describe(reply)}): the app picks "
                "the new secret up at its next restart (azd deploy) or within 24 hours",
                err=True,
            )

    def sip_uri(self) -> str | None:
        if not self.resource_id:
            say(
                "AZURE_OPENAI_RESOURCE_ID is empty (an existing resource without AZURE_OPENAI_EXISTING_NAME): the SIP "
                "URI is sip:proj_<internalId>@<region>.sip.ai.azure.com;transport=tls, with the internal id from the "
                "resource's JSON view in the portal",
                err=True,
            )
            return None
        reply = call("GET", f"{self.arm}{self.resource_id}?api-version={ACCOUNT_API}", self.tokens.bearer(ARM_SCOPE))
        props = reply.body.get("properties") if reply.ok and isinstance(reply.body, dict) else None
        internal = props.get("internalId") if isinstance(props, dict) else None
        region = str(reply.body.get("location", "") if isinstance(reply.body, dict) else "").replace(" ", "").lower()
        if not isinstance(internal, str) or not re.fullmatch(r"[A-Za-z0-9]+", internal) or not region:
            say(f"could not read the resource's internalId and location ({describe(reply)})", err=True)
            return None
        if region not in SIP_REGIONS:
            say(f"the resource is in {region}; SIP is offered in {' and '.join(SIP_REGIONS)} only", err=True)
        return f"sip:proj_{internal}@{region}.sip.ai.azure.com;transport=tls"

    def run(self) -> int:
        self.ensure_salt()
        self.ensure_endpoint()
        if self.written:
            self.refresh_app()
        uri = self.sip_uri()
        if uri:
            say("point your SIP trunk (Twilio, Vonage, Bandwidth, ...) at")
            print(f"  {uri}", flush=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rotate", action="store_true", help="register a new endpoint (a new secret), delete the old")
    parser.add_argument("--arm-endpoint", default="https://management.azure.com", help="Azure Resource Manager")
    parser.add_argument("--wait-seconds", type=float, default=300.0, help="how long to wait for new role assignments")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between tries while waiting")
    args = parser.parse_args(argv)
    values = {**os.environ, **read_values(os.environ.get("AZURE_ENV_NAME") or None)}
    if not truthy(values.get("SIP_ENABLED")):
        say("SIP_ENABLED is not true: nothing to do (azd env set SIP_ENABLED true, then azd provision)")
        return 0
    try:
        return Hook(values, args).run()
    except HookError as err:
        say(str(err), err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
