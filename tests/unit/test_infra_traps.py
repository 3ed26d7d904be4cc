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
