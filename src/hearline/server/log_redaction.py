"""Keys never reach the logs: ``?token=KEY`` (browsers' WebSockets send the key that way) is masked.

uvicorn logs every request line and WebSocket handshake with its query string; the filter rewrites the
record's arguments before any handler formats them.  The CLI installs it when it configures logging.
"""

from __future__ import annotations

import logging
import re

#: query parameters that carry a credential
SECRET_QUERY = re.compile(r"(?i)((?:^|[?&])(?:token|api_key|api-key|key|access_token)=)[^&\s\"]*")
LOGGERS = ("uvicorn.access", "uvicorn.error")


def redact(text: str) -> str:
    return SECRET_QUERY.sub(r"\1***", text)


class RedactSecrets(logging.Filter):
    """Masks credentials in a record's message and string arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def install() -> None:
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
