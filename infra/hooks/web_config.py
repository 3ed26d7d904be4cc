"""azd hook for the `web` service: point the deployed page at the function app, then undo it.

`apply` (predeploy) sets `gatewayUrl` in config.json to SERVICE_API_URI (an azd output) and adds
that origin to the CSP `connect-src` of staticwebapp.config.json, so the uploaded page may call
the gateway. The untouched files are kept in .azure/web-config-backup first. `restore`
(postdeploy) puts them back, so the working tree keeps serving the local, same-origin setup.
Runs with the service folder (static_web/) as the working directory unless --dir is given.
Standard library only: it runs with whatever python azd finds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

FILES = ("config.json", "staticwebapp.config.json")
ORIGIN = re.compile(r"^https://[A-Za-z0-9.-]+(:\d+)?$")
DEFAULT_BACKUP = Path(__file__).resolve().parents[2] / ".azure" / "web-config-backup"


def gateway_origin(env: dict[str, str]) -> str:
    url = (env.get("SERVICE_API_URI") or "").strip().rstrip("/")
    if not ORIGIN.match(url):
        raise SystemExit(f"web_config: SERVICE_API_URI must be https://host (run `azd provision` first), got {url!r}")
    return url


def with_connect_src(csp: str, origin: str) -> str:
    """The CSP with `origin` allowed in connect-src (added once; a missing directive is created)."""
    directives = [d.strip() for d in csp.split(";") if d.strip()]
    for i, directive in enumerate(directives):
        name, *sources = directive.split()
        if name.lower() == "connect-src":
            if origin not in sources:
                directives[i] = " ".join([name, *[s for s in sources if s != "'none'"], origin])
            break
    else:
        directives.append(f"connect-src 'self' {origin}")
    return "; ".join(directives)


def apply(site: Path, backup: Path, origin: str) -> None:
    # Keep the first backup: after a failed deploy the files on disk are already patched.
    if not backup.exists():
        backup.mkdir(parents=True)
        for name in FILES:
            if (site / name).exists():
                shutil.copy2(site / name, backup / name)
    config_path = site / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    config["gatewayUrl"] = origin
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    swa_path = site / "staticwebapp.config.json"
    if swa_path.exists():
        swa = json.loads(swa_path.read_text(encoding="utf-8"))
        headers = swa.get("globalHeaders", {})
        if "Content-Security-Policy" in headers:
            headers["Content-Security-Policy"] = with_connect_src(headers["Content-Security-Policy"], origin)
            swa_path.write_text(json.dumps(swa, indent=2) + "\n", encoding="utf-8")
    print(f"web_config: gatewayUrl -> {origin}")


def restore(site: Path, backup: Path) -> None:
    if not backup.exists():
        print("web_config: nothing to restore")
        return
    for name in FILES:
        if (backup / name).exists():
            shutil.copy2(backup / name, site / name)
    shutil.rmtree(backup)
    print("web_config: local config.json and staticwebapp.config.json restored")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("apply", "restore"))
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="the static site folder (default: cwd)")
    parser.add_argument("--backup-dir", type=Path, default=DEFAULT_BACKUP)
    args = parser.parse_args(argv)
    if not (args.dir / "index.html").exists():
        raise SystemExit(f"web_config: {args.dir} is not the static site folder (no index.html)")
    if args.action == "apply":
        apply(args.dir, args.backup_dir, gateway_origin(dict(os.environ)))
    else:
        restore(args.dir, args.backup_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
