"""Function keys: from FUNCTIONS_KEYS (JSON) or the git-ignored `.local/function-keys.json`.

Shape: {"master": "...", "host": {"name": "key"}, "functions": {"fn": {"name": "key"}}}.
`function` level accepts a key of that function, a host key or the master key; `admin` only
the master key. With neither source, a random set is written to the file on first start.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Mapping
from pathlib import Path


class FunctionKeys:
    def __init__(self, data: dict):
        self.master = data.get("master") or ""
        self.host = dict(data.get("host") or {})
        self.functions = {k: dict(v) for k, v in (data.get("functions") or {}).items()}

    def allows(self, level: str, function: str, presented: str | None) -> bool:
        level = level.lower()
        if level == "anonymous":
            return True
        if not presented:
            return False
        candidates = [self.master]
        if level == "function":
            candidates += list(self.host.values()) + list(self.functions.get(function, {}).values())
        return any(k and hmac.compare_digest(k.encode(), presented.encode()) for k in candidates)


def load_keys(settings: Mapping[str, str], script_root: Path) -> tuple[FunctionKeys, str]:
    """The keys and where they came from (for the log line; the keys themselves are never logged)."""
    raw = settings.get("FUNCTIONS_KEYS", "").strip()
    if raw:
        return FunctionKeys(json.loads(raw)), "FUNCTIONS_KEYS"
    path = script_root / ".local" / "function-keys.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"master": secrets.token_urlsafe(32), "host": {"default": secrets.token_urlsafe(32)}, "functions": {}}
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        path.chmod(0o600)
    return FunctionKeys(json.loads(path.read_text(encoding="utf-8"))), str(path)
