"""The docs' settings table and error table, generated from the code so they cannot drift.

Used two ways:
- as a MkDocs hook (mkdocs.yml `hooks:`): a page line `<!-- generated: settings -->` or
  `<!-- generated: errors -->` is replaced by that table when the site is built (`make docs`);
- `python docs/gen_tables.py settings|errors` prints one table, to look at without building.

**Settings.** `realtime_gateway/settings.py` is parsed with `ast` for every name it reads from the
environment: `env.get("NAME")`, `env["NAME"]`, `"NAME" in env`, the `("NAME", "attribute", _int, low,
high)` rows of its `_given` tables, the `("NAME", "attribute", low, high)` tuples its loops read, `_int/_float/_bool/_json("NAME", ...)` calls and name-to-key maps such as
`PRICE_SETTINGS`. Where the code says which field a name sets (a loop tuple, `values["field"] = ...`,
`... or Limits.table`, `Settings(field=...)`), the default is that field's default, read from the
dataclasses themselves (`Settings`, `Limits`, `TelemetrySettings`, `StorageConnection`). What a
setting means is prose, written here in MEANINGS; tests/unit/test_docs_tables.py fails when a
setting the code reads has no meaning here (or one here is no longer read), and proves every default
and every range in the table against `load_settings` itself. The "In Azure" column comes from
infra/main.parameters.json (azd variables) and the app settings written in infra/main.bicep and
infra/app/api.bicep.

**Errors.** Every `ApiError(status, "code", message)` in `realtime_gateway/`, the calls of its
subclasses (`Refused("code", message, ...)`: the status is the one the subclass passes to
`super().__init__`), `_error(status, "code", ...)` of the HTTP plumbing, and the codes an
`except X as exc: raise ApiError(status, exc.code, ...)` passes on, found at the `X("code", ...)`
calls. A call that only passes another error's status and code along is not a new row.

Standard library and the package itself only.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "realtime_gateway"
SETTINGS_PY = PACKAGE / "settings.py"
PARAMETERS_JSON = ROOT / "infra" / "main.parameters.json"
BICEP_APP_SETTINGS = (ROOT / "infra" / "main.bicep", ROOT / "infra" / "app" / "api.bicep")
SETTING_NAME = re.compile(r"^(?:[A-Z][A-Z0-9]*_)+[A-Z0-9]+$|^AzureWebJobsStorage(?:__\w+)?$")
MARKER = re.compile(r"^<!-- generated: (settings|errors) -->$", re.M)

# ---- what each setting means (prose; the defaults and ranges come from the code) -------------------
# Groups in page order. A setting the code reads that is missing here fails tests/unit/test_docs_tables.py.
MEANINGS: list[tuple[str, dict[str, str]]] = [
    (
        "Azure OpenAI and identity",
        {
            "AZURE_OPENAI_ENDPOINT": "`https://<resource>.openai.azure.com`, scheme and host only (required, or "
            "`AZURE_OPENAI_RESOURCE`)",
            "AZURE_OPENAI_RESOURCE": "just the resource name, when `AZURE_OPENAI_ENDPOINT` is not set",
            "AZURE_OPENAI_DEPLOYMENT": "the realtime deployment's name (required): the session's `model`",
            "AZURE_OPENAI_API_KEY": "only for a resource that uses keys; replaces the identity",
            "AZURE_CLIENT_ID": "a user-assigned identity's client id (`ManagedIdentityCredential`); unset: "
            "`DefaultAzureCredential` (your `az login` locally)",
            "SERVICE_SESSION_SECONDS": "the service's own session cap (Azure: 30 minutes); with `MAX_CALL_SECONDS` "
            "it gives `x-call-expires-at`",
            "HTTP_TIMEOUT_SECONDS": "per upstream request; the whole `/api/connect` gets twice this plus 5 s, at most "
            "200 s (Azure cuts HTTP responses at 230 s)",
        },
    ),
    (
        "Session policy (what the model is told; never sent to the browser)",
        {
            "REALTIME_SESSION_POLICY_FILE": "a JSON file with the `session` object; the settings below go on top",
            "REALTIME_INSTRUCTIONS": "the instructions",
            "REALTIME_VOICE": "the output voice",
            "REALTIME_TURN_DETECTION": "JSON: `audio.input.turn_detection`",
            "REALTIME_INPUT_TRANSCRIPTION": "JSON: `audio.input.transcription` (turn it on to archive what the "
            "user said)",
            "REALTIME_TOOLS": "JSON list: the tools' declarations ([Tools and guardrails](tools.md))",
            "CLIENT_SECRET_TTL_SECONDS": "lifetime of a client secret minted per request (`/api/token`, and "
            "`/api/connect` when the pool is empty)",
            "WEBRTC_FILTER": "`?webrtcfilter=on` on the SDP post: the browser's data channel gets 11 event types only",
            "LISTENER_SESSION_UPDATE": "JSON object: a `session.update` the listener sends on every attach",
            "POLICY_ENFORCE": "the listener restores a session the browser changed and cancels responses it "
            "overrode ([Cost and abuse control](limits.md#the-session-policy-holds))",
            "POLICY_MAX_VIOLATIONS": "policy violations before the call is hung up (`end_reason=policy`); 0 never",
        },
    ),
    (
        "Browsers, CORS and sign-in",
        {
            "ALLOWED_ORIGINS": "comma-separated exact origins (`https://host[:port]`); `*` only if written; other "
            "origins get 403",
            "CORS_ALLOWED_HEADERS": "comma-separated request headers allowed beyond the gateway's own",
            "CORS_ALLOW_CREDENTIALS": "`Access-Control-Allow-Credentials: true` for allowed origins (cookies, "
            "App Service authentication); needs named origins",
            "TOKEN_ROUTE_ENABLED": "`GET /api/token`; off, it answers 404 `token_route_disabled`",
            "REQUIRE_PRINCIPAL": "refuse requests without a signed-in principal (401); needs App Service "
            "authentication",
            "WEBSITE_AUTH_ENABLED": "set by the platform when App Service authentication is on: only then is "
            "`x-ms-client-principal` trusted. Not yours to set",
            "HEALTH_CACHE_SECONDS": "`GET /api/health` asks storage and the identity at most this often per instance",
        },
    ),
    (
        "Listener and archive",
        {
            "LISTENER_QUEUE": "the listener's queue (its `-poison` queue too); the bindings read `%LISTENER_QUEUE%`, "
            "so it must be set in Azure",
            "ARCHIVE_EVENTS_TABLE": "one row per archived event",
            "ARCHIVE_SESSIONS_TABLE": "one row per call, its day index and retention's tombstones",
            "LISTENER_TIME_BOX_SECONDS": "how long one invocation listens before it hands the call over; shorter "
            "than host.json `functionTimeout`",
            "MAX_CALL_SECONDS": "the listener hangs a call up this long after it started",
            "MAX_CONVERSATION_SECONDS": "the longest a conversation's calls may last together (a call that rolls "
            "over to a new one continues its conversation)",
            "STRICT_RECORDING": "hang up a call the listener could not attach to within `ATTACH_LIMIT_SECONDS`",
            "ATTACH_LIMIT_SECONDS": "see `STRICT_RECORDING`",
            "LISTENER_MAX_CONCURRENT": "listener threads per worker process (at least host.json batchSize + "
            "newBatchThreshold)",
            "ARCHIVE_RETENTION_DAYS": "the retention timer deletes calls created more than this many days ago; "
            "0 keeps every call",
            "AUDIT_API_ENABLED": "the read-only `/api/audit/*` routes (function keys); off, they answer 404",
        },
    ),
    (
        "Client secrets minted ahead",
        {
            "SECRET_POOL_SIZE": "secrets kept minted ahead per worker for `/api/connect`; 0 turns the pool off",
            "SECRET_POOL_TTL_SECONDS": "lifetime asked for each pooled secret",
            "SECRET_POOL_LEAD_SECONDS": "a pooled secret with less than this left is replaced, never used (at most "
            "half the TTL)",
        },
    ),
    (
        "Tools and guardrails",
        {
            "TOOLS_MODULE": "the module with the tools' functions (`app_tools` is the example); empty: no tools",
            "TOOL_TIMEOUT_SECONDS": "each tool call's time limit",
            "GUARDRAIL_BLOCKED_TERMS": "comma-separated whole words, or a JSON list of regular expressions",
            "GUARDRAIL_HOOK": "`module:function` called with a response's text so far; a true value is a hit",
            "GUARDRAIL_NOTICE": "what the assistant says after a cancelled answer; empty: nothing",
            "GUARDRAIL_MAX_HITS": "guardrail hits before the call is hung up; 0 never",
        },
    ),
    (
        "Limits and budgets (0 switches a limit off)",
        {
            "LIMITS_TABLE": "the table that holds rates, active-call slots and day totals",
            "RATE_LIMIT_PER_MINUTE": "`/api/connect` and `/api/token` requests a minute per client",
            "CONTROL_RATE_PER_MINUTE": "hang-up and call-state requests a minute per client",
            "MAX_ACTIVE_CALLS": "calls not yet ended, whole app (at most 400 per slot shard)",
            "LIMIT_SLOT_SHARDS": "rows the active-call slots are spread over",
            "CALL_SLOT_ATTACH_SECONDS": "a slot whose call never attached expires after this",
            "DAILY_CALL_MINUTES": "call minutes per UTC day, whole app",
            "DAILY_TOKEN_BUDGET": "billed tokens per UTC day, whole app",
            "DAILY_SPEND_LIMIT_USD": "estimated spend per UTC day, whole app: usage priced plus running minutes",
            "PRINCIPAL_DAILY_CALL_MINUTES": "call minutes per UTC day per signed-in principal",
            "PRINCIPAL_DAILY_TOKEN_BUDGET": "billed tokens per UTC day per signed-in principal",
            "PRINCIPAL_DAILY_SPEND_LIMIT_USD": "estimated spend per UTC day per signed-in principal",
            "PRICE_RUNNING_CALL_PER_MINUTE": "USD reserved per minute of a running call not yet charged",
            "RATE_LIMIT_FAIL_OPEN": "limits table unreachable: let requests through an unchecked rate",
            "BUDGET_FAIL_OPEN": "limits table unreachable: let calls through unchecked budgets and cap (else "
            "503 `limits_unavailable`)",
            "BUDGET_HANGUP_RUNNING": "a spent day budget also hangs up the calls still running",
            "CLIENT_IP_HEADER": "the header that carries the client address",
            "CLIENT_IP_HOP": "which entry of it, counted from the right (1: the one the platform appended)",
        },
    ),
    (
        "Prices (USD; the usage estimate and the spend budgets)",
        {
            "PRICE_INPUT_TEXT_PER_MTOK": "per million input text tokens",
            "PRICE_INPUT_AUDIO_PER_MTOK": "per million input audio tokens",
            "PRICE_CACHED_INPUT_PER_MTOK": "per million cached input tokens",
            "PRICE_OUTPUT_TEXT_PER_MTOK": "per million output text tokens",
            "PRICE_OUTPUT_AUDIO_PER_MTOK": "per million output audio tokens",
            "PRICE_TRANSCRIPTION_PER_MTOK": "per million transcription tokens (token-billed models)",
            "PRICE_TRANSCRIPTION_PER_MINUTE": "per minute of transcribed audio (duration-billed models)",
        },
    ),
    (
        "Phone calls over SIP (off while SIP_WEBHOOK_SECRET is unset)",
        {
            "SIP_WEBHOOK_SECRET": "the signing secret (`whsec_…`) of the service's `realtime.call.incoming` webhook; "
            "set, `POST /api/sip/incoming` takes phone calls. In Azure only with `SIP_ENABLED`: a Key Vault "
            "reference, the secret written by the postprovision hook ([Deploying](phone.md#deploying-sip_enabled))",
            "SIP_CALLER_PRIVACY": "how a caller's number is stored: `hash` (salted HMAC-SHA256), `mask` or `keep`",
            "SIP_CALLER_SALT": "the key of the callers' hashes; at least 16 characters when phone calls are on. In "
            "Azure only with `SIP_ENABLED`: a Key Vault reference, generated once by the postprovision hook",
            "SIP_ALLOWED_NUMBERS": "comma-separated `[from:|to:]+number[*]` (a trailing `*` for a prefix); empty: "
            "every number",
            "SIP_BLOCKED_NUMBERS": "the same form; a match is declined",
            "SIP_SESSION_POLICY_FILE": "a JSON session policy for phone calls; unset: the browser calls' policy",
            "SIP_TRANSFER_TARGETS": "where the built-in `transfer_call` tool may send a phone call: comma-separated "
            "`name=tel:+number` or `name=sip:user@host`; the model asks by name or number, nothing else is "
            "referred ([Transfer and hang-up](phone.md#transfer-and-hang-up))",
        },
    ),
    (
        "Storage connection (as the Functions host reads it)",
        {
            "AzureWebJobsStorage": "a connection string (Azurite locally; `UseDevelopmentStorage=true` is Azurite on "
            "its default ports). Wins over the identity group below",
            "AzureWebJobsStorage__tableServiceUri": "identity-based: the table endpoint",
            "AzureWebJobsStorage__accountName": "identity-based: the account, when no table endpoint is given",
            "AzureWebJobsStorage__clientId": "identity-based: a user-assigned identity's client id",
        },
    ),
    (
        "Telemetry (a bad value is logged and leaves telemetry off; it never stops a call)",
        {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "export traces, metrics and logs to Application Insights",
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "`ClientId=<identity>;Authorization=AAD`: Entra "
            "authentication for the exporter",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "export over OTLP/HTTP to any collector",
            "OTEL_TRACE_SUMMARY": "one line per finished call trace on stdout (`make run` turns it on)",
            "OTEL_SERVICE_NAME": "the service name (`cloud_RoleName`)",
        },
    ),
]
# Defaults the code does not state as a field default (the session policy is built, not a field).
DEFAULT_TEXT = {
    "AZURE_OPENAI_ENDPOINT": "required",
    "AZURE_OPENAI_DEPLOYMENT": "required",
    "REALTIME_INSTRUCTIONS": "`You are a helpful assistant.`",
    "REALTIME_VOICE": "`marin`",
    "AzureWebJobsStorage__tableServiceUri": "unset",
    "AzureWebJobsStorage__accountName": "unset",
    "AzureWebJobsStorage__clientId": "unset",
}
# App settings whose azd variable has another name (the template derives the setting from it).
AZD_ALIASES = {
    "ALLOWED_ORIGINS": "EXTRA_ALLOWED_ORIGINS",
    "AZURE_OPENAI_DEPLOYMENT": "AZURE_OPENAI_DEPLOYMENT_NAME",
    "AZURE_OPENAI_ENDPOINT": "AZURE_OPENAI_EXISTING_ENDPOINT",
}
PARSERS = {"_int": "int", "_float": "float", "_bool": "bool", "_json": "json"}


# ---- settings: what the code reads ----------------------------------------------------------------
@dataclass
class Setting:
    name: str
    reader: str  # the function that reads it: load_settings' helpers, telemetry_settings, storage_connection
    field: str | None = None  # the dataclass field it sets ("listener_queue"), or "prices.<key>"
    owner: str | None = None  # the dataclass that field belongs to, where the code says
    kind: str = "text"  # int | float | bool | json | text
    low: float | None = None
    high: float | None = None

    @property
    def loader(self) -> str:
        """Which public function a caller uses to see this setting's effect."""
        if self.reader.startswith("telemetry"):
            return "telemetry_settings"
        if self.reader.startswith("storage"):
            return "storage_connection"
        return "load_settings"


