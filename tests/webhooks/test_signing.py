"""Signatures are checked with the reference verifier, the `standardwebhooks` package."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from lectern.webhooks import sign, signing_key

BODY = json.dumps({"type": "summary.completed", "timestamp": "2026-01-05T09:00:00.000000Z", "data": {"id": "x"}})
MSG = "msg_0123456789abcdef"


def headers(message_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_standard_webhooks_test_vector() -> None:
    # The example of the Standard Webhooks reference libraries.
    assert sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}'
    ) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("padded", [True, False])
def test_whsec_secret_verifies(padded: bool) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    if not padded:
        secret = secret.rstrip("=")
    now = int(time.time())
    assert Webhook(secret).verify(BODY, headers(MSG, now, sign(secret, MSG, now, BODY))) == json.loads(BODY)


def test_plain_secret_verifies_as_its_utf8_bytes() -> None:
    secret = "correct horse battery staple ✓"
    now = int(time.time())
    signed = headers(MSG, now, sign(secret, MSG, now, BODY))
    Webhook(secret.encode()).verify(BODY, signed)
    Webhook(base64.b64encode(secret.encode()).decode()).verify(BODY, signed)
    with pytest.raises(WebhookVerificationError):  # bytes are the key itself, not its base64
        Webhook(base64.b64encode(secret.encode())).verify(BODY, signed)


@pytest.mark.parametrize("tamper", ["body", "timestamp", "id", "secret"])
def test_tampering_fails_verification(tamper: str) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    now = int(time.time())
    signature = sign(secret, MSG, now, BODY)
    body, message_id, timestamp, verifier = BODY, MSG, now, Webhook(secret)
    if tamper == "body":
        body = BODY.replace('"x"', '"y"')
    elif tamper == "timestamp":
        timestamp = now + 1
    elif tamper == "id":
        message_id = MSG + "0"
    else:
        verifier = Webhook("whsec_" + base64.b64encode(os.urandom(24)).decode())
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body, headers(message_id, timestamp, signature))


def test_signing_key() -> None:
    key = os.urandom(24)
    assert signing_key("whsec_" + base64.b64encode(key).decode()) == key
    assert signing_key("plain") == b"plain"
    for bad in ("", "whsec_", "whsec_not base64!", "whsec_@@@@"):
        with pytest.raises(ValueError):
            signing_key(bad)
