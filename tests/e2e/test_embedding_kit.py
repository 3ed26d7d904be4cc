"""The embedding kit (static_web/realtime-client.js, its .d.ts, static_web/README.md): the
declarations type-check (`tsc --noEmit`) against an example that uses every option, event and
method; they declare exactly what the module exports, at the same version; the client speaks
another language when given its messages (Chromium); and the page works inside an iframe on
another site once `frame-ancestors` names that site and the iframe has `allow="microphone"`."""

from __future__ import annotations

import json
import re
import subprocess
from typing import get_args

import pytest

from local.emulator import reply_for
from realtime_gateway.core.result import EndReason
from tests.e2e.browser_support import ROOT, STATIC, TRACK_PEER_CONNECTIONS, StaticSite, open_page

TSC = ROOT / "node_modules" / ".bin" / "tsc"
DTS = STATIC / "realtime-client.d.ts"
EXAMPLE = STATIC / "examples" / "embed.ts"


def block(source: str, opening: str) -> str:
    """The body of the `{ ... }` that follows `opening` (braces balanced)."""
    start = source.index(opening)
    i = source.index("{", start)
    depth = 0
    for j in range(i, len(source)):
        depth += {"{": 1, "}": -1}.get(source[j], 0)
        if depth == 0:
            return source[i + 1 : j]
    raise AssertionError(f"unbalanced {opening}")


def top_level_names(body: str, pattern: str) -> list[str]:
    """Names declared at the top level of an interface or class body (nested types skipped)."""
    names, depth = [], 0
    for line in body.splitlines():
        if depth == 0:
            m = re.match(pattern, line)
            if m:
                names.append(m.group(1))
        depth += line.count("{") - line.count("}") + line.count("(") - line.count(")")
    return names


