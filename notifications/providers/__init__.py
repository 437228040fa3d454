"""SMS providers: the `SmsProvider` interface, its errors, Twilio, and an in-memory double."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from notifications.providers.base import (
    MessageLookup,
    PermanentSendError,
    ProviderConfigError,
    RecordedSend,
    RecordingProvider,
    SendReceipt,
    SentMessage,
    SmsProvider,
    SmsSendError,
    TransientSendError,
)
from notifications.providers.twilio import TwilioSmsProvider

DEFAULT_FAKE_BASE_URL = "http://127.0.0.1:8010"

__all__ = [
    "DEFAULT_FAKE_BASE_URL",
    "MessageLookup",
    "PermanentSendError",
    "ProviderConfigError",
    "RecordedSend",
    "RecordingProvider",
    "SendReceipt",
    "SentMessage",
    "SmsProvider",
    "SmsSendError",
    "TransientSendError",
    "TwilioSmsProvider",
    "provider_from_config",
]


def provider_from_config(config: Mapping[str, Any]) -> SmsProvider:
    """Build the provider named by SMS_PROVIDER: "twilio", "fake" (fake server) or "recording"."""
    kind = (config.get("SMS_PROVIDER") or "fake").lower()
    if kind == "recording":
        return RecordingProvider()
    if kind not in ("twilio", "fake"):
        raise ValueError(f"unknown SMS_PROVIDER {kind!r}")
    # "twilio" ignores TWILIO_BASE_URL on purpose: a stray variable must not divert real traffic.
    base_url = (
        None if kind == "twilio" else (config.get("TWILIO_BASE_URL") or DEFAULT_FAKE_BASE_URL)
    )
    return TwilioSmsProvider(
        config.get("TWILIO_ACCOUNT_SID") or "",
        config.get("TWILIO_AUTH_TOKEN") or "",
        messaging_service_sid=config.get("TWILIO_MESSAGING_SERVICE_SID"),
        from_number=None
        if config.get("TWILIO_MESSAGING_SERVICE_SID")
        else config.get("TWILIO_FROM_NUMBER"),
        base_url=base_url,
        timeout=float(config.get("TWILIO_TIMEOUT_SECONDS") or 10),
        voice_from_number=config.get("TWILIO_VOICE_FROM_NUMBER"),
    )