def _number(node: ast.AST) -> float | None:
    """A numeric literal, including `10**9` and `-1`; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _number(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.BinOp):
        left, right = _number(node.left), _number(node.right)
        if left is None or right is None:
            return None
        ops = {ast.Pow: lambda a, b: a**b, ast.Mult: lambda a, b: a * b, ast.Add: lambda a, b: a + b}
        op = ops.get(type(node.op))
        return op(left, right) if op else None
    return None


def _name_const(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and SETTING_NAME.match(node.value):
        return node.value
    return None


def _is_env(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "env"


def _env_read(node: ast.AST) -> str | None:
    """NAME when `node` is env.get("NAME", ...), env["NAME"] or "NAME" in env."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and _is_env(node.func.value)
        and node.args
    ):
        return _name_const(node.args[0])
    if isinstance(node, ast.Subscript) and _is_env(node.value):
        return _name_const(node.slice)
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.In):
        return _name_const(node.left) if _is_env(node.comparators[0]) else None
    return None


def _names_in(node: ast.AST) -> set[str]:
    """Setting names read directly inside `node` (env access or a parser call naming it)."""
    found = set()
    for sub in ast.walk(node):
        name = _env_read(sub)
        if name is None and isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.args:
            name = _name_const(sub.args[0]) if sub.func.id in PARSERS else None
        if name:
            found.add(name)
    return found


