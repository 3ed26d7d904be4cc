"""HTTP route templates (`items/{id:int}`, `{name?}`, `{*rest}`) compiled to matchers."""
from __future__ import annotations

import re
from dataclasses import dataclass

CONSTRAINTS = {
    "int": r"-?\d+", "long": r"-?\d+", "bool": r"(?i:true|false)", "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
    "double": r"-?\d+(?:\.\d+)?", "float": r"-?\d+(?:\.\d+)?", "decimal": r"-?\d+(?:\.\d+)?",
    "datetime": r"[0-9T:\-\.Z+]+",
}
PARAM = re.compile(r"^\{(\*?)([A-Za-z_][A-Za-z0-9_]*)((?::[^}?=]+)*)(\?)?\}$")


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
        m = PARAM.match(segment)
        if not m:
            if "{" in segment or "}" in segment:
                raise ValueError(f"route {template!r}: segment {segment!r} is not supported locally")
            pattern += "/" + re.escape(segment)
            literals += 1
            continue
        catch_all, name, constraints, optional = m.groups()
        params += 1
        body = r".*" if catch_all else r"[^/]+"
        for c in filter(None, constraints.split(":")):
            base = c.split("(")[0].lower()
            if base in CONSTRAINTS:
                body = CONSTRAINTS[base]
            elif base == "regex":
                body = c[c.index("(") + 1:-1]
            # min/max/length constraints are accepted and not enforced locally
        if catch_all or optional:
            pattern += f"(?:/(?P<{name}>{body}))?"
        else:
            pattern += f"/(?P<{name}>{body})"
    return Route(template, re.compile("^" + pattern + "/?$", re.IGNORECASE), literals, params)


def specificity(route: Route) -> tuple:
    # Literal segments beat parameters, as in ASP.NET routing.
    return (-route.literals, route.params)
