"""A browsable API reference rendered on the server from the same OpenAPI document (no CDN)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template

bp = Blueprint("docs", __name__)


def _resolve(spec: dict[str, Any], node: Any) -> Any:
    if isinstance(node, dict) and "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return {"ref": name, **spec.get("components", {}).get("schemas", {}).get(name, {})}
    return node


def _response(spec: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """A response, looked up when it refers to a shared one (the error statuses do)."""
    if "$ref" in response:
        name = response["$ref"].rsplit("/", 1)[-1]
        return spec.get("components", {}).get("responses", {}).get(name, {})  # type: ignore[no-any-return]
    return response


@bp.get("/api/docs")
def api_docs() -> str:
    """The API reference page."""
    spec = current_app.extensions["stepdown_api"].spec.to_dict()
    operations = []
    for path, item in sorted(spec.get("paths", {}).items()):
        for method, op in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            body = (
                op.get("requestBody", {})
                .get("content", {})
                .get("application/json", {})
                .get("schema")
            )
            operations.append(
                {
                    "path": path,
                    "method": method.upper(),
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "tag": (op.get("tags") or [""])[0],
                    "parameters": op.get("parameters", []),
                    "body": _resolve(spec, body) if body else None,
                    "responses": {
                        code: _resolve(
                            spec,
                            _response(spec, r)
                            .get("content", {})
                            .get("application/json", {})
                            .get("schema"),
                        )
                        for code, r in sorted(op.get("responses", {}).items())
                    },
                    "public": op.get("security") == [],
                }
            )
    return render_template(
        "api_docs.html",
        info=spec.get("info", {}),
        operations=operations,
        schemas=spec.get("components", {}).get("schemas", {}),
    )
