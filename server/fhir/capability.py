"""The CapabilityStatement served at /fhir/metadata: what the read API and subscriptions offer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from server.fhir.search import PARAMETERS

_PARAM_TYPES = {
    "identifier": "token",
    "subject": "reference",
    "patient": "reference",
    "individual": "reference",
    "study": "reference",
    "category": "token",
    "code": "token",
    "status": "token",
    "date": "date",
    "authored": "date",
    "sent": "date",
    "questionnaire": "reference",
    "url": "uri",
    "name": "string",
}

_DOCS = {
    "Patient": "Pseudonymous: the study code as identifier; no name, birth date or contact.",
    "ResearchStudy": "One per study (protocol); cohorts as arms.",
    "ResearchSubject": "One per participant: status and cohort (assignedArm).",
    "CarePlan": "One per participant: each schedule event is an activity with its window "
    "(scheduledPeriod) and status.",
    "Observation": "ctDNA (MTM/mL, POS/NEG/IND), imaging response (RECIST 1.1), tumour markers "
    "(LOINC where one exists) and questionnaire scale scores (category survey).",
    "Questionnaire": "One per instrument: items, answer options, enableWhen, en/fr/zh texts.",
    "QuestionnaireResponse": "One per submitted questionnaire.",
    "Flag": "One per alert about a participant: active until resolved.",
    "Communication": "One per SMS: kind, category, status and times; never its text or number.",
    "Subscription": "R4 Subscriptions Backport, rest-hook: a site's endpoint for alerts and/or "
    "new results (create, read, search, delete).",
}


def capability_statement(*, base_url: str, software_version: str, now: datetime) -> dict[str, Any]:
    """The server's CapabilityStatement (FHIR 4.0.1, JSON only, bearer tokens)."""
    resources = []
    for resource_type in sorted(PARAMETERS):
        interactions = [{"code": "read"}, {"code": "search-type"}]
        if resource_type == "Subscription":
            interactions += [{"code": "create"}, {"code": "delete"}]
        params = [
            {"name": "_id", "type": "token"},
            {"name": "_lastUpdated", "type": "date"},
        ]
        for name in sorted(PARAMETERS[resource_type]):
            base, _, modifier = name.partition(":")
            if modifier:
                continue  # a modifier of a listed parameter, not a parameter of its own
            params.append({"name": base, "type": _PARAM_TYPES.get(base, "token")})
        entry: dict[str, Any] = {
            "type": resource_type,
            "documentation": _DOCS[resource_type],
            "interaction": interactions,
            "searchParam": params,
        }
        if resource_type == "Subscription":
            entry["supportedProfile"] = [
                "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                "backport-subscription"
            ]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now.isoformat(timespec="seconds"),
        "publisher": "Stepdown",
        "kind": "instance",
        "software": {"name": "Stepdown", "version": software_version},
        "implementation": {
            "description": "Stepdown trial monitoring: read-only FHIR R4 API",
            "url": f"{base_url}/fhir",
        },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "instantiates": [
            "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/"
            "backport-subscription-server-r4"
        ],
        "rest": [
            {
                "mode": "server",
                "documentation": "Paging: _count (default 50, at most 200) and _offset; "
                "Bundle links first, previous, next. Unknown parameters are refused (400).",
                "security": {
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                    "restful-security-service",
                                    "code": "OAuth",
                                }
                            ],
                            "text": "Bearer token: a staff API token (POST /api/v1/auth/token) "
                            "or a participant's app token",
                        }
                    ],
                    "description": "Staff see the participants of their sites; an app token "
                    "sees only its participant.",
                },
                "resource": resources,
            }
        ],
    }
