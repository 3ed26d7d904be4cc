"""Example server-side tools (TOOLS_MODULE=app_tools): one function per tool the session declares.

The listener calls a function by the declared tool's name with the model's arguments as keyword
arguments (validated against the declaration's `parameters` first), on a thread of its own, within
TOOL_TIMEOUT_SECONDS. Return something JSON can encode; raise to tell the model it failed. The
arguments and the result are archived with the call, and the model may say them out loud: return
nothing secret. Declare the tools in the session policy (REALTIME_TOOLS or the policy file), e.g.

  {"type": "function", "name": "current_time", "description": "The current time in a time zone",
   "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}}
  {"type": "function", "name": "calls_recorded", "description": "How many calls the archive holds for a day",
   "parameters": {"type": "object", "properties": {"day": {"type": "string", "minLength": 10, "maxLength": 10}},
                  "required": ["day"]}}
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


def current_time(timezone: str) -> dict[str, str]:
    """The time now in an IANA time zone ("Europe/Paris"); an unknown zone raises, the model hears why."""
    now = datetime.now(ZoneInfo(timezone))
    return {"timezone": timezone, "time": now.strftime("%H:%M"), "date": now.date().isoformat()}


def calls_recorded(day: str) -> dict[str, object]:
    """A lookup in a table the app already has: the number of calls archived on a day (YYYY-MM-DD)."""
    from realtime_gateway.services import get_services  # the app's own archive, built once per process

    datetime.strptime(day, "%Y-%m-%d")  # a malformed day raises ValueError before any query
    return {"day": day, "calls": len(get_services().archive.sessions_on(day.replace("-", "")))}  # PartitionKey YYYYMMDD
