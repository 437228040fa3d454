"""CDISC ODM 1.3.2 export: valid against the ODM 1.3.2 XSD, the schedule, results, questionnaire
answers and audit trail of one study at the chosen sites, pseudonymous and free of secrets;
from the command line and the adherence page, both audited."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
import xmlschema
from sqlmodel import select

from notifications.models import OutboxMessage
from server.alerts.models import Alert
from server.audit import AuditEvent
from server.exports import odm
from server.protocols.models import Study
from server.schedules.models import ScheduleEvent
from server.surveys import service as surveys

XSD = Path(__file__).parent / "odm1-3-2" / "ODM1-3-2.xsd"
NS = {"odm": "http://www.cdisc.org/ns/odm/v1.3"}
T0 = datetime(2027, 3, 30, 8, 0, tzinfo=UTC)
QOL_DAY = datetime(2027, 1, 5, 10, 0, tzinfo=UTC)  # qol:1 (anchor 2027-01-04) is open


@pytest.fixture(scope="module")
def schema():
    return xmlschema.XMLSchema(str(XSD))


def at(moment):
    return time_machine.travel(moment, tick=False)


def ctdna(code, accession, call, collected, **kw):
    return {
        "lab": "natera",
        "study": "HEROES",
        "study_code": code,
        "accession_id": accession,
        "collected_at": collected,
        "call": call,
        "mtm_per_ml": 0.42 if call == "positive" else 0.0,
        **kw,
    }


@pytest.fixture
def history(world, db, api_as):
    """A1: a questionnaire answered on the phone, a negative baseline then a positive ctDNA (an
    alert with its SMS), a scan and a tumour marker; B1 (Boston) a result of its own."""
    nurse = world.staff[("nurse", "A")]
    nurse.phone_e164, nurse.is_phone_verified = "+33610000001", True
    db.add(nurse)
    db.commit()
    a1 = world.participants["A1"]
    event = db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == a1.id, ScheduleEvent.key == "qol:1"
        )
    ).one()
    with at(QOL_DAY):
        answers = {f"q{i}": 2 for i in range(1, 29)} | {"q29": 5, "q30": 6}
        surveys.save(
            session=db,
            participant=a1,
            event=event,
            answers=answers,
            submit=True,
            channel="app",
            now=QOL_DAY,
        )
        db.commit()
    lab_a, lab_b = api_as("coordinator", "A"), api_as("coordinator", "B")
    with at(T0):
        for body in (
            ctdna("A-001", "BASE-1", "negative", "2026-12-14T09:00:00+01:00"),
            ctdna("A-001", "NT-42", "positive", "2027-03-29T09:00:00+02:00"),
            ctdna("B-001", "NT-B1", "negative", "2027-03-29T09:00:00-04:00"),
        ):
            r = (lab_b if body["study_code"] == "B-001" else lab_a).post(
                "/api/v1/results/ctdna", json=body
            )
            assert r.status_code == 201, r.get_json()
        scan = lab_a.post(
            "/api/v1/results/imaging",
            json={
                "study": "HEROES",
                "study_code": "A-001",
                "accession_id": "IMG-7",
                "modality": "CT",
                "performed_on": "2027-03-22",
                "recist": "PR",
            },
        )
        assert scan.status_code == 201, scan.get_json()
        marker = lab_a.post(
            "/api/v1/results/tumor-markers",
            json={
                "study": "HEROES",
                "study_code": "A-001",
                "accession_id": "TM-3",
                "collected_at": "2027-03-29T09:00:00+02:00",
                "marker": "CA15-3",
                "value": 21.5,
                "unit": "U/mL",
            },
        )
        assert marker.status_code == 201, marker.get_json()
    return world


def export(db, world, sites=("A",)):
    study = db.exec(select(Study).where(Study.key == "HEROES")).one()
    with at(T0):
        return odm.build(
            session=db,
            study=study,
            site_ids=[world.sites[s].id for s in sites],
            now=T0,
        )


def items(subject, event_oid):
    """{item OID: value} of each StudyEventData of that kind, in order."""
    out = []
    for sed in subject.findall(f"odm:StudyEventData[@StudyEventOID='{event_oid}']", NS):
        out.append({i.get("ItemOID"): i.get("Value") for i in sed.iterfind(".//odm:ItemData", NS)})
    return out


def test_the_export_is_valid_odm_1_3_2_with_schedule_results_answers(history, db, schema):
    done = export(db, history)
    schema.validate(done.xml.decode())  # raises with the path of the first error
    root = ET.fromstring(done.xml)
    assert root.get("ODMVersion") == "1.3.2" and root.get("FileType") == "Snapshot"
    mdv = root.find("odm:Study/odm:MetaDataVersion", NS)
    defs = {e.get("OID") for e in mdv.findall("odm:StudyEventDef", NS)}
    assert {"Event.ctdna_draw", "Event.imaging", "Event.questionnaire"} <= defs
    # The first item of the first form is the record id REDCap needs.
    assert mdv.find("odm:ItemGroupDef/odm:ItemRef", NS).get("ItemOID") == "study_code"
    calls = mdv.find("odm:CodeList[@OID='CL.ctdna_call']", NS)
    assert [c.get("CodedValue") for c in calls] == [
        "positive",
        "negative",
        "indeterminate",
        "insufficient_sample",
    ]
    # Site A only, never Boston's B-001.
    subjects = {s.get("SubjectKey"): s for s in root.iterfind(".//odm:SubjectData", NS)}
    assert sorted(subjects) == ["A-001", "A-002"]
    assert done.subjects == 2 and done.site_ids == [history.sites["A"].id]
    a1 = subjects["A-001"]
    assert a1.find("odm:SiteRef", NS).get("LocationOID") == "LOC.SITE-A"
    draws = items(a1, "Event.ctdna_draw")
    positive = next(d for d in draws if d.get("ctdna_accession") == "NT-42")
    assert positive["ctdna_call"] == "positive" and positive["ctdna_mtm_per_ml"] == "0.42"
    assert positive["ctdna_collected_at"] == "2027-03-29T07:00:00Z"
    assert positive["evt_status"] == "completed" and positive["evt_completed_on"] == "2027-03-29"
    assert positive["evt_window_open"] <= "2027-03-29" <= positive["evt_window_close"]
    # Every schedule event is there with its status, the open and planned ones too.
    statuses = {d["evt_status"] for d in draws}
    assert {"completed", "planned"} <= statuses
    scans = [d for d in items(a1, "Event.imaging") if d.get("img_recist")]
    assert [(d["img_recist"], d["img_modality"], d["img_performed_on"]) for d in scans] == [
        ("PR", "CT", "2027-03-22")
    ]
    qol = [d for d in items(a1, "Event.questionnaire") if "eortc_qlq_c30_q1" in d]
    assert len(qol) == 1
    assert qol[0]["eortc_qlq_c30_q1"] == "2" and qol[0]["eortc_qlq_c30_q30"] == "6"
    assert qol[0]["eortc_qlq_c30_channel"] == "app"
    assert qol[0]["evt_status"] == "completed"
    assert any(k.startswith("eortc_qlq_c30_score_") for k in qol[0])
    markers = [
        d
        for sed in ("Event.blood_work", "Event.tumor_markers", "Event.unscheduled")
        for d in items(a1, sed)
        if d.get("tm_marker")
    ]
    assert [(m["tm_marker"], m["tm_value"], m["tm_unit"]) for m in markers] == [
        ("CA15-3", "21.5", "U/mL")
    ]
    # Licensed item texts are not exported (the EORTC's copyright): only "Item n".
    q1 = mdv.find("odm:ItemDef[@OID='eortc_qlq_c30_q1']", NS)
    assert q1.get("Name") == "Item 1"


def test_the_audit_trail_is_exported_as_audit_records(history, db):
    done = export(db, history)
    root = ET.fromstring(done.xml)
    records = root.findall("odm:ClinicalData/odm:AuditRecords/odm:AuditRecord", NS)
    assert len(records) == done.audit_records > 0
    by_source = {r.findtext("odm:SourceID", namespaces=NS): r for r in records}
    result_id = db.exec(
        select(AuditEvent.entity_id).where(
            AuditEvent.action == "result.create",
            AuditEvent.after["accession_id"].as_string() == "NT-42",
        )
    ).one()
    created = by_source[f"lab_result:{result_id}"]
    coordinator = history.staff[("coordinator", "A")]
    assert created.find("odm:UserRef", NS).get("UserOID") == f"USR.staff.{coordinator.id}"
    assert created.find("odm:LocationRef", NS).get("LocationOID") == "LOC.SITE-A"
    assert created.findtext("odm:DateTimeStamp", namespaces=NS) == "2027-03-30T08:00:00Z"
    assert created.findtext("odm:ReasonForChange", namespaces=NS).startswith("result.create")
    # Each actor is a User of AdminData, by name and role; Boston's coordinator is not there.
    users = {u.get("OID"): u for u in root.iterfind("odm:AdminData/odm:User", NS)}
    assert (
        users[f"USR.staff.{coordinator.id}"].findtext("odm:DisplayName", namespaces=NS)
        == f"{coordinator.full_name} (coordinator)"
    )
    assert f"USR.staff.{history.staff[('coordinator', 'B')].id}" not in users
    # The record of B-001's result stays out of site A's export.
    assert not any(
        "NT-B1" in (r.findtext("odm:ReasonForChange", namespaces=NS) or "") for r in records
    )


def test_no_phone_number_email_code_or_link_is_exported(history, db):
    text = export(db, history, sites=("A", "B")).xml.decode()
    assert "B-001" in text  # both sites this time
    alert = db.exec(select(Alert)).one()
    secrets = [alert.ack_code, "+33612345678", "+16175550123", "+33610000001"]
    secrets += [u.email for u in history.staff.values()]
    for message in db.exec(select(OutboxMessage)).all():
        secrets += [w for w in (message.body or "").split() if "/s/" in w or "http" in w]
    for secret in secrets:
        assert secret and secret not in text, secret
    assert "/s/" not in text and "phone" not in text.lower()


def test_cli_export_writes_valid_odm_and_is_audited(history, app, db, schema, tmp_path):
    runner = app.test_cli_runner()
    out = tmp_path / "heroes.xml"
    with at(T0):
        result = runner.invoke(
            args=["export", "odm", "HEROES", "--site", "SITE-A", "--output", str(out)]
        )
    assert result.exit_code == 0, result.output
    assert "HEROES: 2 subject(s)" in result.output
    schema.validate(str(out))
    assert b'SubjectKey="A-001"' in out.read_bytes()
    assert b'SubjectKey="B-001"' not in out.read_bytes()
    row = db.exec(select(AuditEvent).where(AuditEvent.action == "study.export")).one()
    assert row.actor == "cli" and row.entity_id == "odm"
    assert row.after["site_ids"] == [history.sites["A"].id] and row.after["rows"] == 2
    assert row.after["filters"]["study"] == "HEROES"
    # To stdout, as in `stepdown export odm HEROES --site SITE-A > heroes.xml`.
    with at(T0):
        piped = runner.invoke(args=["export", "odm", "HEROES", "--site", "SITE-A"])
    assert piped.exit_code == 0
    assert piped.stdout_bytes.startswith(b"<?xml") and b"</ODM>" in piped.stdout_bytes
    unknown = runner.invoke(args=["export", "odm", "HEROES", "--site", "NOWHERE"])
    assert unknown.exit_code != 0 and "no site NOWHERE" in unknown.output


def test_adherence_page_downloads_odm_for_my_sites_only(history, web_as, db, schema):
    with at(T0):
        web = web_as("monitor", "A")  # signed in then: sessions end after 15 idle minutes
        page = web.text("/adherence")
        assert "/adherence/odm.xml?study=HEROES" in page
        r = web.get(f"/adherence/odm.xml?study=HEROES&site={history.sites['A'].id}")
        assert r.status_code == 200
        assert r.mimetype == "application/xml"
        assert "attachment" in r.headers["Content-Disposition"]
        schema.validate(r.get_data(as_text=True))
        assert b'SubjectKey="A-001"' in r.data and b'SubjectKey="B-001"' not in r.data
        # Without a site: all of mine, still not Boston's.
        mine = web.get("/adherence/odm.xml?study=HEROES")
        assert mine.status_code == 200 and b"B-001" not in mine.data
        # Another site's export is not found; a study is required.
        assert (
            web.get(f"/adherence/odm.xml?study=HEROES&site={history.sites['B'].id}").status_code
            == 404
        )
        assert web.get("/adherence/odm.xml").status_code == 400
    rows = db.exec(select(AuditEvent).where(AuditEvent.action == "study.export")).all()
    assert len(rows) == 2
    monitor = history.staff[("monitor", "A")]
    assert {r.actor_user_id for r in rows} == {monitor.id}
    assert rows[0].after["filters"]["via"] == "adherence page"


def test_the_export_needs_a_login(client, world):
    r = client.get("/adherence/odm.xml?study=HEROES")
    assert r.status_code in (302, 401)
    assert b"<ODM" not in r.data


def test_round_trip_a_result_in_by_hl7_v2_comes_out_as_the_same_odm_item(world, db, api_as):
    """ORU^R01 in (HTTP, as the MLLP listener would record it) → the ctDNA item group of the draw
    it fulfilled, field for field, and its creation in the audit trail."""
    from tests.results.test_hl7v2 import oru

    lab = api_as("coordinator", "A")
    with at(T0):
        r = lab.client.post(
            "/api/v1/results/hl7v2",
            data=oru(call="POS^Positive^HL70078", mtm="1.24").encode(),
            headers={**lab._headers(), "Content-Type": "x-application/hl7-v2+er7"},
        )
    assert r.status_code == 201, r.get_json()
    result_id = r.get_json()["results"][0]["id"]
    root = ET.fromstring(export(db, world).xml)
    subject = root.find(".//odm:SubjectData[@SubjectKey='A-001']", NS)
    [item] = [d for d in items(subject, "Event.ctdna_draw") if "ctdna_accession" in d]
    assert {k: v for k, v in item.items() if k.startswith("ctdna_")} == {
        "ctdna_accession": "NT-2027-0042",  # OBR-3.1
        "ctdna_lab": "NATERA",  # OBR-3.2
        "ctdna_assay": "Signatera ctDNA",  # OBR-4.2
        "ctdna_collected_at": "2027-03-29T07:00:00Z",  # OBR-7 20270329090000+0200
        "ctdna_reported_at": "2027-03-30T07:15:00Z",  # OBR-22
        "ctdna_call": "positive",  # OBX-5 POS^Positive^HL70078
        "ctdna_mtm_per_ml": "1.24",  # OBX-5 of the {MTM}/mL observation
    }
    assert item["evt_status"] == "completed" and item["evt_completed_on"] == "2027-03-29"
    sources = {
        r.findtext("odm:SourceID", namespaces=NS) for r in root.iterfind(".//odm:AuditRecord", NS)
    }
    assert f"lab_result:{result_id}" in sources


def test_a_questionnaire_the_site_chose_instead_is_exported_too(world, db, schema):
    """HEROES leaves its quality-of-life instrument to the site: A2's first questionnaire is the
    check-in instead of the QLQ-C30; its form, code lists and answers are in the export."""
    a2 = world.participants["A2"]
    event = db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == a2.id, ScheduleEvent.key == "qol:1"
        )
    ).one()
    with at(QOL_DAY):
        surveys.use_instrument(
            session=db,
            participant=a2,
            event=event,
            instrument_key="qol_checkin",
            now=QOL_DAY,
            actor="test",
            reason="site's choice",
        )
        surveys.save(
            session=db,
            participant=a2,
            event=event,
            answers={
                "wellbeing": 7,
                "fatigue": 1,
                "pain": 0,
                "breathlessness": 0,
                "appetite_loss": 0,
                "new_lump": 0,
                "fever": 0,
            },
            submit=True,
            channel="web",
            now=QOL_DAY,
        )
        db.commit()
    done = export(db, world)
    schema.validate(done.xml.decode())
    root = ET.fromstring(done.xml)
    mdv = root.find("odm:Study/odm:MetaDataVersion", NS)
    assert mdv.find("odm:FormDef[@OID='Form.qol_checkin']", NS) is not None
    wellbeing = mdv.find("odm:ItemDef[@OID='qol_checkin_wellbeing']", NS)
    texts = {
        t.get("{http://www.w3.org/XML/1998/namespace}lang"): t.text
        for t in wellbeing.iterfind("odm:Question/odm:TranslatedText", NS)
    }
    assert set(texts) == {"en", "fr", "zh"} and all(texts.values())
    subject = root.find(".//odm:SubjectData[@SubjectKey='A-002']", NS)
    [answered] = [d for d in items(subject, "Event.questionnaire") if "qol_checkin_fatigue" in d]
    assert answered["qol_checkin_wellbeing"] == "7" and answered["qol_checkin_fatigue"] == "1"
    assert "qol_checkin_chills" not in answered  # not asked: fever was no
