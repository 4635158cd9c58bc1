"""No credential in any log line: every record is redacted as it is made.

Clients put credentials where the protocols ask for them, and some of those places get logged:
uvicorn's access log and its WebSocket handshake lines print the path with its query string
(Reverie's ``apikey=``, ElevenLabs' ``token=``), and an exception's message may quote what it was
given. So redaction is not left to each call site: a log record factory rewrites every record's
message, arguments and traceback before any handler sees it, whatever the logger or handler
(uvicorn's, the app's, Python's last-resort one).

Two rules: the value of any query parameter whose name is a credential's, and anything shaped like
one of the secrets this service issues or accepts (API keys, single-use tokens, Standard Webhooks
secrets, JWTs, bearer tokens), wherever it appears.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"

# Every name a credential travels under in a query string, in any protocol (compared case-insensitively):
# Reverie's apikey, ElevenLabs' token (and xi-api-key, should a client put its header there), the
# native protocol's apiKey / token / resumeToken, and the usual spellings of the rest.
CREDENTIAL_PARAMETERS = (
    "apikey", "api_key", "api-key", "key", "x-api-key", "xi-api-key", "xi_api_key", "token", "access_token",
    "auth", "authorization", "bearer", "jwt", "secret", "client_secret", "password", "resumetoken",
    "resume_token", "signature", "sig",
)
_PARAMETER = re.compile(
    r"(?P<name>(?:^|[?&;\s\"'])(?:" + "|".join(re.escape(n) for n in CREDENTIAL_PARAMETERS) + r")=)"
    r"(?P<value>[^&;\s\"'#]+)",
    re.IGNORECASE,
)
_SHAPES = (
    # API keys (kk-), single-use tokens (sutkn_), webhook secrets (whsec_): their prefix stays, to say what it was.
    (re.compile(r"\b(kk-|sutkn_|whsec_)[A-Za-z0-9_+/=-]{6,}"), r"\1" + REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),  # a JWT
    (re.compile(r"\b(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1" + REDACTED),
)


def redact(text: str) -> str:
    """``text`` without credentials."""
    text = _PARAMETER.sub(lambda m: m.group("name") + REDACTED, text)
    for shape, replacement in _SHAPES:
        text = shape.sub(replacement, text)
    return text


def _redacted_argument(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, int | float):
        return value
    # An object (an exception, a URL...) is replaced by its redacted text only when that differs,
    # so %r and %d keep working for everything that holds no secret.
    text = str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    # The arguments one by one first, keeping the tuple's shape: uvicorn's access formatter unpacks it.
    if isinstance(record.args, dict):
        record.args = {name: _redacted_argument(value) for name, value in record.args.items()}
    elif isinstance(record.args, tuple):
        record.args = tuple(_redacted_argument(value) for value in record.args)
    # Then the whole message, for a secret the format string and an argument make together
    # ("token=%s"). Redacting the format string alone could break its placeholders.
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed call; logging reports it when the record is emitted
        message = None
    if message is not None and redact(message) != message:
        record.msg, record.args = redact(message), ()
    if record.exc_info and not record.exc_text:
        # Handlers' formatters use exc_text as it is once it is set.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    return record


def install() -> None:
    """Redact every log record made in this process from now on (idempotent)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacts", False):
        return

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(factory(*args, **kwargs))

    redacting_factory.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)
