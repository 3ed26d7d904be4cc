"""App settings, read once and validated, with messages that name the setting at fault.

Every knob of the app is here so the rest of the package takes a `Settings` and never reads
`os.environ` itself. Names match the app settings in Azure and `local.settings.json`.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .core.schema import unsupported

TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
QUEUE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"


DEFAULT_NOTICE = "I stopped that answer because it broke this service's output policy."


def parse_terms(raw: str) -> list[str]:
    """GUARDRAIL_BLOCKED_TERMS: a JSON list of regular expressions, or comma-separated plain terms."""
    raw = raw.strip()
    if not raw:
        return []
    if raw.startswith("["):
        terms = json.loads(raw)
        if not isinstance(terms, list) or not all(isinstance(t, str) and t for t in terms):
            raise ValueError("must be a JSON list of non-empty strings")
        return terms
    return [rf"\b{re.escape(t.strip())}\b" for t in raw.split(",") if t.strip()]


def _merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        nested = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = _merge(out[key], value) if nested else value
    return out


class SettingsError(ValueError):
    """One or more settings are missing or malformed; the message lists each."""


# `UseDevelopmentStorage=true`: Azurite on its default ports, with its published development key.
DEVELOPMENT_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


NO_STORAGE = (
    "set AzureWebJobsStorage (connection string, local) or "
    "AzureWebJobsStorage__tableServiceUri (managed identity, Azure)"
)


class StorageConfigError(ValueError):
    """Neither a connection string nor an identity-based table endpoint is configured."""


@dataclass(frozen=True)
class StorageConnection:
    """How to reach the app's storage account, as the Functions host reads `AzureWebJobsStorage`."""

    connection_string: str | None = None  # local (Azurite); wins over the identity group, as in the host
    table_uri: str = ""  # identity-based: `__tableServiceUri`, or derived from `__accountName`
    client_id: str | None = None  # a user-assigned identity's client id


def storage_connection(env: Mapping[str, str] | None = None) -> StorageConnection:
    env = os.environ if env is None else env
    conn = (env.get("AzureWebJobsStorage") or "").strip()
    if conn:
        if conn.lower() == "usedevelopmentstorage=true":  # as Core Tools reads it: Azurite on its own ports
            conn = DEVELOPMENT_STORAGE
        return StorageConnection(connection_string=conn)
    uri = (env.get("AzureWebJobsStorage__tableServiceUri") or "").strip().rstrip("/")
    account = (env.get("AzureWebJobsStorage__accountName") or "").strip()
    if not uri and account:
        uri = f"https://{account}.table.core.windows.net"
    if not uri:
        raise StorageConfigError(NO_STORAGE)
    return StorageConnection(table_uri=uri, client_id=(env.get("AzureWebJobsStorage__clientId") or "").strip() or None)


