"""A browsable API reference rendered on the server from the same OpenAPI document (no CDN)."""

from __future__ import annotations

import re
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
    for op in operations:
        op["anchor"] = _anchor(op["method"], op["path"])
    return render_template(
        "api_docs.html",
        info=spec.get("info", {}),
        operations=operations,
        groups=_by_tag(spec, operations),
        schemas=spec.get("components", {}).get("schemas", {}),
    )


def _anchor(method: str, path: str) -> str:
    """A stable fragment id for an operation: "post-api-v1-participants-participant_id"."""
    return re.sub(r"[^a-z0-9_]+", "-", f"{method} {path}".lower()).strip("-")


def _by_tag(spec: dict[str, Any], operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Operations grouped by their first tag, in the document's tag order (then by name), each
    group with the tag's description: the page's table of contents and its sections."""
    described = {t["name"]: t.get("description", "") for t in spec.get("tags", [])}
    order = list(described)
    groups: dict[str, list[dict[str, Any]]] = {}
    for op in operations:
        groups.setdefault(op["tag"] or "other", []).append(op)
    names = sorted(groups, key=lambda n: (order.index(n) if n in order else len(order), n))
    return [
        {
            "name": name,
            "anchor": "tag-" + re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-"),
            "description": described.get(name, ""),
            "operations": groups[name],
        }
        for name in names
    ]
