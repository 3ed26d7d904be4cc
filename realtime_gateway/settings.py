"""App settings, read once and validated, with messages that name the setting at fault.

Every knob of the app is here so the rest of the package takes a `Settings` and never reads
`os.environ` itself. Names match the app settings in Azure and `local.settings.json`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
QUEUE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"


class SettingsError(ValueError):
    """One or more settings are missing or malformed; the message lists each."""


@dataclass(frozen=True)
class Settings:
    endpoint: str  # https://<resource>.openai.azure.com (no trailing slash)
    deployment: str
    api_key: str | None = None  # only for resources that use keys; identity otherwise
    managed_identity_client_id: str | None = None
    session_policy: Mapping[str, Any] = field(default_factory=dict)  # the `session` object
    client_secret_ttl: int = 600
    allowed_origins: tuple[str, ...] = ()
    webrtc_filter: bool = True
    listener_queue: str = "call-listener"
    events_table: str = "callevents"
    sessions_table: str = "callsessions"
    listener_time_box: int = 480  # seconds; shorter than host.json functionTimeout
    max_call_seconds: int = 3600
    token_route_enabled: bool = True
    require_principal: bool = False
    strict_recording: bool = False
    attach_limit_seconds: int = 15
    sideband_session_update: Mapping[str, Any] | None = None  # sent by the listener on every attach
    http_timeout: float = 20.0  # per upstream request; the whole /connect stays under 230 s

    @property
    def websocket_endpoint(self) -> str:
        return "ws" + self.endpoint[len("http") :]

    def origin_allowed(self, origin: str | None) -> bool:
        if not origin:
            return True  # not a browser cross-origin request (curl, same-origin GET)
        return "*" in self.allowed_origins or origin in self.allowed_origins


def _bool(name: str, raw: str, errors: list[str]) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    errors.append(f"{name} must be true or false, got {raw!r}")
    return False


def _int(name: str, raw: str, lo: int, hi: int, errors: list[str]) -> int:
    try:
        value = int(raw)
    except ValueError:
        errors.append(f"{name} must be a whole number, got {raw!r}")
        return lo
    if not lo <= value <= hi:
        errors.append(f"{name} must be between {lo} and {hi}, got {value}")
    return value


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
    return policy


def _archive_tables(env: Mapping[str, str], errors: list[str]) -> dict[str, str]:
    tables = {}
    for name, attr in (("ARCHIVE_EVENTS_TABLE", "events_table"), ("ARCHIVE_SESSIONS_TABLE", "sessions_table")):
        tables[attr] = env.get(name, "").strip() or str(getattr(Settings, attr))
        if not TABLE_NAME.match(tables[attr]):
            errors.append(f"{name} must match ^[A-Za-z][A-Za-z0-9]{{2,62}}$, got {tables[attr]!r}")
    return tables


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
    for name, attr, lo, hi in (
        ("CLIENT_SECRET_TTL_SECONDS", "client_secret_ttl", 10, 7200),
        ("LISTENER_TIME_BOX_SECONDS", "listener_time_box", 10, 86400),
        ("MAX_CALL_SECONDS", "max_call_seconds", 10, 3600),
        ("ATTACH_LIMIT_SECONDS", "attach_limit_seconds", 1, 600),
    ):
        if env.get(name, "").strip():
            values[attr] = _int(name, env[name].strip(), lo, hi, errors)
    for name, attr in (
        ("WEBRTC_FILTER", "webrtc_filter"),
        ("TOKEN_ROUTE_ENABLED", "token_route_enabled"),
        ("REQUIRE_PRINCIPAL", "require_principal"),
        ("STRICT_RECORDING", "strict_recording"),
    ):
        if env.get(name, "").strip():
            values[attr] = _bool(name, env[name], errors)
    if env.get("HTTP_TIMEOUT_SECONDS", "").strip():
        try:
            values["http_timeout"] = float(env["HTTP_TIMEOUT_SECONDS"])
        except ValueError:
            errors.append(f"HTTP_TIMEOUT_SECONDS must be a number, got {env['HTTP_TIMEOUT_SECONDS']!r}")

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

    policy = _session_policy(env, deployment, errors)
    if errors:
        raise SettingsError("invalid settings: " + "; ".join(errors))
    return Settings(
        endpoint=endpoint,
        deployment=deployment,
        api_key=env.get("AZURE_OPENAI_API_KEY") or None,
        managed_identity_client_id=env.get("AZURE_CLIENT_ID") or None,
        session_policy=policy,
        allowed_origins=origins,
        listener_queue=queue,
        events_table=tables["events_table"],
        sessions_table=tables["sessions_table"],
        **values,
    )
