"""No request can produce a 500 (issue 11, item 4): the inputs measured as 500s, each answered
at the edge with its 4xx and the JSON envelope (or the HTML error page), the database untouched."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from api.input_guard import MAX_JSON_DEPTH, json_depth_exceeds, unstorable_fields
from server.db import ID_MAX
from server.surveys import links
from tests import clock

BIG = 9223372036854775808  # 2^63: beyond any 64-bit integer (the case)
PAST_ID = ID_MAX + 1  # 2^31: fits SQLite, but "integer out of range" on PostgreSQL
HUGE_NEGATIVE = -18446744073709551617  # -(2^64 + 1)
DEEP = "[" * 100000 + "]" * 100000
A = "/api/v1"


def _counts(db: Any) -> dict[str, int]:
    """Rows per table: the whole database's footprint."""
    return {
        table.name: db.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        for table in SQLModel.metadata.sorted_tables
    }


@contextlib.contextmanager
def unchanged(db: Any) -> Iterator[None]:
    """The requests inside add and remove no row anywhere."""
    before = _counts(db)
    yield
    db.expire_all()
    assert _counts(db) == before


def _envelope(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)[:500]
    body = resp.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "fields"}, body
    assert body["error"]["code"] == code, body
    return body["error"]  # type: ignore[no-any-return]


def _raw(api: Any, method: str, path: str, text: str | bytes, **kw: Any) -> Any:
    """Send a body exactly as given (json= would re-encode it)."""
    return api.client.open(
        path,
        method=method,
        data=text,
        content_type="application/json",
        headers=api._headers() if hasattr(api, "_headers") else {},
        **kw,
    )


# --- ids beyond 64 bits ------------------------------------------------------------------------


def test_path_ids_beyond_64_bits_are_404_on_every_kind_of_id(api_as, world, db):
    admin = api_as("admin", "A")
    a1 = world.participants["A1"].id
    with unchanged(db):
        for method, path in (
            ("GET", f"{A}/participants/{BIG}"),
            ("GET", f"{A}/participants/{BIG}/messages"),
            ("POST", f"{A}/participants/{a1}/messages/{BIG}/cancel"),
            ("POST", f"{A}/participants/{a1}/events/{BIG}/complete"),
            ("POST", f"{A}/participants/{a1}/decisions/{BIG}/record"),
            ("GET", f"{A}/alerts/{BIG}"),
            ("GET", f"{A}/sites/{BIG}/escalation"),
            ("GET", f"{A}/users/{BIG}"),
            ("GET", f"{A}/participants/{PAST_ID}"),
            ("POST", f"{A}/alerts/{PAST_ID}/acknowledge"),
            ("GET", f"{A}/participants/{'9' * 5000}"),
        ):
            resp = admin.client.open(
                path, method=method, json={"reason": "x"}, headers=admin._headers()
            )
            _envelope(resp, 404, "not_found")
        # The largest id an id column holds is a well-formed id: simply not found.
        _envelope(admin.get(f"{A}/participants/{ID_MAX}"), 404, "not_found")


def test_query_and_body_ids_beyond_64_bits_are_422_naming_the_field(api_as, world, db):
    admin = api_as("admin", "A")
    with unchanged(db):
        error = _envelope(admin.get(f"{A}/participants?page={10**400}"), 422, "validation_error")
        assert "page" in error["fields"]
        error = _envelope(admin.get(f"{A}/participants?site_id={BIG}"), 422, "validation_error")
        assert "site_id" in error["fields"]
        error = _envelope(
            admin.get(f"{A}/alerts?participant_id={PAST_ID}"), 422, "validation_error"
        )
        assert "participant_id" in error["fields"]
        error = _envelope(
            admin.post(
                f"{A}/users",
                json={
                    "email": "new.nurse@example.test",
                    "full_name": "New Nurse",
                    "password": "a long enough password 1",
                    "role": "nurse",
                    "site_ids": [HUGE_NEGATIVE],
                },
            ),
            422,
            "validation_error",
        )
        assert "site_ids.0" in error["fields"]
        error = _envelope(
            admin.post(
                f"{A}/participants",
                json={"study": "HEROES", "site_id": BIG, "study_code": "A-900"},
            ),
            422,
            "validation_error",
        )
        assert "site_id" in error["fields"]
        site = world.sites["A"].id
        error = _envelope(
            admin.client.put(
                f"{A}/sites/{site}/on-call", json={"user_ids": [BIG]}, headers=admin._headers()
            ),
            422,
            "validation_error",
        )
        assert "user_ids.0" in error["fields"]


