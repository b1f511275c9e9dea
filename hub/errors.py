"""The error hierarchy plugins raise and the core's retry/failover logic relies on.

A provider raises:

* :class:`TransientError` when the call may succeed if repeated (timeouts, 5xx, connection refused,
  the provider's own rate limit). The core retries it with backoff, then fails over to the next provider.
* :class:`PermanentError` when this request will never succeed (an invalid recipient, a declined card, an
  unknown transaction). The core neither retries nor fails over: the caller gets a 422.
* :class:`ConfigurationError` when the provider itself is unusable (missing or rejected credentials, a bad
  setting). The core does not retry it, but fails over to the next provider.
* :class:`OutcomeUnknownError` (a :class:`TransientError`) when the request may have reached the provider and
  its answer was lost (a timeout after sending, a connection dropped while reading the reply). The core
  retries the *same* provider with the same idempotency key and never fails over: a second provider would
  charge again.

Anything else a provider raises is treated as transient (a bug in a plugin must not be mistaken for a
declined card), and logged with its traceback.
"""

from __future__ import annotations


class HubError(Exception):
    """Base class of every error the hub raises on purpose."""

    #: HTTP status the REST API answers with when this error reaches it.
    status_code = 500

    def __init__(self, message: str, *, field: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.detail = detail


class ProviderError(HubError):
    """Raised by a provider; tells the core whether trying again can help."""

    retryable = False
    failover = False
    status_code = 503

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        detail: str | None = None,
        provider_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, field=field, detail=detail)
        #: The provider's own error code (Stripe ``card_declined``, Twilio ``21211``...).
        self.provider_code = provider_code
        #: Seconds the provider asked us to wait, when it said so.
        self.retry_after = retry_after


class TransientError(ProviderError):
    """The call failed for a reason that may go away: retry with backoff, then fail over. Raise it only when
    the request certainly did nothing (refused before sending, a 429/503 the provider says it did not
    process); when it may have, raise :class:`OutcomeUnknownError`."""

    retryable = True
    failover = True
    status_code = 503


class ProviderThrottledError(TransientError):
    """The provider refused the call for a rate or cost limit (HTTP 429, Shopify's ``THROTTLED``): it is up
    and did nothing. Retried after ``retry_after`` (exactly, when the provider says it), and not counted by
    the circuit breaker: several jobs sharing one API's quota must not open its circuit."""


class OutcomeUnknownError(TransientError):
    """The request may have reached the provider, and whether it did anything is unknown: a timeout after
    the request was sent, a connection dropped while reading the answer, a 5xx from a gateway that may have
    processed the request. Retried on the same provider with the same idempotency key (which makes the retry
    safe), never failed over: another provider would do it a second time. A payment whose outcome stays
    unknown is kept ``processing`` and looked up later, never marked failed."""

    retryable = True
    failover = False
    status_code = 503


class PermanentError(ProviderError):
    """The request itself was refused: neither retry nor fail over."""

    retryable = False
    failover = False
    status_code = 422


class NotFoundError(PermanentError):
    """The object the request names (file, transaction, message) does not exist at the provider."""

    status_code = 404


class UnsupportedError(PermanentError):
    """This provider does not offer what was asked (a sync source without that data type): the core
    tries the next provider, which may."""

    failover = True


class InUseError(PermanentError):
    """The request needs the resource idle and it is not (resetting the offsets of a consumer group that
    still has active members): the caller gets a 409 and may try again once it is idle."""

    status_code = 409


class ConfigurationError(ProviderError):
    """The provider is misconfigured or its credentials were rejected: fail over, do not retry."""

    retryable = False
    failover = True
    status_code = 503


class SignatureError(PermanentError):
    """An incoming webhook's signature did not verify."""

    status_code = 401


class ConfigError(HubError):
    """``hub.yaml`` (or the environment) is invalid; ``path`` names the offending key."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}", field=path, detail=reason)
        self.path = path
        self.reason = reason


class ValidationError(HubError):
    """A caller's input is invalid; ``errors`` maps each field path to its messages."""

    status_code = 422

    def __init__(self, errors: dict, message: str | None = None) -> None:
        self.errors = errors
        fields = ", ".join(sorted(_flatten_paths(errors))) or "input"
        super().__init__(message or f"Invalid input: {fields}", field=fields)


class PayloadTooLargeError(ValidationError):
    """An upload went past ``storage_limits.max_file_size`` while it was being read; nothing was stored.
    The API answers 413. Raised by :class:`hub.capabilities.UploadStream` from ``read()``: a store
    provider lets it propagate."""

    status_code = 413

    def __init__(self, limit: int) -> None:
        super().__init__({"file": [f"the file is over the limit of {limit} bytes"]}, f"File too large: over {limit} bytes")
        self.limit = limit


class IncompleteUploadError(ValidationError):
    """An upload ended before the length it announced, or its source broke while it was being read (the
    client went away); nothing was stored. The API answers 400. Raised by
    :class:`hub.capabilities.UploadStream` from ``read()``: a store provider lets it propagate."""

    status_code = 400

    def __init__(self, reason: str) -> None:
        super().__init__({"file": [reason]}, f"The upload is incomplete: {reason}")


class RateLimitedError(HubError):
    """A tenant exceeded its rate limit for a service."""

    status_code = 429

    def __init__(self, service: str, limit: str, retry_after: float) -> None:
        super().__init__(f"Rate limit for {service} exceeded ({limit}); retry in {retry_after:.0f}s")
        self.service = service
        self.limit = limit
        self.retry_after = retry_after


class NoProviderError(HubError):
    """No configured provider could serve the request (none configured, or all failed)."""

    status_code = 503

    def __init__(self, message: str, *, attempts: list[dict] | None = None, cause: Exception | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts or []
        self.cause = cause


class NotFound(HubError):
    """A record the caller asked for does not exist (or belongs to another tenant)."""

    status_code = 404


class Forbidden(HubError):
    """The request is authenticated by something that does not allow it (a signed URL that expired or was
    altered)."""

    status_code = 403


class Conflict(HubError):
    """The request conflicts with an earlier one (an idempotency key still in progress)."""

    status_code = 409


def _flatten_paths(errors: object, prefix: str = "") -> list[str]:
    if not isinstance(errors, dict):
        return [prefix] if prefix else []
    paths: list[str] = []
    for key, value in errors.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            paths.extend(_flatten_paths(value, path))
        else:
            paths.append(path)
    return paths


class UploadNotReplayable(HubError):
    """A store try failed after reading part of an upload that cannot be read again (a request body past
    the head the hub keeps): nothing is stored and the client must send it again."""

    status_code = 503
