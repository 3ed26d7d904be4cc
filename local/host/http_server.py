"""HTTP triggers under the routePrefix (methods, auth levels, route params), optional Host.CORS,
and a static folder at `/`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import azure.functions as func
from aiohttp import web
from multidict import CIMultiDict

from .app_loader import FunctionSpec
from .bindings import out_values
from .invoker import Invoker
from .keys import FunctionKeys
from .routes import compile_route, specificity
from .storage import QueueOutputWriter

log = logging.getLogger("host")
MAX_BODY = 100 * 1024 * 1024  # the real host's request size limit


class HttpTriggers:
    def __init__(
        self,
        specs: list[FunctionSpec],
        route_prefix: str,
        keys: FunctionKeys,
        invoker: Invoker,
        writer: QueueOutputWriter,
        static_dir: Path | None = None,
        cors_origins: tuple[str, ...] = (),
        cors_credentials: bool = False,
    ):
        self.keys, self.invoker, self.writer = keys, invoker, writer
        self.static_dir = static_dir.resolve() if static_dir else None
        self.cors_origins, self.cors_credentials = cors_origins, cors_credentials
        self.routes = []
        for spec in specs:
            t = spec.trigger
            route = (t.get("route") or spec.name).strip("/")
            template = f"{route_prefix}/{route}" if route_prefix else route
            methods = {m.upper() for m in t.get("methods") or []} or None
            level = str(t.get("authLevel") or "function").lower()
            self.routes.append((compile_route(template), spec, methods, level))
        self.routes.sort(key=lambda r: specificity(r[0]))
        # non-HTTP functions the admin API may run by hand (timers), filled in by the host
        self.manual_runs: dict[str, Callable[[str], Coroutine[Any, Any, None]]] = {}
        self._manual_tasks: set[asyncio.Task[None]] = set()

    def describe(self) -> list[str]:
        return [
            f"{spec.name}: [{','.join(sorted(methods or {'ALL'}))}] /{route.template} ({level})"
            for route, spec, methods, level in self.routes
        ]

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if (
            self.cors_origins
            and request.method == "OPTIONS"
            and origin
            and "Access-Control-Request-Method" in request.headers
        ):
            return self._preflight(request, origin)
        response = await self._dispatch(request)
        if self.cors_origins and origin and self._origin_ok(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers.add("Vary", "Origin")
            if self.cors_credentials:
                response.headers["Access-Control-Allow-Credentials"] = "true"
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path.lower().startswith("/admin/functions/") and request.method == "POST":
            return self._run_by_hand(request, path.split("/", 3)[3])
        for route, spec, methods, level in self.routes:
            params = route.match(path)
            if params is None or (methods and request.method not in methods):
                continue
            key = request.query.get("code") or request.headers.get("x-functions-key")
            if not self.keys.allows(level, spec.name, key):
                return web.Response(status=401)
            return await self._invoke(spec, request, params)
        if self.static_dir and request.method in ("GET", "HEAD"):
            return self._static(self.static_dir, request.path)
        if request.path == "/":
            return web.Response(text="Your Functions app is up and running (local host).\n")
        return web.Response(status=404)

    async def _invoke(self, spec: FunctionSpec, request: web.Request, params: dict) -> web.Response:
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            lower = name.lower()
            headers[lower] = f"{headers[lower]}, {value}" if lower in headers else value
        # As the App Service front end does: append the peer it saw (ip:port) to what the caller sent.
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            seen = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
            headers["x-forwarded-for"] = (
                f"{headers['x-forwarded-for']}, {seen}" if "x-forwarded-for" in headers else seen
            )
        req = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=headers,
            params=dict(request.query),
            route_params=params,
            body=await request.read(),
        )
        outs = out_values(spec)
        args = {spec.trigger["name"]: req, **outs}
        try:
            returned = await self.invoker.invoke(
                spec, args, "This function was programmatically called via the host APIs."
            )
            await self.writer.write_outputs(spec, returned, outs)
        except Exception:  # logged by the invoker; the real host answers 500 with no body
            return web.Response(status=500)
        http_out = [b["name"] for b in spec.outputs if b["type"] == "http"]
        return to_aiohttp(outs[http_out[0]].get() if http_out else returned)

    def _run_by_hand(self, request: web.Request, name: str) -> web.Response:
        """The real host's `POST /admin/functions/<name>` (master key): run a non-HTTP function now; 202."""
        key = request.query.get("code") or request.headers.get("x-functions-key")
        if not self.keys.allows("admin", name, key):
            return web.Response(status=401)
        fire = self.manual_runs.get(name)
        if fire is None:
            return web.Response(status=404)
        task = asyncio.create_task(fire("This function was programmatically called via the host APIs."))
        self._manual_tasks.add(task)
        task.add_done_callback(self._manual_tasks.discard)
        return web.Response(status=202)

    @staticmethod
    def _static(root: Path, url_path: str) -> web.StreamResponse:
        target = (root / url_path.lstrip("/")).resolve()
        if not target.is_relative_to(root):
            return web.Response(status=404)
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            return web.Response(status=404)
        return web.FileResponse(target)

    def _origin_ok(self, origin: str) -> bool:
        return "*" in self.cors_origins or origin.rstrip("/") in self.cors_origins

    def _preflight(self, request: web.Request, origin: str) -> web.Response:
        if not self._origin_ok(origin):
            return web.Response(status=400)
        headers = {
            "Access-Control-Allow-Origin": origin,
            "Vary": "Origin",
            "Access-Control-Allow-Methods": request.headers["Access-Control-Request-Method"],
            "Access-Control-Max-Age": "600",
        }
        if "Access-Control-Request-Headers" in request.headers:
            headers["Access-Control-Allow-Headers"] = request.headers["Access-Control-Request-Headers"]
        if self.cors_credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return web.Response(status=204, headers=headers)


def to_aiohttp(result) -> web.Response:
    if result is None:
        return web.Response(status=204)
    if isinstance(result, (str, bytes)):
        body = result.encode() if isinstance(result, str) else result
        return web.Response(status=200, body=body, content_type="text/plain", charset="utf-8")
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"HTTP function returned {type(result).__name__}, not func.HttpResponse")
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in result.headers.items():
        if name.lower() != "set-cookie":
            headers.add(name, value)
    if "set-cookie" in result.headers:  # several cookies stay several headers, as in the worker
        for cookie in result.headers.get_all("Set-Cookie"):
            headers.add("Set-Cookie", cookie)
    if "content-type" not in headers:
        # The worker's rule (azure.functions.http.HttpResponseConverter): charset only for text/*.
        mimetype = result.mimetype
        headers["Content-Type"] = f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
    return web.Response(status=result.status_code, headers=headers, body=result.get_body())