def test_pages_with_ids_beyond_64_bits_are_the_404_page(web_as, db):
    web = web_as("coordinator", "A")
    with unchanged(db):
        for path in (f"/participants/{BIG}", f"/alerts/{BIG}", f"/participants/{'9' * 5000}"):
            resp = web.get(path)
            assert resp.status_code == 404, path
            assert resp.mimetype == "text/html"
            assert "Not found" in resp.get_data(as_text=True)


# --- bodies nested too deep, too large, not UTF-8, not Unicode ----------------------------------


@pytest.mark.parametrize(
    "path", [f"{A}/auth/token", f"{A}/mobile/activate"], ids=["token", "activate"]
)
def test_deeply_nested_bodies_are_400_before_parsing_even_without_login(client, path, db):
    with unchanged(db):
        resp = client.post(path, data=DEEP, content_type="application/json")
        error = _envelope(resp, 400, "bad_request")
        assert str(MAX_JSON_DEPTH) in error["message"]


def test_deeply_nested_bodies_are_400_on_authenticated_calls_too(api_as, world, db):
    admin = api_as("admin", "A")
    a1 = world.participants["A1"].id
    with unchanged(db):
        for path in (f"{A}/results/ctdna", f"{A}/results/fhir/Observation", f"{A}/participants"):
            _envelope(_raw(admin, "POST", path, DEEP), 400, "bad_request")
        # Nested in a field that takes any JSON (an event's outcome): the same refusal.
        outcome = "{" + '"a":{' * 40 + "}" * 40 + "}"
        body = '{"completed_on": "2027-01-04", "outcome": ' + outcome + "}"
        _envelope(
            _raw(admin, "POST", f"{A}/participants/{a1}/events/1/complete", body),
            400,
            "bad_request",
        )


def test_json_depth_is_measured_without_recursion_and_ignores_brackets_in_strings():
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert not json_depth_exceeds(at_limit.encode())
    assert json_depth_exceeds(("[" + at_limit + "]").encode())
    assert json_depth_exceeds(DEEP.encode())
    in_strings = json.dumps({"note": "[" * 1000, "other": '{"' * 500})
    assert not json_depth_exceeds(in_strings.encode())


