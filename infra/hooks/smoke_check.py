"""azd postdeploy hook for the `api` service: is the deployed gateway healthy?

GETs SERVICE_API_URI (an azd output) + /api/health until it answers 200 with status "ok", retrying
while the new code starts and role assignments propagate (503 names the failing checks). A 401 fails
at once: sign-in (SIGN_IN_ENABLED) is on and /api/health is not among its excluded paths.
SMOKE_CHECK_SECONDS (azd variable, default 180) bounds the wait; 0 skips the check.
Standard library only: it runs with whatever python azd finds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

ORIGIN = re.compile(r"^https://[A-Za-z0-9.-]+(:\d+)?$")


def health_url(env: dict[str, str]) -> str:
    url = (env.get("SERVICE_API_URI") or "").strip().rstrip("/")
    if not ORIGIN.match(url):
        raise SystemExit(f"smoke_check: SERVICE_API_URI must be https://host (run `azd provision` first), got {url!r}")
    return url + "/api/health"


def probe(url: str, timeout: float) -> tuple[int, str]:
    """(status, body) of one GET; status 0 when nothing answered."""
    request = urllib.request.Request(url, headers={"accept": "application/json", "user-agent": "azd-smoke-check"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (https or an explicit --url)
            return response.status, response.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read(65536).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as err:
        return 0, str(err)


def summary(body: str) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:300]
    if isinstance(doc, dict) and isinstance(doc.get("checks"), dict):
        return ", ".join(f"{k}: {v}" for k, v in doc["checks"].items())
    return body[:300]


def check(url: str, seconds: float, interval: float) -> int:
    deadline = time.monotonic() + seconds
    status, body = 0, ""
    while True:
        status, body = probe(url, timeout=min(30.0, max(1.0, seconds)))
        if status == 200:
            print(f"smoke_check: {url} is healthy ({summary(body)})")
            return 0
        if status in (401, 403):
            print(
                f"smoke_check: {url} answered {status}: sign-in is on and /api/health is not reachable without "
                "a token (it must stay in the excluded paths, infra/main.bicep)",
                file=sys.stderr,
            )
            return 1
        if time.monotonic() + interval > deadline:
            break
        print(f"smoke_check: {url} answered {status or 'nothing'} ({summary(body)}); retrying", file=sys.stderr)
        time.sleep(interval)
    print(
        f"smoke_check: {url} still unhealthy after {seconds:g} s: {status or 'no answer'} {summary(body)}",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="health URL to probe (default: SERVICE_API_URI + /api/health)")
    parser.add_argument("--seconds", type=float, help="how long to keep trying (default: SMOKE_CHECK_SECONDS or 180)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between tries")
    args = parser.parse_args(argv)
    seconds = args.seconds
    if seconds is None:
        raw = os.environ.get("SMOKE_CHECK_SECONDS", "").strip() or "180"
        try:
            seconds = float(raw)
        except ValueError:
            raise SystemExit(f"smoke_check: SMOKE_CHECK_SECONDS must be a number of seconds, got {raw!r}") from None
    if seconds <= 0:
        print("smoke_check: skipped (SMOKE_CHECK_SECONDS=0)")
        return 0
    url = args.url or health_url(dict(os.environ))
    return check(url, seconds, max(0.0, args.interval))


if __name__ == "__main__":
    sys.exit(main())
