"""Import `function_app.app` from a script root and describe its functions from their bindings."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SETTING_REF = re.compile(r"%([^%]+)%")


@dataclass
class FunctionSpec:
    name: str
    func: Callable
    trigger: dict[str, Any]  # the trigger binding, as function.json says it
    outputs: list[dict[str, Any]]  # output bindings other than the HTTP `$return`
    is_async: bool
    params: Mapping[str, inspect.Parameter] = field(default_factory=dict)

    @property
    def trigger_type(self) -> str:
        return self.trigger["type"]


class MissingSetting(ValueError):
    pass


def resolve_setting_refs(value: str, settings: Mapping[str, str]) -> str:
    """`%NAME%` in binding properties is replaced by that app setting, as the real host does."""

    def sub(m):
        if m.group(1) not in settings:
            raise MissingSetting(f"binding refers to app setting %{m.group(1)}% which is not set")
        return settings[m.group(1)]

    return SETTING_REF.sub(sub, value)


def load_functions(script_root: Path, settings: Mapping[str, str]) -> list[FunctionSpec]:
    root = str(script_root.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module("function_app")
    app = getattr(module, "app", None)
    if app is None or not hasattr(app, "get_functions"):
        raise RuntimeError(f"{script_root}/function_app.py defines no `app` (azure.functions.FunctionApp)")
    specs = []
    for fn in app.get_functions():
        # The real host skips a function whose `AzureWebJobs.<name>.Disabled` setting is true.
        if settings.get(f"AzureWebJobs.{fn.get_function_name()}.Disabled", "").lower() in ("1", "true"):
            continue
        # function.json is what the real host reads, so the local host reads the same thing.
        bindings = json.loads(fn.get_function_json())["bindings"]
        for b in bindings:
            for key in ("queueName", "route", "connection", "schedule"):
                if isinstance(b.get(key), str):
                    b[key] = resolve_setting_refs(b[key], settings)
        triggers = [b for b in bindings if b["type"].endswith("Trigger")]
        if len(triggers) != 1:
            raise RuntimeError(f"function {fn.get_function_name()} has {len(triggers)} triggers")
        user = fn.get_user_function()
        outputs = [
            b
            for b in bindings
            if b["direction"].upper() == "OUT" and not (b["type"] == "http" and b["name"] == "$return")
        ]
        specs.append(
            FunctionSpec(
                name=fn.get_function_name(),
                func=user,
                trigger=triggers[0],
                outputs=outputs,
                is_async=inspect.iscoroutinefunction(user),
                params=inspect.signature(user).parameters,
            )
        )
    return specs
