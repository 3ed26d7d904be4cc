"""Start and stop Azurite (tables, queues, blobs) from the npm package, on chosen ports.

`npx azurite` leaves its node child running under SIGTERM, so we start node on the script
directly in its own process group and signal the group. With telemetry on, Azurite closes its ports
at once on SIGTERM but then lingers ~15 s trying to reach its telemetry service (offline here), so
it runs with --disableTelemetry and is SIGKILLed soon after its ports close.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from local.processes import die_with_parent, free_port, stop_group, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# The well-known development key every Azurite install accepts; not a secret.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Azurite:
    blob_port: int
    queue_port: int
    table_port: int
    process: subprocess.Popen | None = None

    @property
    def connection_string(self) -> str:
        base = "http://127.0.0.1"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={base}:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint={base}:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint={base}:{self.table_port}/{ACCOUNT};"
        )

    def stop(self) -> None:
        if self.process:
            stop_group(self.process, grace=5, ports=(self.blob_port, self.queue_port, self.table_port))


def start_azurite(
    blob_port: int = 0,
    queue_port: int = 0,
    table_port: int = 0,
    data_dir: Path | None = None,
    log_file: Path | None = None,
) -> Azurite:
    """Start Azurite; ports 0 mean free ones; no data_dir means in memory."""
    script = ROOT / "node_modules" / ".bin" / "azurite"
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing: run `npm ci` (make test / make run do)")
    az = Azurite(blob_port or free_port(), queue_port or free_port(), table_port or free_port())
    args = [
        "node",
        str(script),
        "--blobHost",
        "127.0.0.1",
        "--queueHost",
        "127.0.0.1",
        "--tableHost",
        "127.0.0.1",
        "--blobPort",
        str(az.blob_port),
        "--queuePort",
        str(az.queue_port),
        "--tablePort",
        str(az.table_port),
        "--skipApiVersionCheck",
        "--disableProductStyleUrl",
        "--disableTelemetry",
    ]
    if data_dir is None:
        args.append("--inMemoryPersistence")
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        args += ["--location", str(data_dir)]
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 (Azurite's stdout for its life)
    az.process = subprocess.Popen(
        args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent()
    )
    try:
        for port in (az.blob_port, az.queue_port, az.table_port):
            wait_for_port(port)
    except TimeoutError:
        az.stop()
        raise
    return az