def _values_key(target: ast.AST) -> str | None:
    """`field` when target is values["field"]."""
    if (
        isinstance(target, ast.Subscript)
        and isinstance(target.value, ast.Name)
        and target.value.id == "values"
        and isinstance(target.slice, ast.Constant)
        and isinstance(target.slice.value, str)
    ):
        return target.slice.value
    return None


def _function_settings(
    func: ast.FunctionDef, module_dicts: Mapping[str, ast.Dict], classes: set[str]
) -> Iterator[Setting]:
    found: dict[str, Setting] = {}
    depends: dict[str, set[str]] = {}  # local variable -> setting names read directly where it is assigned
    # the dataclass the function's `values` dict becomes: `return Limits(..., **values)`
    owner = next(
        (
            c.func.id
            for c in ast.walk(func)
            if isinstance(c, ast.Call)
            and isinstance(c.func, ast.Name)
            and c.func.id in classes
            and any(kw.arg is None for kw in c.keywords)
        ),
        None,
    )

    def note(name: str, **kw: Any) -> None:
        s = found.setdefault(name, Setting(name, func.name))
        if kw.get("field") is not None and s.field is None and "owner" not in kw:
            kw["owner"] = owner
        for key, value in kw.items():
            if value is not None and getattr(s, key) in (None, "text"):
                setattr(s, key, value)

    def rows(elts: list[ast.expr], kind: str | None, body_range: tuple[float | None, float | None]) -> None:
        """("NAME", "attr"[, lo, hi]) rows of a table of settings read the same way."""
        for row in elts:
            if not isinstance(row, ast.Tuple) or not row.elts or not _name_const(row.elts[0]):
                continue
            attr = row.elts[1].value if len(row.elts) > 1 and isinstance(row.elts[1], ast.Constant) else None
            low = _number(row.elts[2]) if len(row.elts) > 2 else body_range[0]
            high = _number(row.elts[3]) if len(row.elts) > 3 else body_range[1]
            note(str(row.elts[0].value), field=attr, kind=kind, low=low, high=high)

    for node in ast.walk(func):
        name = _env_read(node)
        if name:
            note(name)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in PARSERS and node.args:
            name = _name_const(node.args[0])
            if name:
                low_high = [_number(a) for a in node.args[2:4]] if node.func.id in ("_int", "_float") else []
                note(name, kind=PARSERS[node.func.id], **dict(zip(("low", "high"), low_high, strict=False)))
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple):
            parsers = {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            kind = next((PARSERS[p] for p in PARSERS if p in parsers), None)
            # a range the loop body passes for every row: _float(name, raw, 0, 10**9, errors)
            body_range = next(
                (
                    (_number(c.args[2]), _number(c.args[3]))
                    for c in ast.walk(node)
                    if isinstance(c, ast.Call)
                    and isinstance(c.func, ast.Name)
                    and c.func.id in ("_int", "_float")
                    and len(c.args) > 3
                    and isinstance(c.args[0], ast.Name)
                ),
                (None, None),
            )
            rows(node.iter.elts, kind, body_range)
        # values |= _given(env, errors, ("NAME", "attr", _int, lo, hi), ("NAME", "attr", _bool), ...)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_given":
            for row in node.args[2:]:
                if isinstance(row, ast.Tuple) and len(row.elts) > 2 and isinstance(row.elts[2], ast.Name):
                    read = PARSERS.get(row.elts[2].id)
                    rows([ast.Tuple(elts=row.elts[:2] + row.elts[3:])], read, (None, None))
        if isinstance(node, ast.Name) and node.id in module_dicts:  # e.g. PRICE_SETTINGS.items()
            for key, value in zip(module_dicts[node.id].keys, module_dicts[node.id].values, strict=True):
                if _name_const(key) and isinstance(value, ast.Constant):
                    note(key.value, field=f"prices.{value.value}", kind="float")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("int", "float"):
            for name in _names_in(node):  # float(env["HTTP_TIMEOUT_SECONDS"])
                note(name, kind=node.func.id)
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):  # env.get("X", "").strip() or Limits.table
            for name in _names_in(node):
                for value in node.values:
                    if (
                        isinstance(value, ast.Attribute)
                        and isinstance(value.value, ast.Name)
                        and value.value.id in classes
                    ):
                        note(name, field=value.attr, owner=value.value.id)

    # which field a name lands in: statement by statement, through local variables one step deep
    def reads(expr: ast.AST) -> set[str]:
        """Names read in `expr` directly, else through the local variables it uses."""
        return _names_in(expr) or set().union(
            *(depends.get(n.id, set()) for n in ast.walk(expr) if isinstance(n, ast.Name))
        )

    for stmt in ast.walk(func):
        if isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None:
            target = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target
            direct = _names_in(stmt.value)
            if isinstance(target, ast.Name) and direct:
                depends[target.id] = depends.get(target.id, set()) | direct
            key = _values_key(target)
            if key:
                for name in reads(stmt.value):
                    note(name, field=key)
            if isinstance(target, ast.Name) and target.id == "values" and isinstance(stmt.value, ast.Dict):
                for k, v in zip(stmt.value.keys, stmt.value.values, strict=True):  # values = {"field": var}
                    if isinstance(k, ast.Constant) and isinstance(k.value, str):
                        for name in reads(v):
                            note(name, field=k.value)
        if isinstance(stmt, ast.Call) and isinstance(stmt.func, ast.Name) and stmt.func.id in classes:
            for kw in stmt.keywords:
                if kw.arg is not None:
                    for name in reads(kw.value):
                        note(name, field=kw.arg, owner=stmt.func.id)
    # a range checked by hand: `if not 0.1 <= values["tool_timeout"] <= 120`
    for node in ast.walk(func):
        if isinstance(node, ast.Compare) and len(node.ops) == 2 and len(node.comparators) == 2:
            key, low, high = _values_key(node.comparators[0]), _number(node.left), _number(node.comparators[1])
            if key and low is not None and high is not None:
                for s in found.values():
                    if s.field == key and s.low is None:
                        s.low, s.high = low, high
    yield from found.values()


