"""Standard Webhooks signatures: ``v1,<base64 HMAC-SHA256>`` over ``{id}.{timestamp}.{body}``.

The key is the webhook's ``secret``. A secret starting with ``whsec_`` is Standard Webhooks' own
form: the rest is the base64 of the key bytes, and a receiver passes the whole string to its
library as is (``standardwebhooks.Webhook("whsec_...")``). Any other secret is used as its UTF-8
bytes, so that a user can pick a plain password; the receiver then hands the library those bytes
(``Webhook(s.encode())``) or their base64 as a string (``Webhook(base64.b64encode(s.encode()).decode())``).
Note that ``Webhook(base64.b64encode(s.encode()))`` (bytes, not str) would be wrong: the library
uses bytes as the key itself and only decodes strings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key a secret stands for; ValueError for a ``whsec_`` secret that is not base64 of a key."""
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX):].rstrip("=")
        try:
            # Padding restored rather than demanded, as the reference verifier does.
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise ValueError("a whsec_ secret must be followed by the base64 of the key") from None
    else:
        key = secret.encode()
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header value for one attempt (``timestamp``: unix seconds, as sent)."""
    digest = hmac.new(signing_key(secret), f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode()}"
