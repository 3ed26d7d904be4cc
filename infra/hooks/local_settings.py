"""azd postprovision hook: the provisioned environment's values, ready for running against Azure from here.

Reads `azd env get-values` (the environment named by AZURE_ENV_NAME) and writes under .azure/<env>/:

- local.settings.json: the app's settings for `make run` or `func start` against the Azure OpenAI
  deployment azd provisioned, signed in as yourself (`az login`; azd gave you Cognitive Services
  OpenAI User): its endpoint and deployment, plus every app setting you set with `azd env set`.
  Storage stays local (Azurite), so nothing tried here lands in the deployed archive. To use it:
  `cp .azure/<env>/local.settings.json local.settings.json`.
- audit.env: what `realtime-audit` needs to read the deployed archive as yourself:
  AzureWebJobsStorage__tableServiceUri (the AZURE_STORAGE_TABLE_ENDPOINT output) and any table
  name or price you set. In bash: `set -a; . .azure/<env>/audit.env; set +a`.

Then prints the page's URL (SERVICE_WEB_URI) and the gateway's (SERVICE_API_URI).
Standard library only: it runs with whatever python azd finds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping

ROOT = Path(__file__).resolve().parents[2]
LOCAL_ORIGINS = ("http://127.0.0.1:7071", "http://localhost:7071")
# Read by the app, but meaningful only behind App Service authentication in Azure: locally the app
# refuses REQUIRE_PRINCIPAL=true (no platform can vouch for a principal there).
AZURE_ONLY = {"REQUIRE_PRINCIPAL"}
# What the audit command reads besides the storage connection.
AUDIT_SETTINGS = re.compile(r"^(ARCHIVE_EVENTS_TABLE|ARCHIVE_SESSIONS_TABLE|LIMITS_TABLE|PRICE_\w+)$")
ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def parse_values(text: str) -> dict[str, str]:
    """`azd env get-values` output: JSON (`--output json`) or dotenv lines (KEY="value")."""
    text = text.strip()
    if text.startswith("{"):
        doc = json.loads(text)
        return {str(k): "" if v is None else str(v) for k, v in doc.items()}
    values = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if not m:
            continue
        raw = m.group(2).strip()
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
            raw = raw[1:-1]
            if m.group(2).strip()[0] == '"':
                raw = raw.replace('\\"', '"').replace("\\\\", "\\")
        values[m.group(1)] = raw
    return values


def app_setting_names(settings_source: str, parameters: Mapping) -> set[str]:
    """azd variables (main.parameters.json) that are also settings the app reads (settings.py)."""
    read = set(re.findall(r"\"([A-Z][A-Z0-9_]+)\"", settings_source))
    variables = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", json.dumps(parameters)))
    return (read & variables) - AZURE_ONLY


def local_settings(values: Mapping[str, str], carried: set[str]) -> dict:
    """local.settings.json for the app against the provisioned Azure OpenAI deployment."""
    settings = {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",  # Azurite: local runs stay out of the archive
        "AZURE_OPENAI_ENDPOINT": values.get("AZURE_OPENAI_ENDPOINT", ""),
        "AZURE_OPENAI_DEPLOYMENT": values.get("AZURE_OPENAI_DEPLOYMENT", ""),
    }
    for name in sorted(carried):
        if name in values and name not in settings:
            settings[name] = values[name]
    settings["ALLOWED_ORIGINS"] = ",".join(LOCAL_ORIGINS)  # the page the local host serves
    return {
        "IsEncrypted": False,
        "Values": settings,
        "Host": {"LocalHttpPort": 7071, "CORS": "", "CORSCredentials": False},  # the app answers its own preflights
    }


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def audit_env(values: Mapping[str, str], carried: set[str], env_name: str) -> str:
    """audit.env: the storage endpoint and the audit command's settings, as shell assignments."""
    lines = [
        f"# realtime-audit against the archive of azd environment {env_name!r}, signed in as yourself (az login).",
        f"# bash/zsh: set -a; . .azure/{env_name}/audit.env; set +a",
        "# Written by infra/hooks/local_settings.py after each `azd provision`; edits are overwritten.",
        "AzureWebJobsStorage=",  # a connection string (Azurite's) would win over the identity-based endpoint
        f"AzureWebJobsStorage__tableServiceUri={_quote(values.get('AZURE_STORAGE_TABLE_ENDPOINT', ''))}",
    ]
    for name in sorted(carried):
        if AUDIT_SETTINGS.match(name) and name in values:
            lines.append(f"{name}={_quote(values[name])}")
    return "\n".join(lines) + "\n"


def read_values(env_name: str | None) -> dict[str, str]:
    """The environment's values from azd; the hook's own environment when azd is not on PATH."""
    azd = shutil.which("azd")
    if azd is None:
        print("local_settings: azd not found on PATH; using this process's environment", file=sys.stderr)
        return dict(os.environ)
    command = [azd, "env", "get-values", "--output", "json"]
    if env_name:
        command += ["--environment", env_name]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:  # an azd without --output json: its default is dotenv
        result = subprocess.run(command[:3] + command[5:], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"local_settings: `azd env get-values` failed: {result.stderr.strip()[:500]}")
    return parse_values(result.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the project folder (default: this repository)")
    args = parser.parse_args(argv)
    values = read_values(os.environ.get("AZURE_ENV_NAME") or None)
    env_name = values.get("AZURE_ENV_NAME") or os.environ.get("AZURE_ENV_NAME", "")
    if not ENV_NAME.match(env_name):
        print(f"local_settings: no usable AZURE_ENV_NAME ({env_name!r}); nothing written", file=sys.stderr)
        return 1
    root = args.root.resolve()
    carried = app_setting_names(
        (root / "realtime_gateway" / "settings.py").read_text(encoding="utf-8"),
        json.loads((root / "infra" / "main.parameters.json").read_text(encoding="utf-8")),
    )
    folder = root / ".azure" / env_name
    folder.mkdir(parents=True, exist_ok=True)
    missing = [k for k in ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_DEPLOYMENT") if not values.get(k)]
    if missing:
        print(f"local_settings: {', '.join(missing)} not set yet (provision first); local.settings.json skipped")
    else:
        (folder / "local.settings.json").write_text(
            json.dumps(local_settings(values, carried), indent=2) + "\n", encoding="utf-8"
        )
        print(
            f"local_settings: .azure/{env_name}/local.settings.json: the app against {values['AZURE_OPENAI_ENDPOINT']}"
            " (copy it to local.settings.json, then `make run`)"
        )
    if values.get("AZURE_STORAGE_TABLE_ENDPOINT"):
        (folder / "audit.env").write_text(audit_env(values, carried, env_name), encoding="utf-8")
        print(
            f"local_settings: .azure/{env_name}/audit.env: the archive for realtime-audit "
            f"(set -a; . .azure/{env_name}/audit.env; set +a)"
        )
    else:
        print("local_settings: AZURE_STORAGE_TABLE_ENDPOINT not set yet; audit.env skipped")
    for label, key in (("page", "SERVICE_WEB_URI"), ("gateway", "SERVICE_API_URI")):
        if values.get(key):
            print(f"{label}: {values[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