def read_settings(source: Path = SETTINGS_PY) -> list[Setting]:
    """Every setting the module reads, in source order of first appearance."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    module_dicts = {
        stmt.targets[0].id: stmt.value
        for stmt in tree.body
        if isinstance(stmt, ast.Assign)
        and len(stmt.targets) == 1
        and isinstance(stmt.targets[0], ast.Name)
        and isinstance(stmt.value, ast.Dict)
        and stmt.value.keys
        and all(_name_const(k) for k in stmt.value.keys)
    }
    classes = {
        stmt.name
        for stmt in tree.body
        if isinstance(stmt, ast.ClassDef) and any("dataclass" in ast.unparse(d) for d in stmt.decorator_list)
    }
    out: dict[str, Setting] = {}
    for func in tree.body:
        if isinstance(func, ast.FunctionDef):
            for s in _function_settings(func, module_dicts, classes):
                if s.name in out:
                    for key in ("field", "owner", "low", "high"):
                        if getattr(out[s.name], key) is None:
                            setattr(out[s.name], key, getattr(s, key))
                    if out[s.name].kind == "text":
                        out[s.name].kind = s.kind
                else:
                    out[s.name] = s
    return list(out.values())


def _settings_module() -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("realtime_gateway.settings")


def field_default(setting: Setting) -> tuple[bool, Any]:
    """(known, value): the default of the dataclass field the setting sets."""
    if not setting.field:
        return False, None
    module = _settings_module()
    if setting.field.startswith("prices."):
        return True, dict(module.Limits().prices)[setting.field.split(".", 1)[1]]
    owners = {"load_settings": ("Settings", "Limits"), "telemetry_settings": ("TelemetrySettings",)}
    for owner in [setting.owner] if setting.owner else owners.get(setting.loader, ("StorageConnection",)):
        cls = getattr(module, owner, None)
        if cls is None or not dataclasses.is_dataclass(cls):
            continue
        for f in dataclasses.fields(cls):
            if f.name == setting.field:
                if f.default is not dataclasses.MISSING:
                    return True, f.default
                if f.default_factory is not dataclasses.MISSING:
                    return True, f.default_factory()
    return False, None


def env_text(value: Any) -> str | None:
    """The setting's text that means `value` (None when it has none: unset)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value) if value else ""
    return str(value)


