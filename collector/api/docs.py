"""`/openapi.json` (the API's contract) and `/docs` (Swagger UI, its assets served from here, not a CDN)."""

from __future__ import annotations

import importlib.resources
import json
import re
from typing import Any

from flask import Blueprint, Response, current_app, send_from_directory

from collector.api.auth import OPEN_ENDPOINTS, required_scope
from collector.api.openapi import build_document
from collector.api.services import services

blueprint = Blueprint("docs", __name__)
ASSETS = str(importlib.resources.files("flask_swagger_ui") / "dist")
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>collector API</title>
  <link rel="stylesheet" href="docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.onload = function () {
      window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true});
    };
  </script>
</body>
</html>
"""


def document() -> dict[str, Any]:
    """The app's OpenAPI document, built on first use (platforms are fixed for a process's life)."""
    cached = current_app.extensions.get("collector.openapi")
    if cached is None:
        svc = services()
        cached = build_document(
            svc.config,
            svc.registry,
            secured=bool(current_app.extensions["collector.auth"]["tokens"]),
            dashboard="rq_dashboard" in current_app.blueprints,
            scopes=route_scopes(),
        )
        current_app.extensions["collector.openapi"] = cached
    return cached


def route_scopes() -> dict[tuple[str, str], str]:
    """`(OpenAPI path, method)` → the scope the route needs, for every route of the app."""
    found = {}
    for rule in current_app.url_map.iter_rules():
        if rule.endpoint in OPEN_ENDPOINTS:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found[(path, method.lower())] = required_scope(rule.endpoint, method, rule.rule)
    return found


@blueprint.get("/openapi.json")
def openapi_json() -> Response:
    return Response(json.dumps(document()), mimetype="application/json")


@blueprint.get("/docs")
def docs_page() -> Response:
    return Response(PAGE, mimetype="text/html")


@blueprint.get("/docs/assets/<path:name>")
def docs_asset(name: str) -> Response:
    return send_from_directory(ASSETS, name, max_age=3600)
