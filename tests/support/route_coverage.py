"""Matching the OpenAPI document against the app's Starlette routes, both ways."""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import BaseRoute, Mount, Route

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def described_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def undescribed_routes(app_routes: list[BaseRoute], document: dict[str, Any]) -> list[str]:
    """Every route method (HEAD aside, it follows GET) and mount the document lacks."""
    described = described_operations(document)
    missing = []
    for route in app_routes:
        if isinstance(route, Route):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                if (route.path, method) not in described:
                    missing.append(f"{method} {route.path}")
        elif isinstance(route, Mount):
            if not any(path.startswith(route.path + "/") for path, _ in described):
                missing.append(f"mount {route.path}")
        else:
            missing.append(f"unknown kind of route {route!r}")
    return missing


def _sample(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "index.html", path)


def unserved_operations(app_routes: list[BaseRoute], document: dict[str, Any]) -> list[str]:
    """Every described operation no route answers."""
    unserved = []
    for path, method in sorted(described_operations(document)):
        concrete = _sample(path)
        served = False
        for route in app_routes:
            if isinstance(route, Route) and route.path_regex.fullmatch(concrete):
                served = method in (route.methods or set())
            elif isinstance(route, Mount) and concrete.startswith(route.path + "/"):
                served = method in ("GET", "HEAD")
            else:
                continue
            break
        if not served:
            unserved.append(f"{method} {path}")
    return unserved