def default_cell(setting: Setting) -> str:
    if setting.name in DEFAULT_TEXT:
        return DEFAULT_TEXT[setting.name]
    known, value = field_default(setting)
    text = env_text(value) if known else None
    if text is None:
        return "unset"
    if text == "":
        return "empty"
    return f"`{text}`"


def _thousands(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:g}"


def accepted_cell(setting: Setting) -> str:
    if setting.kind in ("int", "float") and setting.low is not None and setting.high is not None:
        whole = "whole number" if setting.kind == "int" else "number"
        return f"{whole}, {_thousands(setting.low)} to {_thousands(setting.high)}"
    if setting.field and setting.field.startswith("prices."):
        return "number, 0 or more"
    return {"bool": "`true` or `false`", "json": "JSON", "int": "whole number", "float": "number"}.get(setting.kind, "")


def azd_variables(path: Path = PARAMETERS_JSON) -> dict[str, str]:
    """parameter -> the azd variable that feeds it, from main.parameters.json."""
    params = json.loads(path.read_text(encoding="utf-8")).get("parameters", {})
    out = {}
    for param, entry in params.items():
        m = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:=[^}]*)?\}", str(entry.get("value", "")))
        if m:
            out[param] = m.group(1)
    return out


def bicep_app_settings(files: Iterable[Path] = BICEP_APP_SETTINGS) -> tuple[dict[str, str], dict[str, str]]:
    """(app setting -> its Bicep expression, Bicep variable -> its one-line expression), from the
    object literals of the templates' app settings and their `var` lines."""
    settings: dict[str, str] = {}
    bicep_vars: dict[str, str] = {}
    for path in files:
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"^  ([A-Za-z][A-Za-z0-9_]*): (.+?)\s*(?://.*)?$", text, re.M):
            if SETTING_NAME.match(m.group(1)):
                settings.setdefault(m.group(1), m.group(2))
        for m in re.finditer(r"^var (\w+) = (.+)$", text, re.M):
            bicep_vars.setdefault(m.group(1), m.group(2))
    return settings, bicep_vars


