"""test.http (the requests a developer sends from VS Code's REST Client against `make run`) really
does what it says: every request, in order, against the local host with the emulator and Azurite,
answers the status its `# expect:` line names. The file's own variables are replaced by this
stack's address and keys; `{{connect.response.headers.x-call-id}}` by the connect answer's header,
as REST Client does. That every route has a request is checked in tests/unit/test_docs.py."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
HTTP_FILE = ROOT / "test.http"


@dataclass
class HttpRequest:
    title: str
    method: str
    url: str
    expect: int
    name: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


def parse_http_file(text: str) -> tuple[dict[str, str], list[HttpRequest]]:
    """(file variables, requests) of a REST Client file: blocks split by `###` lines."""
    blocks = re.split(r"^###[^\n]*\n", text, flags=re.M)
    variables = dict(re.findall(r"^@(\w+)\s*=\s*(.*?)\s*$", blocks[0], re.M))
    titles = re.findall(r"^###\s*([^\n]*)$", text, re.M)
    out = []
    for title, block in zip(titles, blocks[1:], strict=True):
        lines = block.splitlines()
        expect = name = None
        i = 0
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("#")):
            if m := re.match(r"#\s*expect:\s*(\d{3})", lines[i]):
                expect = int(m.group(1))
            if m := re.match(r"#\s*@name\s+(\w+)", lines[i]):
                name = m.group(1)
            i += 1
        method, url = lines[i].split(None, 1)
        request = HttpRequest(title, method, url.strip(), expect or 0, name)
        i += 1
        while i < len(lines) and lines[i].strip():
            key, _, value = lines[i].partition(":")
            request.headers[key.strip()] = value.strip()
            i += 1
        request.body = "\n".join(lines[i + 1 :]).strip("\n")
        assert request.expect, f"{title}: no `# expect:` line"
        out.append(request)
    return variables, out


def fill(text: str, variables: dict[str, str], answers: dict[str, requests.Response]) -> str:
    def one(m: re.Match) -> str:
        ref = m.group(1).strip()
        if ref.startswith("$datetime"):
            return time.strftime("%Y-%m-%d", time.gmtime())
        if ".response.headers." in ref:
            name, header = ref.split(".response.headers.", 1)
            return answers[name].headers[header]
        return variables[ref]

    return re.sub(r"\{\{(.+?)\}\}", one, text)


def test_every_request_of_test_http_answers_as_it_says(gateway_stack_factory):
    stack = gateway_stack_factory(AUDIT_API_ENABLED="true")
    variables, requests_ = parse_http_file(HTTP_FILE.read_text(encoding="utf-8"))
    assert {"gateway", "origin", "hostKey", "masterKey"} <= set(variables)
    variables.update(
        gateway=stack.url, origin=stack.url, hostKey=stack.keys["host"]["default"], masterKey=stack.keys["master"]
    )
    answers: dict[str, requests.Response] = {}
    seen = []
    for r in requests_:
        response = requests.request(
            r.method,
            fill(r.url, variables, answers),
            headers={k: fill(v, variables, answers) for k, v in r.headers.items()},
            data=fill(r.body, variables, answers).encode("utf-8") if r.body else None,
            timeout=60,
        )
        seen.append((r.title, response.status_code))
        assert response.status_code == r.expect, (r.title, response.status_code, response.text[:300], seen)
        if r.name:
            answers[r.name] = response
    assert len(seen) >= 15
