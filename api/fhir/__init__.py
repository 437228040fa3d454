"""The FHIR R4 API under /fhir (application/fhir+json): thin routes over server/fhir/."""

from api.fhir import read as read
from api.fhir import subscriptions as subscriptions
from api.fhir.common import bp as bp

__all__ = ["bp", "read", "subscriptions"]