def test_declarations_type_check_against_an_example_using_every_option_event_and_method():
    assert TSC.exists(), "typescript is missing: `npm ci` installs it"
    result = subprocess.run(
        [str(TSC), "--noEmit", "-p", str(STATIC / "examples")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr

    dts, example = DTS.read_text(), EXAMPLE.read_text()
    options = top_level_names(block(dts, "export interface RealtimeClientOptions"), r"\s+(\w+)\?:")
    events = top_level_names(block(dts, "export interface RealtimeClientEventMap"), r"\s+(\w+): CustomEvent")
    methods = top_level_names(block(dts, "export declare class RealtimeClient "), r"\s+(\w+)\(")
    messages = top_level_names(block(dts, "export interface Messages"), r"\s+(\w+): Message;")
    assert len(options) >= 13 and len(events) >= 13 and len(methods) >= 12 and len(messages) >= 30
    assert [o for o in options if not re.search(rf"\b{o}: ", example)] == []
    assert [e for e in events if f'addEventListener("{e}"' not in example] == []
    methods = [m for m in methods if m not in ("constructor", "addEventListener", "removeEventListener")]
    assert [m for m in methods if f".{m}(" not in example] == []


def test_declarations_match_the_module_and_its_version():
    """What the module exports (imported by node), its messages and its version, against the .d.ts."""
    script = (
        "const m = await import(process.argv[1]);"
        "console.log(JSON.stringify({exports: Object.keys(m).sort(), messages: Object.keys(m.DEFAULT_MESSAGES).sort(),"
        " version: m.VERSION, kinds: m.ErrorKind, ends: m.EndReason}));"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script, (STATIC / "realtime-client.js").as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    module = json.loads(out.stdout)
    dts = DTS.read_text()
    declared = sorted(set(re.findall(r"^export declare (?:const|class|function) (\w+)", dts, re.M)))
    assert module["exports"] == declared
    messages = top_level_names(block(dts, "export interface Messages"), r"\s+(\w+): Message;")
    assert sorted(messages) == module["messages"]
    for name, value in {**module["kinds"], **module["ends"]}.items():
        assert f'{name}: "{value}";' in dts, name
    gateway = re.search(r"export type GatewayEndReason =([^;]+);", dts)
    assert gateway is not None
    assert sorted(re.findall(r'"(\w+)"', gateway.group(1))) == sorted(get_args(EndReason))

    version = module["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    header = (STATIC / "realtime-client.js").read_text().splitlines()[0]
    assert header.startswith(f"// realtime-client.js v{version}:"), header
    assert f'export declare const VERSION: "{version}";' in dts
    assert f"realtime-client.js v{version}" in dts.splitlines()[0]
    assert f"v{version}" in (STATIC / "README.md").read_text()


def test_messages_in_another_language(browser, gateway_stack_factory):
    """config.json's `locale` and `messages` reach the client: a throttled call is explained in
    French, with the wait worded by the browser's Intl in French."""
    site = StaticSite()
    stack = gateway_stack_factory(origins=[site.url])
    site.configure(
        {
            "gatewayUrl": stack.url,
            "locale": "fr-FR",
            "messages": {
                "busy": "Le service vocal est occupé. Réessayez {wait}.",
                "reference": " Référence : {requestId}.",
            },
        }
    )
    stack.emulator.set_fault("calls", status=429, retry_after=7)
    with site:
        page = open_page(browser, site.url + "/")
        page.click("#start")
        page.wait_for_selector("#error:not([hidden])", timeout=20_000)
        text = page.text_content("#error")
        assert text.startswith("Le service vocal est occupé. Réessayez dans 7 secondes. Référence : "), text
        page.close()


HOST_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>A site that embeds the voice page</title></head>
<body><h1>Our shop</h1>
<iframe id="voice" title="Voice assistant" src="{src}" {allow} width="600" height="700"
        onload="document.body.dataset.framed = 'loaded'"></iframe>
</body></html>
"""


@pytest.fixture
def embedding(gateway_stack_factory):
    """Two sites: the voice page (static_web/ with the Static Web Apps headers) and a shop that
    frames it (no headers of ours). Only the voice page's origin talks to the gateway."""
    voice = StaticSite()
    shop = StaticSite(swa=False)
    stack = gateway_stack_factory(origins=[voice.url])
    voice.configure({"gatewayUrl": stack.url})
    with voice, shop:
        yield voice, shop, stack


def shop_page(browser, shop, voice, allow: str):
    """The shop's page with the voice page in an iframe (`allow` as its attribute), once it loaded."""
    shop.files["/"] = HOST_PAGE.format(src=voice.url + "/", allow=allow)
    page = browser.new_page()
    page.add_init_script(TRACK_PEER_CONNECTIONS)
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    page.goto(shop.url + "/")
    page.wait_for_selector("body[data-framed=loaded]", state="attached")
    return page, console


def test_the_page_in_an_iframe_on_another_site(browser, embedding):
    voice, shop, stack = embedding
    voice.frame_ancestors = f"'self' {shop.url}"  # the documented change to staticwebapp.config.json
    page, _ = shop_page(browser, shop, voice, 'allow="microphone"')
    frame = page.frame_locator("#voice")
    frame.locator("body[data-ready=true]").wait_for()
    frame.locator("#start").click()
    frame.locator("#state[data-state=live]").wait_for(timeout=30_000)
    frame.locator("#message").fill("Hello from the shop")
    frame.locator("#message").press("Enter")
    frame.locator("#transcript li.assistant[data-done=true] .text", has_text=reply_for("Hello from the shop")).wait_for(
        timeout=15_000
    )
    frame.locator("#stop").click()
    frame.locator("#outcome", has_text="You hung up.").wait_for()
    page.close()


def test_an_iframe_without_allow_microphone_is_told_so(browser, embedding):
    voice, shop, _ = embedding
    voice.frame_ancestors = f"'self' {shop.url}"
    page, _ = shop_page(browser, shop, voice, "")
    frame = page.frame_locator("#voice")
    frame.locator("body[data-ready=true]").wait_for()
    frame.locator("#start").click()
    frame.locator("#error", has_text="Microphone access was denied").wait_for(timeout=20_000)
    page.close()


def test_the_default_csp_refuses_to_be_framed(browser, embedding):
    voice, shop, _ = embedding
    csp = json.loads((STATIC / "staticwebapp.config.json").read_text())["globalHeaders"]["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp  # framing is opt-in
    page, console = shop_page(browser, shop, voice, 'allow="microphone"')
    assert "/" in voice.requests  # the page was asked for, and refused to render in the frame:
    assert "/app.js" not in voice.requests
    assert any("frame-ancestors" in line for line in console), console
    page.close()
