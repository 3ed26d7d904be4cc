"""Deploy-time traps in infra/ that compile fine and bite at `azd up` or later, checked offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from realtime_gateway.settings import QUEUE_NAME, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
MAIN = (ROOT / "infra" / "main.bicep").read_text(encoding="utf-8")
API = (ROOT / "infra" / "app" / "api.bicep").read_text(encoding="utf-8")
PARAMETERS = json.loads((ROOT / "infra" / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
BASE = {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime"}


def decorators_of(param: str) -> str:
    """The decorator lines right above `param <name>` in main.bicep."""
    match = re.search(rf"((?:^@.*\n)*)param {param} ", MAIN, re.M)
    assert match, param
    return match.group(1)


def test_flex_site_config_sets_no_ftps_state():
    # Flex Consumption documents ftpsState as unsupported; the reference template sets only alwaysOn.
    assert not re.search(r"^\s*ftpsState\s*:", API, re.M)


def test_a_listener_queue_name_leaves_room_for_its_poison_queue():
    assert "@maxLength(56)" in decorators_of("listenerQueueName")
    longest = "q" * 56
    assert QUEUE_NAME.match(longest + "-poison")
    assert load_settings({**BASE, "LISTENER_QUEUE": longest}).listener_queue == longest
    with pytest.raises(SettingsError, match="at most 56"):
        load_settings({**BASE, "LISTENER_QUEUE": longest + "q"})


def test_principal_type_comes_from_azd_so_a_service_principal_can_deploy():
    assert PARAMETERS["principalType"]["value"].startswith("${AZURE_PRINCIPAL_TYPE")
    assert re.search(r"^param principalType string", MAIN, re.M)


def test_the_deployment_container_name_is_valid_for_any_app_name():
    line = next(x for x in MAIN.splitlines() if x.startswith("var deploymentStorageContainerName"))
    expected = (
        "replace(replace('app-package-${toLower(take(functionAppName, 32))}-"
        "${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}', '--', '-'), '--', '-')"
    )
    assert line.split(" = ", 1)[1] == expected

    def bicep(app: str) -> str:  # the expression above, step by step
        return f"app-package-{app[:32].lower()}-abcdefg".replace("--", "-").replace("--", "-")

    valid = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]$")  # Azure's container name rule
    for app in ("func-api-abc123", "My-Func--App", "A" * 60, "x-" * 30, "a---b"):
        assert valid.match(bicep(app)), bicep(app)
