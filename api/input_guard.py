"""Input limits enforced once, at the edge, before any view or parser sees the request.

- Ids in URLs are 1 … ID_MAX (an INTEGER column on PostgreSQL): anything else does not match a
  route (404), so no lookup ever receives a number the database cannot take.
- A JSON body is at most MAX_CONTENT_LENGTH bytes (413), UTF-8 (400) and nested at most
  MAX_JSON_DEPTH levels (400, checked by a flat scan *before* any recursive parser runs).
- No string anywhere (JSON body, query string, form) holds a NUL, which PostgreSQL refuses, or a
  lone UTF-16 surrogate ("\\ud800" escapes decode to strings no UTF-8 encodes): 422 naming the
  field, before any view or query sees it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.routing import IntegerConverter

from server.db import ID_MAX
from server.errors import ValidationFailed

MAX_JSON_DEPTH = 32
MAX_CONTENT_LENGTH = 1024 * 1024

# A JSON string (escapes included) or one bracket; strings are matched whole so brackets inside
# them are not counted. Linear: no nested quantifiers.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")


class IdConverter(IntegerConverter):
    """`<int:...>` for ids: ASCII digits, 1 … ID_MAX; anything else is no route (404)."""

    regex = r"[0-9]{1,10}"

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min", 1)
        kwargs.setdefault("max", ID_MAX)
        super().__init__(map, *args, **kwargs)


class BodyRejected(BadRequest):
    """A JSON body refused before parsing (400)."""


def json_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text nests arrays/objects deeper than `limit` (a flat scan, no recursion)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def text_problem(text: str) -> str | None:
    """Why a decoded string cannot be stored, or None."""
    if "\x00" in text:
        return "must not contain NUL characters"
    if _SURROGATE.search(text):
        return "not valid Unicode (a lone surrogate)"
    return None


def unstorable_fields(value: Any) -> dict[str, str]:
    """Dotted paths of the strings (values or keys) in decoded JSON that no database can store,
    with the reason: a NUL (PostgreSQL refuses it) or a lone surrogate (no UTF-8 encodes it)."""
    found: dict[str, str] = {}
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                found[where or "_schema"] = problem
        elif isinstance(item, dict):
            for key, sub in item.items():
                problem = text_problem(key)
                if problem:
                    found[where or "_schema"] = f"a key {problem}"
                    continue
                stack.append((f"{where}.{key}" if where else str(key), sub))
        elif isinstance(item, list):
            stack.extend((f"{where}.{i}" if where else str(i), sub) for i, sub in enumerate(item))
    return dict(sorted(found.items()))


def _refuse(problems: dict[str, str]) -> None:
    if problems:
        summary = " | ".join(f"{name}: {message}" for name, message in problems.items())
        raise ValidationFailed(
            f"invalid input: {summary}", {name: [message] for name, message in problems.items()}
        )


def _is_json_body() -> bool:
    mimetype = request.mimetype or ""
    return request.is_json or mimetype.endswith("json")


def check_json_body() -> None:
    """Refuse oversized, non-UTF-8, too deeply nested or unstorable JSON bodies."""
    if not request.content_length and "chunked" not in request.headers.get("Transfer-Encoding", ""):
        return
    if not _is_json_body():
        return
    raw = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH: 413 from werkzeug
    if not raw:
        return
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyRejected("the request body is not valid UTF-8") from None
    if json_depth_exceeds(raw):
        raise BodyRejected(f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        decoded = json.loads(raw)
    except ValueError:
        raise BodyRejected("the request body is not valid JSON") from None
    _refuse(unstorable_fields(decoded))


def check_input() -> None:
    """Every request: the path, the query string, a form and a JSON body hold only text a
    database can store (422 naming the field; a path with a NUL is simply not found)."""
    if "\x00" in request.path:
        raise NotFound()
    fields = [("_query", request.args)]
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        fields.append(("_form", request.form))
    problems: dict[str, str] = {}
    for where, multidict in fields:
        for key, values in multidict.lists():
            problem = text_problem(key)
            if problem:
                problems[where] = f"a name {problem}"
                continue
            for value in values:
                problem = text_problem(value)
                if problem:
                    problems[key] = problem
    _refuse(problems)
    check_json_body()


def init_app(app: Flask) -> None:
    """Install the id converter (before any route is registered) and the body check."""
    app.url_map.converters["int"] = IdConverter
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.before_request(check_input)
