"""Webhooks for transcriptions and summaries: Standard Webhooks signatures, SSRF-guarded delivery,
retried from rows (``delivery``), URL and header checks for the API (``guard``)."""

from lectern.webhooks.delivery import (
    DELIVERED,
    DISABLED,
    EVENT_TYPES,
    FAILED,
    PENDING,
    deliver_due,
    enqueue,
    make_client,
    retry_schedule,
    run_delivery_loop,
)
from lectern.webhooks.guard import (
    RESERVED_HEADERS,
    GuardedBackend,
    GuardedTransport,
    WebhookRefused,
    allowed_hosts,
    check_webhook,
    is_public_address,
)
from lectern.webhooks.signing import sign, signing_key

__all__ = [
    "DELIVERED",
    "DISABLED",
    "EVENT_TYPES",
    "FAILED",
    "PENDING",
    "RESERVED_HEADERS",
    "GuardedBackend",
    "GuardedTransport",
    "WebhookRefused",
    "allowed_hosts",
    "check_webhook",
    "deliver_due",
    "enqueue",
    "is_public_address",
    "make_client",
    "retry_schedule",
    "run_delivery_loop",
    "sign",
    "signing_key",
]
