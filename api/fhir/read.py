"""Read and search: /fhir/metadata, /fhir/<type>?<search>, /fhir/<type>/<id>."""

from __future__ import annotations

from importlib import metadata as package_metadata
from typing import Any
from urllib.parse import urlencode

from flask import request
from werkzeug.exceptions import MethodNotAllowed

from api.fhir.common import base_url, bp, fhir_response, outcome, scope
from server.clock import utcnow
from server.db import get_session
from server.errors import NotFound
from server.fhir import search as fhir_search
from server.fhir import service
from server.fhir.capability import capability_statement

TYPE = "<fhir_type:resource_type>"
ID = "<fhir_id:resource_id>"


def _version() -> str:
    try:
        return package_metadata.version("stepdown")
    except package_metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "0"


@bp.route("/metadata")
def metadata() -> Any:
    """The CapabilityStatement (no token needed)."""
    return fhir_response(
        capability_statement(base_url=base_url(), software_version=_version(), now=utcnow())
    )


def _link(relation: str, resource_type: str, params: list[tuple[str, str]], offset: int) -> Any:
    pairs = [(k, v) for k, v in params if k != "_offset"]
    if offset:
        pairs.append(("_offset", str(offset)))
    query = urlencode(pairs)
    return {
        "relation": relation,
        "url": f"{base_url()}/fhir/{resource_type}" + (f"?{query}" if query else ""),
    }


@bp.route(f"/{TYPE}")
def search_type(resource_type: str) -> Any:
    """A search: a Bundle (searchset) of the matches in the caller's scope, one page of them."""
    if resource_type not in service.BUILDERS:
        raise NotFound(f"unknown resource type {resource_type!r}")
    params = list(request.args.items(multi=True))
    query = fhir_search.parse(resource_type, params)
    page = service.search(
        session=get_session(),
        scope=scope(),
        resource_type=resource_type,
        query=query,
        base_url=base_url(),
    )
    links = [
        _link("self", resource_type, params, query.offset),
        _link("first", resource_type, params, 0),
    ]
    if query.offset > 0:
        links.append(_link("previous", resource_type, params, max(0, query.offset - query.count)))
    if query.count and query.offset + query.count < page.total:
        links.append(_link("next", resource_type, params, query.offset + query.count))
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": page.total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base_url()}/fhir/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in page.resources
        ],
    }
    if not bundle["entry"]:
        del bundle["entry"]
    return fhir_response(bundle)


@bp.route(f"/{TYPE}/{ID}")
def read(resource_type: str, resource_id: str) -> Any:
    """One resource; 404 when absent or outside the caller's sites (the same answer)."""
    found = service.read(
        session=get_session(),
        scope=scope(),
        resource_type=resource_type,
        resource_id=resource_id,
        base_url=base_url(),
    )
    if found is None:
        raise NotFound(f"{resource_type}/{resource_id} not found")
    return fhir_response(found)


@bp.route("/", defaults={"rest": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def other(rest: str) -> Any:
    """Anything else under /fhir: 404 for a read, 405 for a write (the API is read-only)."""
    if request.method == "GET":
        raise NotFound(f"no FHIR endpoint /fhir/{rest}")
    raise MethodNotAllowed(valid_methods=["GET"], description="this FHIR API is read-only")


__all__ = ["metadata", "other", "outcome", "read", "search_type"]
