"""The realtime gateway's Azure Functions app: every trigger and binding, each a thin handler.

The logic lives in `realtime_gateway/`; this file only says which route or queue calls what.
"""
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

# --- HTTP: the gateway (issue 4) ------------------------------------------------------------

# --- Queue: the sideband listener (issue 5) -------------------------------------------------