@dataclass(frozen=True)
class Settings:
    endpoint: str  # https://<resource>.openai.azure.com (no trailing slash)
    deployment: str
    api_key: str | None = None  # only for resources that use keys; identity otherwise
    managed_identity_client_id: str | None = None
    session_policy: Mapping[str, Any] = field(default_factory=dict)  # the `session` object
    client_secret_ttl: int = 600
    allowed_origins: tuple[str, ...] = ()
    cors_allowed_headers: tuple[str, ...] = ()  # request headers allowed beyond the gateway's own
    cors_allow_credentials: bool = False  # cookies / Easy Auth sessions from an allowed origin
    service_session_seconds: int = 1800  # the service's own session cap (Azure: 30 minutes)
    max_conversation_seconds: int = 7200  # a conversation's calls together (each rollover continues it)
    webrtc_filter: bool = True
    listener_queue: str = "call-listener"
    events_table: str = "callevents"
    sessions_table: str = "callsessions"
    listener_time_box: int = 480  # seconds; shorter than host.json functionTimeout
    max_call_seconds: int = 3600
    token_route_enabled: bool = False  # a minted secret starts calls no slot, listener or budget sees
    require_principal: bool = False
    # App Service authentication is on (the platform sets WEBSITE_AUTH_ENABLED and then strips any
    # client-sent x-ms-client-principal): only then is that header an identity, never otherwise.
    platform_auth: bool = False
    policy_enforce: bool = True  # the listener holds the session policy against the data channel
    policy_max_violations: int = 3  # hang up at this many policy violations; 0 never
    health_cache_seconds: float = 15.0
    strict_recording: bool = False
    attach_limit_seconds: int = 15
    sideband_session_update: Mapping[str, Any] | None = None  # sent by the listener on every attach
    http_timeout: float = 20.0  # per upstream request; the whole /connect stays under 230 s
    # Client secrets minted ahead for /connect (upstream/secret_pool.py); size 0 turns the pool off.
    secret_pool_size: int = 8
    secret_pool_ttl: int = 600  # lifetime asked for each pooled secret
    secret_pool_lead: int = 120  # a pooled secret with less than this left is replaced, never used
    listener_max_concurrent: int = 160  # listener threads per worker process (listener/threads.py)
    tools_module: str = ""  # the deployer's module with the tools' functions; empty: no server-side tools
    tool_timeout: float = 10.0
    guardrail_terms: tuple[str, ...] = ()  # regular expressions, matched case-insensitively
    guardrail_hook: str = ""  # module:function
    guardrail_notice: str = DEFAULT_NOTICE
    guardrail_max_hits: int = 3  # hang up at this many guardrail hits; 0 never
    audit_api_enabled: bool = False  # the read-only /api/audit/* routes (function keys)
    archive_retention_days: int = 0  # calls older than this are deleted by the retention timer; 0 = keep
    limits: Limits = field(default_factory=lambda: Limits())
    storage: StorageConnection | None = None  # AzureWebJobsStorage (or its identity group); None: not set
    sip: SipSettings = field(default_factory=lambda: SipSettings())  # phone calls (docs/phone.md)

    @property
    def websocket_endpoint(self) -> str:
        return "ws" + self.endpoint[len("http") :]

    def enforced_policy(self, session: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The session a call must keep: the minted policy (or a phone call's `session`), the
        listener's own session.update on top."""
        return _merge(self.session_policy if session is None else session, self.sideband_session_update or {})

    def origin_allowed(self, origin: str | None) -> bool:
        if not origin:
            return True  # not a browser cross-origin request (curl, same-origin GET)
        return "*" in self.allowed_origins or origin in self.allowed_origins


CALLER_PRIVACY = ("hash", "mask", "keep")
PHONE_ENTRY = re.compile(r"^(?:(?:from|to):)?\+?[0-9]{2,20}\*?$")


@dataclass(frozen=True)
class SipSettings:
    """Phone calls over SIP (realtime_gateway/phone/): off while no webhook secret is set."""

    webhook_secret: str = ""  # SIP_WEBHOOK_SECRET: `whsec_<base64>`, the webhook endpoint's signing secret
    caller_privacy: str = "hash"  # SIP_CALLER_PRIVACY: how the caller's number is stored (hash|mask|keep)
    caller_salt: str = ""  # SIP_CALLER_SALT: the key of the caller's salted hash (HMAC-SHA256)
    allowed_numbers: tuple[str, ...] = ()  # SIP_ALLOWED_NUMBERS: `[from:|to:]+number[*]`; empty: all
    blocked_numbers: tuple[str, ...] = ()  # SIP_BLOCKED_NUMBERS: the same form; a match declines (603)
    session_policy: Mapping[str, Any] | None = None  # SIP_SESSION_POLICY_FILE; None: the browser calls' policy
    # SIP_TRANSFER_TARGETS: name -> `tel:`/`sip:` URI, the only places transfer_call may send a call
    transfer_targets: Mapping[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_secret)


def _numbers(name: str, raw: str, errors: list[str]) -> tuple[str, ...]:
    entries = tuple(e.strip().replace(" ", "") for e in raw.split(",") if e.strip())
    for entry in entries:
        if not PHONE_ENTRY.match(entry.lower()):
            errors.append(
                f"{name} entries must look like [from:|to:]+15551230000 (a trailing * for a prefix), got {entry!r}"
            )
    return tuple(e.lower() for e in entries)


TRANSFER_NAME = re.compile(r"^[a-z0-9][a-z0-9 _-]{0,39}$")
TRANSFER_URI = re.compile(r"^(?:tel:\+?[0-9]{2,20}|sips?:[^\s@,=]+@[^\s,=]+)$")


def transfer_targets(raw: str, errors: list[str]) -> dict[str, str]:
    """`sales=tel:+15550001111,support=sip:help@example.com`: the names the model may ask for
    (lower case) and the URI each stands for; a name or a URI given twice is refused."""
    targets: dict[str, str] = {}
    for entry in (e.strip() for e in raw.split(",") if e.strip()):
        name, sep, uri = (part.strip() for part in entry.partition("="))
        name = name.lower()
        if not sep or not TRANSFER_NAME.match(name) or not TRANSFER_URI.match(uri):
            errors.append(
                "SIP_TRANSFER_TARGETS entries must be name=tel:+number or name=sip:user@host "
                f"(a name of letters, digits, space, _ or -), got {entry!r}"
            )
        elif name in targets or uri in targets.values():
            errors.append(f"SIP_TRANSFER_TARGETS names each target once, {name!r} or {uri!r} twice")
        else:
            targets[name] = uri
    return targets


# What App Service leaves in an app setting whose Key Vault reference it could not resolve (infra: SIP_ENABLED).
UNRESOLVED_REFERENCE = "@Microsoft.KeyVault("


def _unresolved(name: str, value: str, errors: list[str]) -> bool:
    """A literal reference is no secret and no salt: name the cause instead of using it."""
    if not value.startswith(UNRESOLVED_REFERENCE):
        return False
    errors.append(
        f"{name} is a Key Vault reference the platform has not resolved: the secret is not in the vault yet "
        "(the postprovision hook infra/hooks/sip_webhook.py writes it) or the app's identity cannot read it"
    )
    return True


def _sip(env: Mapping[str, str], deployment: str, errors: list[str]) -> SipSettings:
    secret = env.get("SIP_WEBHOOK_SECRET", "").strip()
    values: dict[str, Any] = {"webhook_secret": secret}
    if secret and not _unresolved("SIP_WEBHOOK_SECRET", secret, errors):
        try:
            if not secret.startswith("whsec_") or not base64.b64decode(secret[6:] + "==", validate=False):
                raise ValueError
        except ValueError:
            errors.append("SIP_WEBHOOK_SECRET must be the endpoint's signing secret, whsec_ followed by base64")
    privacy = env.get("SIP_CALLER_PRIVACY", "").strip().lower() or SipSettings.caller_privacy
    if privacy not in CALLER_PRIVACY:
        errors.append(f"SIP_CALLER_PRIVACY must be one of hash, mask, keep, got {privacy!r}")
    values["caller_privacy"] = privacy
    salt = env.get("SIP_CALLER_SALT", "").strip()
    if not _unresolved("SIP_CALLER_SALT", salt, errors) and secret and len(salt) < 16:
        errors.append(
            "SIP_CALLER_SALT must be at least 16 characters when SIP_WEBHOOK_SECRET is set (the key of the callers' hashes)"
        )
    values["caller_salt"] = salt
    values["allowed_numbers"] = _numbers("SIP_ALLOWED_NUMBERS", env.get("SIP_ALLOWED_NUMBERS", ""), errors)
    values["blocked_numbers"] = _numbers("SIP_BLOCKED_NUMBERS", env.get("SIP_BLOCKED_NUMBERS", ""), errors)
    values["transfer_targets"] = transfer_targets(env.get("SIP_TRANSFER_TARGETS", ""), errors)
    path = env.get("SIP_SESSION_POLICY_FILE", "").strip()
    if path:  # read like REALTIME_SESSION_POLICY_FILE, without the browser policy's REALTIME_* overrides
        found: list[str] = []
        values["session_policy"] = _session_policy({"REALTIME_SESSION_POLICY_FILE": path}, deployment, found)
        errors += [e.replace("REALTIME_SESSION_POLICY_FILE", "SIP_SESSION_POLICY_FILE") for e in found]
    return SipSettings(**values)


# USD per million tokens (gpt-realtime list prices, 2025-08); transcription per million tokens of
# token-billed models and per minute of duration-billed ones.
PRICES = {
    "input_text": 4.0,
    "input_audio": 32.0,
    "cached_input": 0.4,
    "output_text": 16.0,
    "output_audio": 64.0,
    "transcription": 6.0,
    "transcription_minute": 0.006,
}


@dataclass(frozen=True)
class Limits:
    """Cost and abuse limits (docs/limits.md). 0 switches a limit off."""

    table: str = "gatewaylimits"
    rate_per_minute: int = 10  # per client on /api/connect and /api/token
    control_rate_per_minute: int = 120  # per client on the hang-up and call-state routes
    max_active_calls: int = 100
    slot_shards: int = 16  # rows the active-call slots are spread over (by hash of the slot id)
    slot_attach_seconds: int = 120  # a reserved slot whose call never attached expires after this
    daily_call_minutes: int = 0
    daily_tokens: int = 0
    principal_daily_call_minutes: int = 0
    principal_daily_tokens: int = 0
    daily_spend_usd: float = 20.0  # the app's spend a day: usage priced, plus running minutes
    principal_daily_spend_usd: float = 0.0
    running_minute_usd: float = 0.10  # reserved per minute of a running call not yet charged
    rate_fail_open: bool = True  # limits table unreachable: rate limit lets calls through
    budget_fail_open: bool = False  # ... budgets and the active-call cap refuse them
    hangup_running: bool = True  # a spent daily budget also hangs up the calls still running
    client_ip_header: str = "x-forwarded-for"
    client_ip_hop: int = 1  # which entry from the right: 1 = the one the platform's front end appended
    prices: Mapping[str, float] = field(default_factory=lambda: dict(PRICES))


SLOTS_PER_SHARD = 400  # a slot entry is at most ~66 characters of JSON


PRICE_SETTINGS = {
    "PRICE_INPUT_TEXT_PER_MTOK": "input_text",
    "PRICE_INPUT_AUDIO_PER_MTOK": "input_audio",
    "PRICE_CACHED_INPUT_PER_MTOK": "cached_input",
    "PRICE_OUTPUT_TEXT_PER_MTOK": "output_text",
    "PRICE_OUTPUT_AUDIO_PER_MTOK": "output_audio",
    "PRICE_TRANSCRIPTION_PER_MTOK": "transcription",
    "PRICE_TRANSCRIPTION_PER_MINUTE": "transcription_minute",
}


def _limits(env: Mapping[str, str], errors: list[str]) -> Limits:
    values = _given(
        env,
        errors,
        # per client
        ("RATE_LIMIT_PER_MINUTE", "rate_per_minute", _int, 0, 100000),
        ("CONTROL_RATE_PER_MINUTE", "control_rate_per_minute", _int, 0, 100000),
        ("RATE_LIMIT_FAIL_OPEN", "rate_fail_open", _bool),
        ("CLIENT_IP_HOP", "client_ip_hop", _int, 1, 20),
        # calls at once
        ("MAX_ACTIVE_CALLS", "max_active_calls", _int, 0, 10000),
        ("LIMIT_SLOT_SHARDS", "slot_shards", _int, 1, 256),
        ("CALL_SLOT_ATTACH_SECONDS", "slot_attach_seconds", _int, 10, 3600),
        # a day's budgets: the deployment's, then each principal's
        ("DAILY_CALL_MINUTES", "daily_call_minutes", _int, 0, 10**9),
        ("DAILY_TOKEN_BUDGET", "daily_tokens", _int, 0, 10**15),
        ("DAILY_SPEND_LIMIT_USD", "daily_spend_usd", _float, 0, 10**9),
        ("PRINCIPAL_DAILY_CALL_MINUTES", "principal_daily_call_minutes", _int, 0, 10**9),
        ("PRINCIPAL_DAILY_TOKEN_BUDGET", "principal_daily_tokens", _int, 0, 10**15),
        ("PRINCIPAL_DAILY_SPEND_LIMIT_USD", "principal_daily_spend_usd", _float, 0, 10**9),
        ("PRICE_RUNNING_CALL_PER_MINUTE", "running_minute_usd", _float, 0, 10**9),
        ("BUDGET_FAIL_OPEN", "budget_fail_open", _bool),
        ("BUDGET_HANGUP_RUNNING", "hangup_running", _bool),
    )
    cap, shards = values.get("max_active_calls", Limits.max_active_calls), values.get("slot_shards", Limits.slot_shards)
    if cap > SLOTS_PER_SHARD * shards:  # a shard row's slots are one 32K-character property
        errors.append(
            f"MAX_ACTIVE_CALLS={cap} needs LIMIT_SLOT_SHARDS of at least {-(-cap // SLOTS_PER_SHARD)} "
            f"({SLOTS_PER_SHARD} calls a shard row), got {shards}"
        )
    table = env.get("LIMITS_TABLE", "").strip() or Limits.table
    if not TABLE_NAME.match(table):
        errors.append(f"LIMITS_TABLE must match ^[A-Za-z][A-Za-z0-9]{{2,62}}$, got {table!r}")
    header = env.get("CLIENT_IP_HEADER", "").strip().lower() or Limits.client_ip_header
    if not re.match(r"^[a-z0-9-]+$", header):
        errors.append(f"CLIENT_IP_HEADER must be a header name, got {header!r}")
    prices = dict(PRICES)
    for name, key in PRICE_SETTINGS.items():
        raw = env.get(name, "").strip()
        if raw:
            try:
                prices[key] = float(raw)
                if prices[key] < 0:
                    raise ValueError
            except ValueError:
                errors.append(f"{name} must be a price of zero or more (USD), got {raw!r}")
    return Limits(table=table, client_ip_header=header, prices=prices, **values)


def _given(env: Mapping[str, str], errors: list[str], *table: tuple[Any, ...]) -> dict[str, Any]:
    """attr: read(name, value, *bounds, errors) for each (name, attr, read, *bounds) of `table` that env sets."""
    return {
        attr: read(name, env[name].strip(), *bounds, errors)
        for name, attr, read, *bounds in table
        if env.get(name, "").strip()
    }


def _bool(name: str, raw: str, errors: list[str]) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    errors.append(f"{name} must be true or false, got {raw!r}")
    return False


def _number(name: str, raw: str, lo: float, hi: float, errors: list[str], kind: type = int) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        errors.append(f"{name} must be {'a whole number' if kind is int else 'a number'}, got {raw!r}")
        return lo
    if not lo <= value <= hi:
        errors.append(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(name: str, raw: str, lo: float, hi: float, errors: list[str]) -> float:
    return float(_number(name, raw, lo, hi, errors, float))


def _int(name: str, raw: str, lo: int, hi: int, errors: list[str]) -> int:
    return int(_number(name, raw, lo, hi, errors, int))


def _json(name: str, raw: str, errors: list[str]) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        errors.append(f"{name} is not valid JSON ({exc.msg} at position {exc.pos})")
        return None


def _session_policy(env: Mapping[str, str], deployment: str, errors: list[str]) -> dict[str, Any]:
    """The server-side session: a JSON file if given, then individual settings on top."""
    policy: dict[str, Any] = {}
    path = env.get("REALTIME_SESSION_POLICY_FILE", "").strip()
    if path:
        try:
            loaded = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            errors.append(f"REALTIME_SESSION_POLICY_FILE cannot be read: {exc.strerror} ({path})")
            loaded = {}
        except json.JSONDecodeError as exc:
            errors.append(f"REALTIME_SESSION_POLICY_FILE is not valid JSON ({exc.msg} at line {exc.lineno})")
            loaded = {}
        if not isinstance(loaded, dict):
            errors.append("REALTIME_SESSION_POLICY_FILE must hold a JSON object (the `session`)")
            loaded = {}
        policy.update(loaded.get("session", loaded))
    policy["type"] = "realtime"
    policy["model"] = deployment
    policy.setdefault("instructions", "You are a helpful assistant.")
    if env.get("REALTIME_INSTRUCTIONS"):
        policy["instructions"] = env["REALTIME_INSTRUCTIONS"]
    audio = policy.setdefault("audio", {})
    voice = env.get("REALTIME_VOICE")
    if voice or "voice" not in audio.get("output", {}):
        audio.setdefault("output", {})["voice"] = voice or "marin"
    for name, path_ in (
        ("REALTIME_TURN_DETECTION", ("input", "turn_detection")),
        ("REALTIME_INPUT_TRANSCRIPTION", ("input", "transcription")),
    ):
        if env.get(name):
            value = _json(name, env[name], errors)
            if value is not None:
                audio.setdefault(path_[0], {})[path_[1]] = value
    if env.get("REALTIME_TOOLS"):
        tools = _json("REALTIME_TOOLS", env["REALTIME_TOOLS"], errors)
        if tools is not None and not isinstance(tools, list):
            errors.append("REALTIME_TOOLS must be a JSON list")
        elif tools is not None:
            policy["tools"] = tools
    for i, tool in enumerate(policy.get("tools") or []):
        if not isinstance(tool, dict) or not tool.get("name"):
            errors.append(f"tools[{i}] must be an object with a name")
        elif tool.get("type", "function") == "function":
            for where in unsupported(tool.get("parameters") or {}):
                errors.append(f"tool {tool['name']!r}: {where} is outside the supported JSON-schema subset")
    return policy


def _tools_and_guardrail(env: Mapping[str, str], errors: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    module = env.get("TOOLS_MODULE", "").strip()
    if module and not re.match(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$", module):
        errors.append(f"TOOLS_MODULE must be a dotted module name, got {module!r}")
    values["tools_module"] = module
    if env.get("TOOL_TIMEOUT_SECONDS", "").strip():
        try:
            values["tool_timeout"] = float(env["TOOL_TIMEOUT_SECONDS"])
            if not 0.1 <= values["tool_timeout"] <= 120:
                errors.append(f"TOOL_TIMEOUT_SECONDS must be between 0.1 and 120, got {values['tool_timeout']}")
        except ValueError:
            errors.append(f"TOOL_TIMEOUT_SECONDS must be a number, got {env['TOOL_TIMEOUT_SECONDS']!r}")
    try:
        terms = parse_terms(env.get("GUARDRAIL_BLOCKED_TERMS", ""))
        for term in terms:
            re.compile(term)
        values["guardrail_terms"] = tuple(terms)
    except (ValueError, re.error) as exc:
        errors.append(f"GUARDRAIL_BLOCKED_TERMS: {exc}")
    hook = env.get("GUARDRAIL_HOOK", "").strip()
    if hook and not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", hook):
        errors.append(f"GUARDRAIL_HOOK must look like module:function, got {hook!r}")
    values["guardrail_hook"] = hook
    if "GUARDRAIL_NOTICE" in env:
        values["guardrail_notice"] = env["GUARDRAIL_NOTICE"].strip()  # empty: no notice
    if env.get("GUARDRAIL_MAX_HITS", "").strip():
        values["guardrail_max_hits"] = _int("GUARDRAIL_MAX_HITS", env["GUARDRAIL_MAX_HITS"].strip(), 0, 1000, errors)
    return values


def _archive_tables(env: Mapping[str, str], errors: list[str]) -> dict[str, str]:
    tables = {}
    for name, attr in (("ARCHIVE_EVENTS_TABLE", "events_table"), ("ARCHIVE_SESSIONS_TABLE", "sessions_table")):
        tables[attr] = env.get(name, "").strip() or str(getattr(Settings, attr))
        if not TABLE_NAME.match(tables[attr]):
            errors.append(f"{name} must match ^[A-Za-z][A-Za-z0-9]{{2,62}}$, got {tables[attr]!r}")
    return tables


def limits_settings(env: Mapping[str, str] | None = None) -> Limits:
    """The limits' settings alone (the audit command prices and finds the day rows with them)."""
    errors: list[str] = []
    limits = _limits(os.environ if env is None else env, errors)
    if errors:
        raise SettingsError("invalid settings: " + "; ".join(errors))
    return limits


def archive_tables(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(events table, sessions table): all the audit command needs of the app's settings."""
    errors: list[str] = []
    tables = _archive_tables(os.environ if env is None else env, errors)
    if errors:
        raise SettingsError("invalid settings: " + "; ".join(errors))
    return tables["events_table"], tables["sessions_table"]


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise SettingsError naming all problems at once."""
    env = os.environ if env is None else env
    errors: list[str] = []

    endpoint = env.get("AZURE_OPENAI_ENDPOINT", "").strip().rstrip("/")
    resource = env.get("AZURE_OPENAI_RESOURCE", "").strip()
    if not endpoint and resource:
        endpoint = f"https://{resource}.openai.azure.com"
    if not endpoint:
        errors.append(
            "AZURE_OPENAI_ENDPOINT (or AZURE_OPENAI_RESOURCE) is required, e.g. https://my-resource.openai.azure.com"
        )
    elif not re.match(r"^https?://[^/\s?#]+$", endpoint):
        errors.append(f"AZURE_OPENAI_ENDPOINT must be a scheme and host only, got {endpoint!r}")

    deployment = env.get("AZURE_OPENAI_DEPLOYMENT", "").strip()
    if not deployment:
        errors.append("AZURE_OPENAI_DEPLOYMENT is required (the realtime model deployment name)")

    origins = tuple(o.strip().rstrip("/") for o in env.get("ALLOWED_ORIGINS", "").split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            errors.append(f"ALLOWED_ORIGINS entries must look like https://host[:port], got {origin!r}")

    values: dict[str, Any] = {}
    headers = tuple(h.strip().lower() for h in env.get("CORS_ALLOWED_HEADERS", "").split(",") if h.strip())
    for header in headers:
        if not re.match(r"^[a-z0-9-]+$", header):
            errors.append(f"CORS_ALLOWED_HEADERS entries must be header names, got {header!r}")
    values["cors_allowed_headers"] = headers
    values |= _given(
        env,
        errors,
        # the browser's way in
        ("CLIENT_SECRET_TTL_SECONDS", "client_secret_ttl", _int, 10, 7200),
        ("TOKEN_ROUTE_ENABLED", "token_route_enabled", _bool),
        ("WEBRTC_FILTER", "webrtc_filter", _bool),
        ("SECRET_POOL_SIZE", "secret_pool_size", _int, 0, 64),
        ("SECRET_POOL_TTL_SECONDS", "secret_pool_ttl", _int, 10, 7200),
        ("SECRET_POOL_LEAD_SECONDS", "secret_pool_lead", _int, 1, 3600),
        # who may call
        ("REQUIRE_PRINCIPAL", "require_principal", _bool),
        ("WEBSITE_AUTH_ENABLED", "platform_auth", _bool),
        ("CORS_ALLOW_CREDENTIALS", "cors_allow_credentials", _bool),
        # how long a call and a conversation last
        ("MAX_CALL_SECONDS", "max_call_seconds", _int, 10, 3600),
        ("SERVICE_SESSION_SECONDS", "service_session_seconds", _int, 10, 7200),
        ("MAX_CONVERSATION_SECONDS", "max_conversation_seconds", _int, 10, 86400),
        # the listener
        ("LISTENER_TIME_BOX_SECONDS", "listener_time_box", _int, 10, 86400),
        ("ATTACH_LIMIT_SECONDS", "attach_limit_seconds", _int, 1, 600),
        ("STRICT_RECORDING", "strict_recording", _bool),
        ("LISTENER_MAX_CONCURRENT", "listener_max_concurrent", _int, 1, 1000),
        ("POLICY_ENFORCE", "policy_enforce", _bool),
        ("POLICY_MAX_VIOLATIONS", "policy_max_violations", _int, 0, 1000),
        # the archive
        ("ARCHIVE_RETENTION_DAYS", "archive_retention_days", _int, 0, 36500),
        ("AUDIT_API_ENABLED", "audit_api_enabled", _bool),
    )
    if env.get("HEALTH_CACHE_SECONDS", "").strip():
        values["health_cache_seconds"] = _float(
            "HEALTH_CACHE_SECONDS", env["HEALTH_CACHE_SECONDS"].strip(), 0, 3600, errors
        )
    if env.get("HTTP_TIMEOUT_SECONDS", "").strip():
        try:
            values["http_timeout"] = float(env["HTTP_TIMEOUT_SECONDS"])
        except ValueError:
            errors.append(f"HTTP_TIMEOUT_SECONDS must be a number, got {env['HTTP_TIMEOUT_SECONDS']!r}")

    pool_ttl = values.get("secret_pool_ttl", Settings.secret_pool_ttl)
    if values.get("secret_pool_lead", Settings.secret_pool_lead) * 2 > pool_ttl:
        errors.append("SECRET_POOL_LEAD_SECONDS must be at most half of SECRET_POOL_TTL_SECONDS")

    queue = env.get("LISTENER_QUEUE", "").strip() or Settings.listener_queue
    if not QUEUE_NAME.match(queue):
        errors.append(f"LISTENER_QUEUE must be 3-63 lowercase letters, digits and single hyphens, got {queue!r}")
    elif len(queue) > 56:  # the host's `<queue>-poison` must be a valid queue name too (63 at most)
        errors.append(f"LISTENER_QUEUE must be at most 56 characters (its -poison queue adds 7), got {len(queue)}")
    tables = _archive_tables(env, errors)

    if env.get("LISTENER_SESSION_UPDATE", "").strip():
        update = _json("LISTENER_SESSION_UPDATE", env["LISTENER_SESSION_UPDATE"], errors)
        if update is not None and not isinstance(update, dict):
            errors.append("LISTENER_SESSION_UPDATE must be a JSON object (the `session` of a session.update)")
        elif update is not None:
            values["sideband_session_update"] = update

    if values.get("require_principal") and not values.get("platform_auth"):
        errors.append(
            "REQUIRE_PRINCIPAL=true needs App Service authentication (the platform then sets WEBSITE_AUTH_ENABLED): "
            "without it no client principal can be trusted"
        )
    policy = _session_policy(env, deployment, errors)
    values.update(_tools_and_guardrail(env, errors))
    limits = _limits(env, errors)
    sip = _sip(env, deployment, errors)
    phone_tools = {t.get("name") for t in (sip.session_policy or policy).get("tools") or [] if isinstance(t, Mapping)}
    if sip.enabled and "transfer_call" in phone_tools and not sip.transfer_targets:
        errors.append("the phone calls' policy declares transfer_call: set SIP_TRANSFER_TARGETS (name=tel:+number,...)")
    if values.get("cors_allow_credentials") and "*" in origins:
        errors.append("CORS_ALLOW_CREDENTIALS=true needs named ALLOWED_ORIGINS: browsers refuse credentials with *")
    if errors:
        raise SettingsError("invalid settings: " + "; ".join(errors))
    try:
        storage: StorageConnection | None = storage_connection(env)
    except StorageConfigError:  # routes that need storage say so (health, the archive); the rest work
        storage = None
    return Settings(
        endpoint=endpoint,
        storage=storage,
        deployment=deployment,
        api_key=env.get("AZURE_OPENAI_API_KEY") or None,
        managed_identity_client_id=env.get("AZURE_CLIENT_ID") or None,
        session_policy=policy,
        allowed_origins=origins,
        listener_queue=queue,
        events_table=tables["events_table"],
        sessions_table=tables["sessions_table"],
        limits=limits,
        sip=sip,
        **values,
    )


@dataclass(frozen=True)
class TelemetrySettings:
    connection_string: str | None = None  # APPLICATIONINSIGHTS_CONNECTION_STRING: export to Azure Monitor
    aad_client_id: str | None = None  # ClientId of APPLICATIONINSIGHTS_AUTHENTICATION_STRING; "" system identity
    otlp_endpoint: str | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT: export over OTLP/HTTP (the exporter reads it)
    summary: bool = False  # OTEL_TRACE_SUMMARY: one line per call trace on stdout (the local stack)
    service_name: str = "realtime-gateway"  # OTEL_SERVICE_NAME: cloud_RoleName in Application Insights


def telemetry_settings(env: Mapping[str, str] | None = None) -> TelemetrySettings:
    """The telemetry settings, apart from `load_settings` so a bad one never blocks a call."""
    env = os.environ if env is None else env
    errors: list[str] = []
    values: dict[str, Any] = {}
    conn = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if conn:
        if "InstrumentationKey=" not in conn and "IngestionEndpoint=" not in conn:
            errors.append("APPLICATIONINSIGHTS_CONNECTION_STRING must be App Insights' connection string")
        values["connection_string"] = conn
    auth = env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "").strip()
    if auth:
        parts = dict(p.split("=", 1) for p in auth.split(";") if "=" in p)
        if parts.get("Authorization", "").upper() != "AAD":
            errors.append(f"APPLICATIONINSIGHTS_AUTHENTICATION_STRING must say Authorization=AAD, got {auth!r}")
        values["aad_client_id"] = parts.get("ClientId", "").strip()
    otlp = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if otlp:
        if not re.match(r"^https?://[^/\s]+", otlp):
            errors.append(f"OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL, got {otlp!r}")
        values["otlp_endpoint"] = otlp
    if env.get("OTEL_TRACE_SUMMARY", "").strip():
        values["summary"] = _bool("OTEL_TRACE_SUMMARY", env["OTEL_TRACE_SUMMARY"], errors)
    if env.get("OTEL_SERVICE_NAME", "").strip():
        values["service_name"] = env["OTEL_SERVICE_NAME"].strip()
    if errors:
        raise SettingsError("invalid telemetry settings: " + "; ".join(errors))
    return TelemetrySettings(**values)
