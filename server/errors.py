"""Domain errors; the API turns each into one JSON error envelope."""

from __future__ import annotations


class DomainError(Exception):
    """Base class: a refusal the user can understand."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class NotFound(DomainError):
    """Absent, or outside the caller's sites (the two look the same on purpose)."""

    status = 404
    code = "not_found"


class Forbidden(DomainError):
    """The caller's role does not allow this action."""

    status = 403
    code = "forbidden"


class Conflict(DomainError):
    """The change clashes with the current state (duplicate, wrong state)."""

    status = 409
    code = "conflict"


class ValidationFailed(DomainError):
    """Input that parsed but makes no sense; names the fields."""

    status = 422
    code = "validation_error"


def field_error(field: str, message: str) -> ValidationFailed:
    """A validation error on a single field."""
    return ValidationFailed(f"{field}: {message}", {field: [message]})