# azd's own variables: every resource depends on them, so naming them says nothing
AZD_ENVIRONMENT = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_PRINCIPAL_ID", "AZURE_PRINCIPAL_TYPE"}


def _azd_inputs(expr: str, variables: Mapping[str, str], bicep_vars: Mapping[str, str], seen: set[str]) -> list[str]:
    """The azd variables a Bicep expression depends on, through its `var`s."""
    out: list[str] = []
    for ident in re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\b", re.sub(r"'[^']*'", "''", expr)):
        if ident in variables:
            out.append(variables[ident])
        elif ident in bicep_vars and ident not in seen:
            seen.add(ident)
            out += _azd_inputs(bicep_vars[ident], variables, bicep_vars, seen)
    return [v for v in dict.fromkeys(out) if v not in AZD_ENVIRONMENT]


def in_azure_cell(
    setting: Setting, variables: Mapping[str, str], app: Mapping[str, str], bicep_vars: Mapping[str, str]
) -> str:
    by_var = set(variables.values())
    expr = app.get(setting.name)
    if expr is None:
        return "azd" if setting.name in by_var else ""
    literal = re.fullmatch(r"'([^']*)'", expr)
    if literal:
        shown = re.sub(r"\$\{(\w+)\}", r"<\1>", literal.group(1))
        return f"infra: `{shown}`"
    used = _azd_inputs(expr, variables, bicep_vars, set())
    if used == [setting.name]:
        return "azd"
    alias = AZD_ALIASES.get(setting.name)
    if alias in by_var:
        used = [alias, *[u for u in used if u != alias]]
    return "infra" + (": from " + ", ".join(f"`{u}`" for u in used) if used else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _prose(text: str) -> str:
    """A message as table text: Markdown's own characters escaped, so it reads as written."""
    for char in "\\`*_[]":
        text = text.replace(char, "\\" + char)
    # braces as entities: a trailing `{name}` would otherwise be read as an attribute list (attr_list)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace("{", "&#123;").replace("}", "&#125;")
    return _cell(text)


def settings_table() -> str:
    settings = {s.name: s for s in read_settings()}
    variables, (app, bicep_vars) = azd_variables(), bicep_app_settings()
    described = {name for _, group in MEANINGS for name in group}
    groups = [*MEANINGS, ("Not described yet", {n: "" for n in settings if n not in described})]
    lines: list[str] = []
    for title, group in groups:
        rows = [name for name in group if name in settings]
        if not rows:
            continue
        lines += [f"### {title}", "", "| Setting | Default | Accepted | In Azure | Meaning |", "|---|---|---|---|---|"]
        for name in rows:
            s = settings[name]
            cells = (
                f"`{name}`",
                default_cell(s),
                accepted_cell(s),
                in_azure_cell(s, variables, app, bicep_vars),
                group[name],
            )
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ---- errors: every ApiError the package raises ----------------------------------------------------
@dataclass
class ErrorUse:
    status: int
    code: str
    message: str
    module: str  # relative to realtime_gateway/
    retry_after: bool = False


@dataclass
class _Maker:
    """A callable that makes an ApiError: which argument is the status, the code and the message."""

    status: int | None = None  # fixed status (a subclass), or None: taken from argument `status_at`
    status_at: int | None = 0
    code_at: int = 1
    message_at: int = 2
    retry_after: bool = False
    params: list[str] = field(default_factory=list)


def _py_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _message(node: ast.AST | None) -> str:
    if node is None:
        return ""
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            elif isinstance(v, ast.FormattedValue):
                parts.append("{" + ast.unparse(v.value) + "}")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _message(node.left) + _message(node.right)
    if isinstance(node, ast.IfExp):
        return _message(node.body)
    return "{" + ast.unparse(node) + "}"


def _has_retry_after(nodes: Iterable[ast.AST]) -> bool:
    return any(
        isinstance(n, ast.Constant) and n.value == "Retry-After" for node in nodes for n in ast.walk(node) if node
    )


def _arg(call: ast.Call, index: int | None, name: str) -> ast.AST | None:
    if index is not None and index < len(call.args):
        return call.args[index]
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def _makers(trees: Mapping[Path, ast.Module]) -> dict[str, _Maker]:
    makers = {"ApiError": _Maker(params=["status", "code", "message", "headers"]), "_error": _Maker()}
    for tree in trees.values():
        for cls in ast.walk(tree):
            if not isinstance(cls, ast.ClassDef) or cls.name in makers:
                continue
            if not any(isinstance(b, ast.Name) and b.id == "ApiError" for b in cls.bases):
                continue
            init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
            if init is None:
                makers[cls.name] = makers["ApiError"]
                continue
            params = [a.arg for a in init.args.args[1:]]
            sup = next(
                (
                    c
                    for c in ast.walk(init)
                    if isinstance(c, ast.Call)
                    and isinstance(c.func, ast.Attribute)
                    and c.func.attr == "__init__"
                    and isinstance(c.func.value, ast.Call)
                ),
                None,
            )
            if sup is None or len(sup.args) < 3:
                continue

            def where(node: ast.AST, params: list[str] = params) -> int | None:
                return params.index(node.id) if isinstance(node, ast.Name) and node.id in params else None

            fixed = _number(sup.args[0])
            code_at, message_at = where(sup.args[1]), where(sup.args[2])
            if code_at is None or message_at is None:
                continue
            makers[cls.name] = _Maker(
                status=int(fixed) if fixed is not None else None,
                status_at=None if fixed is not None else where(sup.args[0]),
                code_at=code_at,
                message_at=message_at,
                retry_after=_has_retry_after(sup.args[3:] + [kw.value for kw in sup.keywords]),
                params=params,
            )
    return makers


def _code_classes(trees: Mapping[Path, ast.Module]) -> dict[str, list[tuple[str, str]]]:
    """Exception classes with a `code` parameter (BadRange) -> [(code, message)] of their calls."""
    classes: dict[str, int] = {}
    for tree in trees.values():
        for cls in ast.walk(tree):
            if isinstance(cls, ast.ClassDef):
                init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
                params = [a.arg for a in init.args.args[1:]] if init else []
                if "code" in params:
                    classes[cls.name] = params.index("code")
    calls: dict[str, list[tuple[str, str]]] = {name: [] for name in classes}
    for tree in trees.values():
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in classes:
                code = _arg(call, classes[call.func.id], "code")
                if isinstance(code, ast.Constant) and isinstance(code.value, str):
                    message = _arg(call, classes[call.func.id] + 1, "message")
                    calls[call.func.id].append((code.value, _message(message)))
    return calls


def read_errors() -> tuple[list[ErrorUse], list[str]]:
    """(every error the package can answer with, the calls whose code could not be read: each should
    pass another error's code along)."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in _py_files()}
    makers, coded = _makers(trees), _code_classes(trees)
    uses: list[ErrorUse] = []
    unread: list[str] = []
    for path, tree in trees.items():
        module = path.relative_to(PACKAGE).as_posix()
        handlers: dict[str, str] = {}  # `except X as exc` -> X
        for handler in ast.walk(tree):
            if isinstance(handler, ast.ExceptHandler) and handler.name and isinstance(handler.type, ast.Name):
                handlers[handler.name] = handler.type.id
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call):
                continue
            fname = call.func.id if isinstance(call.func, ast.Name) else None
            if fname is None and isinstance(call.func, ast.Attribute):
                fname = call.func.attr
            maker = makers.get(fname or "")
            if maker is None or (fname == "_error" and module != "gateway/http.py"):
                continue
            status_node = _arg(call, maker.status_at, "status") if maker.status is None else None
            status = maker.status if maker.status is not None else _number(status_node) if status_node else None
            code_node = _arg(call, maker.code_at, "code")
            message = _message(_arg(call, maker.message_at, "message"))
            retry = maker.retry_after or _has_retry_after(call.args[3:] + [kw.value for kw in call.keywords])
            where = f"{module}:{call.lineno}"
            if status is None:
                unread.append(where)
                continue
            if isinstance(code_node, ast.Constant) and isinstance(code_node.value, str):
                uses.append(ErrorUse(int(status), code_node.value, message, module, retry))
            elif (
                isinstance(code_node, ast.Attribute)
                and code_node.attr == "code"
                and isinstance(code_node.value, ast.Name)
                and handlers.get(code_node.value.id) in coded
            ):
                for code, msg in coded[handlers[code_node.value.id]]:
                    uses.append(ErrorUse(int(status), code, msg, module, retry))
            else:
                unread.append(where)
    return uses, unread


def errors_table() -> str:
    uses, _ = read_errors()
    rows: dict[tuple[int, str], list[ErrorUse]] = {}
    for use in uses:
        rows.setdefault((use.status, use.code), []).append(use)
    lines = ["| Status | Code | Retry-After | Message | Raised in |", "|---|---|---|---|---|"]
    for (status, code), group in sorted(rows.items()):
        messages = list(dict.fromkeys(u.message for u in group))
        modules = list(dict.fromkeys(u.module for u in group))
        cells = (
            str(status),
            f"`{code}`",
            "yes" if any(u.retry_after for u in group) else "",
            "<br>".join(_prose(m) for m in messages),
            ", ".join(f"`{m}`" for m in modules),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---- MkDocs hook ----------------------------------------------------------------------------------
TABLES = {"settings": settings_table, "errors": errors_table}


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each `<!-- generated: NAME -->` line with that table."""
    return MARKER.sub(lambda m: TABLES[m.group(1)]().rstrip("\n"), markdown)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in TABLES:
        print(f"usage: python docs/gen_tables.py {{{'|'.join(TABLES)}}}", file=sys.stderr)
        return 2
    sys.stdout.write(TABLES[args[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main())
