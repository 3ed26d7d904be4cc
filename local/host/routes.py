"""HTTP route templates (`items/{id:int}`, `{name?}`, `{*rest}`) compiled to matchers."""

from __future__ import annotations

import re
from dataclasses import dataclass

CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?i:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
    "double": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
    "datetime": r"[0-9T:\-\.Z+]+",
}
NAME = re.compile(r"^(\*?)([A-Za-z_][A-Za-z0-9_]*)$")


def parse_parameter(segment: str):
    """`{*name}` / `{name:c1:c2(arg)?}` -> (catch_all, name, [constraints], optional), else None.
    Constraints split on ':' outside parentheses; `{{`/`}}` are escaped braces in a regex."""
    if not (segment.startswith("{") and segment.endswith("}")) or segment.startswith("{{"):
        return None
    inner = segment[1:-1].replace("{{", "{").replace("}}", "}")
    optional = inner.endswith("?")
    inner = inner[:-1] if optional else inner
    parts, depth, current = [], 0, ""
    for ch in inner:
        if ch == ":" and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += (ch == "(") - (ch == ")")
        current += ch
    parts.append(current)
    m = NAME.match(parts[0])
    if not m:
        return None
    return bool(m.group(1)), m.group(2), parts[1:], optional


@dataclass
class Route:
    template: str
    regex: re.Pattern
    literals: int
    params: int

    def match(self, path: str) -> dict[str, str] | None:
        m = self.regex.match(path)
        if not m:
            return None
        return {k: v for k, v in m.groupdict().items() if v is not None}


def compile_route(template: str) -> Route:
    """Segments are literals or one `{param[:constraint...][?]}`; `{*rest}` takes the remainder."""
    template = template.strip("/")
    pattern, literals, params = "", 0, 0
    for segment in [s for s in template.split("/") if s]:
        parsed = parse_parameter(segment)
        if not parsed:
            if "{" in segment or "}" in segment:
                raise ValueError(f"route {template!r}: segment {segment!r} is not supported locally")
            pattern += "/" + re.escape(segment)
            literals += 1
            continue
        catch_all, name, constraints, optional = parsed
        params += 1
        body = r".*" if catch_all else r"[^/]+"
        for c in filter(None, constraints):
            base = c.split("(")[0].lower()
            if base in CONSTRAINTS:
                body = CONSTRAINTS[base]
            elif base == "regex":
                body = c[c.index("(") + 1 : -1].removeprefix("^").removesuffix("$")
            # min/max/length constraints are accepted and not enforced locally
        if catch_all or optional:
            pattern += f"(?:/(?P<{name}>{body}))?"
        else:
            pattern += f"/(?P<{name}>{body})"
    return Route(template, re.compile("^" + pattern + "/?$", re.IGNORECASE), literals, params)


def specificity(route: Route) -> tuple:
    # Literal segments beat parameters, as in ASP.NET routing.
    return (-route.literals, route.params)
