"""`python -m local.emulator`: the realtime emulator on EMULATOR_HOST:EMULATOR_PORT until interrupted."""

import logging
import os
import signal
import threading

from .emulator import Emulator


def main() -> None:
    logging.basicConfig(level=os.environ.get("EMULATOR_LOG_LEVEL", "WARNING"))
    emu = Emulator(
        host=os.environ.get("EMULATOR_HOST", "127.0.0.1"),
        port=int(os.environ.get("EMULATOR_PORT", "7081")),
        deployment=os.environ.get("EMULATOR_DEPLOYMENT", "gpt-realtime"),
        identity_header=os.environ.get("EMULATOR_IDENTITY_HEADER", "local-identity-header"),
        token_lifetime=float(os.environ.get("EMULATOR_TOKEN_LIFETIME", "3600")),
        # EMULATOR_MAX_CALL_SECONDS is the setting's older name, still read
        session_max_seconds=float(
            os.environ.get("EMULATOR_SESSION_MAX_SECONDS") or os.environ.get("EMULATOR_MAX_CALL_SECONDS") or "1800"
        ),
        api_key=os.environ.get("EMULATOR_API_KEY") or None,
    ).start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"ready: realtime-emulator {emu.url}", flush=True)
    done.wait()
    emu.stop()


if __name__ == "__main__":
    main()
