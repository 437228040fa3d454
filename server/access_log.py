"""Keep secret links out of our own logs.

A calendar app fetches GET /oncall/feed/<token>.ics, and the token alone opens a person's shifts;
a participant's survey link /s/<token> opens her questionnaire. The development server (werkzeug,
`make run`) writes every request line to the "werkzeug" logger; gunicorn writes none unless
--access-logfile is given (config/deploy/stepdown-web.service does not), and then to
"gunicorn.access". A filter on both loggers rewrites the tokens before any handler sees the line.
"""

from __future__ import annotations

import logging
import re

FEED_TOKEN = re.compile(r"(/oncall/feed/)[^\s\"?/]+?(\.ics\b|(?=[\s\"?/]|$))")
SURVEY_TOKEN = re.compile(r"((?:^|[\s\"])/s/)[^\s\"?/]+")
REDACTED = r"\1[redacted]\2"
ACCESS_LOGGERS = ("werkzeug", "gunicorn.access")


def redact(text: str) -> str:
    """The text with every calendar-link and survey-link token replaced."""
    return SURVEY_TOKEN.sub(r"\1[redacted]", FEED_TOKEN.sub(REDACTED, text))


class RedactSecretPaths(logging.Filter):
    """Rewrites a record whose message holds a secret link's path (never drops it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's business
            return True
        if "/oncall/feed/" in message or "/s/" in message:
            record.msg, record.args = redact(message), None
        return True


def install() -> None:
    """Put the filter on the access loggers once (create_app may run many times)."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecretPaths) for f in logger.filters):
            logger.addFilter(RedactSecretPaths())
