"""The Clearhouse API client: `Clearhouse` calls the generated operations (clearhouse_api) with
idempotency keys, retries and pagination; `clearhouse.webhooks` verifies what we deliver."""

from clearhouse.client import API_VERSION, Clearhouse, ClearhouseError
from clearhouse.webhooks import SignatureVerificationError, construct_event, verify_header

__all__ = ["API_VERSION", "Clearhouse", "ClearhouseError", "SignatureVerificationError",
           "construct_event", "verify_header"]