def test_bodies_over_the_size_limit_are_413(api_as, app, db):
    admin = api_as("admin", "A")
    big = json.dumps({"reason": "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)})
    with unchanged(db):
        _envelope(_raw(admin, "POST", f"{A}/results/ctdna", big), 413, "payload_too_large")


def test_bodies_that_are_not_utf8_or_not_json_are_400(client, db):
    with unchanged(db):
        resp = client.post(
            f"{A}/auth/token", data=b'{"email": "\xff\xfe"}', content_type="application/json"
        )
        _envelope(resp, 400, "bad_request")
        # A number with more digits than Python will convert is not JSON anyone can use either.
        resp = client.post(
            f"{A}/mobile/activate",
            data='{"study_code": "A-001", "code": ' + "1" * 5000 + "}",
            content_type="application/json",
        )
        _envelope(resp, 400, "bad_request")


def test_a_lone_surrogate_in_a_ctdna_field_is_422_naming_the_field(api_as, db):
    admin = api_as("admin", "A")
    body = {
        "study": "HEROES",
        "study_code": "A-001",
        "accession_id": "ACC-\ud800",
        "collected_at": (clock.NOW - timedelta(hours=1)).isoformat(),
        "call": "positive",
    }
    text = json.dumps(body)  # ensure_ascii: the surrogate travels as the escape "\ud800"
    assert "\\ud800" in text
    with unchanged(db):
        error = _envelope(_raw(admin, "POST", f"{A}/results/ctdna", text), 422, "validation_error")
        assert list(error["fields"]) == ["accession_id"]
        # In a key, deep in a list, and in the FHIR endpoint: named the same way.
        fhir = {"resourceType": "Observation", "identifier": [{"value": "\udfff"}]}
        error = _envelope(
            _raw(admin, "POST", f"{A}/results/fhir/Observation", json.dumps(fhir)),
            422,
            "validation_error",
        )
        assert list(error["fields"]) == ["identifier.0.value"]


def test_unstorable_fields_names_every_place_a_nul_or_lone_surrogate_hides():
    decoded = {"a": "ok", "b": ["x", "\ud800"], "c": {"\udc00": 1}, "d": "😀", "e": {"f": "a\x00"}}
    assert unstorable_fields(decoded) == {
        "b.1": "not valid Unicode (a lone surrogate)",
        "c": "a key not valid Unicode (a lone surrogate)",
        "e.f": "must not contain NUL characters",
    }


def test_nul_characters_are_422_naming_the_field_wherever_they_come(api_as, web_as, db):
    # PostgreSQL refuses a NUL in any text: it must never reach a query.
    admin = api_as("admin", "A")
    web = web_as("coordinator", "A")
    with unchanged(db):
        body = json.dumps({"study": "HEROES\u0000", "site_id": 1, "study_code": "A-900"})
        error = _envelope(_raw(admin, "POST", f"{A}/participants", body), 422, "validation_error")
        assert error["fields"] == {"study": ["must not contain NUL characters"]}
        error = _envelope(admin.get(f"{A}/participants?search=A%00"), 422, "validation_error")
        assert error["fields"] == {"search": ["must not contain NUL characters"]}
        _envelope(admin.get(f"{A}/studies/HEROES%00/adherence"), 404, "not_found")
        page = web.get("/participants?search=A%00")
        assert page.status_code == 422
        assert page.mimetype == "text/html"
        form = web.post("/participants/new", data={"action": "preview", "study": "HE\x00"})
        assert form.status_code == 422


# --- dates no trial means -------------------------------------------------------------------------


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31"])
def test_far_dates_are_422_naming_the_field_not_an_overflow(api_as, world, db, day):
    # Windows, time zones and UTC conversion around year 1 or 9999 overflow Python's dates.
    admin = api_as("admin", "A")
    a1 = world.participants["A1"]
    event = admin.get(f"{A}/participants/{a1.id}/schedule").get_json()[0]["id"]
    instant = f"{day}T00:00:00+14:00" if day.startswith("0001") else f"{day}T23:59:59-14:00"
    result = {"study": "HEROES", "study_code": "A-001", "accession_id": "FAR-1"}
    with unchanged(db):
        for method, path, body, field in (
            ("POST", f"{A}/protocols/heroes/preview", {"anchor_date": day}, "anchor_date"),
            (
                "PATCH",
                f"{A}/participants/{a1.id}",
                {"anchor_date": day, "reason": "r"},
                "anchor_date",
            ),
            (
                "POST",
                f"{A}/participants/{a1.id}/events/{event}/reschedule",
                {"target_date": day, "reason": "r"},
                "target_date",
            ),
            (
                "POST",
                f"{A}/results/ctdna",
                {**result, "collected_at": instant, "call": "negative"},
                "collected_at",
            ),
            (
                "POST",
                f"{A}/results/tumor-markers",
                {**result, "collected_at": instant, "marker": "CEA", "value": 1, "unit": "ng/mL"},
                "collected_at",
            ),
            (
                "POST",
                f"{A}/results/fhir/Observation",
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "identifier": [{"value": "FAR-1"}],
                    "code": {"text": "Signatera"},
                    "subject": {"identifier": {"value": "A-001"}},
                    "effectiveDateTime": instant,
                },
                "effectiveDateTime",
            ),
        ):
            resp = admin.client.open(path, method=method, json=body, headers=admin._headers())
            error = _envelope(resp, 422, "validation_error")
            assert field in error["fields"], (path, error)


# --- signed survey links with impossible values ------------------------------------------------


def _signed(event_hex: str, expires_hex: str, secret: str) -> str:
    body = f"{event_hex}-{expires_hex}"
    return f"{body}-{links._mac(secret, body)}"


def test_signed_survey_links_with_impossible_values_are_the_invalid_link_page(app, client, db):
    secret = app.config["SECRET_KEY"]
    later = f"{int((clock.NOW + timedelta(days=1)).timestamp()):x}"
    with unchanged(db):
        for token in (
            _signed(f"{BIG:x}", later, secret),  # event ids no id column holds
            _signed(f"{PAST_ID:x}", later, secret),
            _signed("ffffffffffffffff", later, secret),
            _signed("2", "ffffffffffffffff", secret),  # an expiry no calendar holds
            _signed("0", later, secret),  # no row has id 0
        ):
            resp = client.get(f"/s/{token}")
            assert resp.status_code == 404, (token, resp.status_code)
            assert resp.mimetype == "text/html"
        # Signed and well-formed but past its time: 410, as before.
        earlier = f"{int((clock.NOW - timedelta(days=1)).timestamp()):x}"
        assert client.get(f"/s/{_signed('2', earlier, secret)}").status_code == 410


def test_read_token_turns_impossible_values_into_invalid_links():
    for token in (
        _signed(f"{BIG:x}", "ffff", "k"),
        _signed("1", "ffffffffffffffff", "k"),
        _signed("+1", "ffff", "k"),  # int() would read it; make_token never writes it
        _signed("1_0", "ffff", "k"),
        _signed("A", "ffff", "k"),
    ):
        with pytest.raises(links.LinkInvalid):
            links.read_token("k", token, clock.NOW)


# --- empty PATCH bodies, 405 -----------------------------------------------------------------


def test_empty_patch_bodies_are_422_nothing_to_change(api_as, world, client, db):
    admin = api_as("admin", "A")
    site = world.sites["A"]
    user = world.staff[("nurse", "A")]
    a1 = world.participants["A1"]
    with unchanged(db):
        for path in (f"{A}/sites/{site.id}", f"{A}/users/{user.id}", f"{A}/participants/{a1.id}"):
            for kw in ({}, {"json": {}}):
                error = _envelope(admin.patch(path, **kw), 422, "validation_error")
                assert error["fields"] == {"_schema": ["nothing to change"]}, path


def test_an_empty_preferences_patch_is_422(world, client, db):
    from server.participants import mobile

    a1 = world.participants["A1"]
    db.add(
        mobile.ActivationCode(
            participant_id=a1.id,
            code_hash=mobile._hash("135790"),
            expires_at=clock.NOW + timedelta(minutes=5),
        )
    )
    db.commit()
    token = client.post(
        f"{A}/mobile/activate", json={"study_code": "A-001", "code": "135790"}
    ).get_json()["token"]
    db.commit()
    with unchanged(db):
        resp = client.patch(
            f"{A}/mobile/preferences", json={}, headers={"Authorization": f"Bearer {token}"}
        )
        error = _envelope(resp, 422, "validation_error")
        assert error["fields"] == {"_schema": ["nothing to change"]}


def test_405_answers_carry_allow(api_as, client, db):
    admin = api_as("admin", "A")
    with unchanged(db):
        resp = admin.client.put(f"{A}/sites", json={}, headers=admin._headers())
        _envelope(resp, 405, "method_not_allowed")
        assert set(resp.headers["Allow"].split(", ")) >= {"GET", "POST"}
        resp = client.delete(f"{A}/auth/token/extra")
        assert resp.status_code == 404
        page = client.put("/login")
        assert page.status_code == 405
        assert "GET" in page.headers["Allow"]


# --- the OpenAPI document ------------------------------------------------------------------------


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def test_the_openapi_document_describes_every_request_body_and_real_statuses(client):
    spec = client.get("/api/openapi.json").get_json()
    fhir = spec["paths"][f"{A}/results/fhir/Observation"]["post"]["requestBody"]
    assert set(fhir["content"]) == {"application/fhir+json", "application/json"}
    observation = spec["components"]["schemas"]["FhirObservation"]
    assert {"resourceType", "identifier", "subject", "effectiveDateTime"} <= set(
        observation["required"]
    )
    bodiless_writes = {
        (method, path)
        for method, path, op in _operations(spec)
        if method in {"post", "put", "patch"} and "requestBody" not in op
    }
    # Writes that take no body on purpose: the action is the whole request.
    assert bodiless_writes == {
        ("post", f"{A}/participants/{{participant_id}}/activation"),
        ("post", f"{A}/me/oncall-feed"),
    }
    for method, path, op in _operations(spec):
        assert "default" not in op["responses"], (method, path)
        if method == "get":
            assert "requestBody" not in op, (method, path)
        if op.get("security") != []:
            assert "401" in op["responses"], (method, path)
        if "{" in path:
            assert "404" in op["responses"], (method, path)
        for status, response in op["responses"].items():
            if status.startswith("2") and status != "204":
                assert response.get("content"), (method, path, status)  # its media type
    # The reference page shows the same statuses, each error with the envelope.
    docs = client.get("/api/docs").get_data(as_text=True)
    blocks = docs.split("<h4>Response 404</h4>")[1:]
    assert len(blocks) >= 40
    for block in blocks:
        assert "<code>error</code>" in block.split("</table>")[0]
    calendar = spec["paths"][f"{A}/mobile/calendar.ics"]["get"]["responses"]["200"]
    assert set(calendar["content"]) == {"text/calendar"}
    participant_id = spec["paths"][f"{A}/participants/{{participant_id}}"]["parameters"][0]
    assert participant_id["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 2**31 - 1,
    }


# --- the pages: numbers that str.isdigit() takes and int() refuses ------------------------------

# "²" is a digit to str.isdigit() but not to int(); 5,000 digits are more than int() converts.
NOT_NUMBERS = ["²", "9" * 5000]


def test_page_number_fields_refuse_what_int_cannot_read(web_as, db):
    web = web_as("coordinator", "A")
    with unchanged(db):
        for raw in NOT_NUMBERS:
            resp = web.get("/participants", query_string={"page": raw})
            assert resp.status_code == 400, raw
            resp = web.post(
                "/participants/new",
                data={"action": "preview", "study": "HEROES", "site_id": raw, "study_code": "A-9"},
            )
            assert resp.status_code == 422, raw
            assert "site_id" in resp.get_data(as_text=True)


def test_survey_answers_that_are_not_numbers_are_refused_not_a_crash(app, client, db, world):
    import re

    import time_machine
    from sqlmodel import select

    from server.schedules.models import ScheduleEvent
    from tests import factories

    a1 = factories.a1_in_scenario(db, world)
    qol1 = db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == a1.id, ScheduleEvent.key == "qol:1"
        )
    ).one()
    at = qol1.window_open_at + timedelta(hours=1)
    token = links.make_token(app.config["SECRET_KEY"], qol1.id, at + timedelta(days=1))
    with time_machine.travel(at, tick=False):
        page = client.get(f"/s/{token}")
        assert page.status_code == 200
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
        with unchanged(db):
            for raw in [*NOT_NUMBERS, "-²"]:
                form = {"csrf_token": csrf.group(1), "item-q1": raw}
                assert client.post(f"/s/{token}", data=form).status_code == 422, raw


def test_a_signed_status_callback_with_a_code_that_is_no_number_is_stored_without_one(
    app, client, db
):
    from tests.notifications.test_webhooks import in_flight, message, post_signed, status_params

    message_id = in_flight(db)
    for code in ["²", "9" * 5000, "99999999999"]:
        params = status_params("failed") | {"ErrorCode": code}
        resp = post_signed(app, client, f"/twilio/status/{message_id}", params)
        assert resp.status_code == 204, code
        assert message(db, message_id).error_code is None
