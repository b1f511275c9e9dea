"""hub-webhooks: outbound webhooks signed as the Standard Webhooks spec says, and a verifier for their receivers.

Sending: the subscription handler type ``webhook`` (``register_handler_types``; it replaces the core's plain one).
Each record a subscription consumes becomes one ``POST`` to the configured URL with

* ``webhook-id`` -- the event's id (or ``<topic>:<partition>:<offset>`` for a record that is no hub event): the
  same on every redelivery, so the receiver can drop duplicates by it;
* ``webhook-timestamp`` -- when this attempt was sent, in unix seconds;
* ``webhook-signature`` -- ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, one per configured secret,
  separated by spaces (secret rotation), computed by the ``standardwebhooks`` reference library;
* the body: the event's CloudEvents envelope (``application/cloudevents+json``), or a JSON document describing the
  record (``application/json``).

2xx means delivered. The subscription retries what raises (5xx, 408, 429, 404, 401/403, redirects, timeouts, lost
connections) with its backoff and dead-letters it after ``max_attempts``; other 4xx (400, 410, 422...) raise
:class:`~hub.errors.PermanentError`: a dead letter at once.

Receiving: :func:`verify` (and :func:`verify_request` for a WSGI ``environ``) checks those headers with the same
library and returns the parsed body, or raises :class:`InvalidSignature`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from marshmallow import RAISE, Schema, ValidationError, fields, validate
from standardwebhooks import Webhook, WebhookVerificationError

from hub import hookimpl
from hub.capabilities import CLOUDEVENTS_CONTENT_TYPE, ConsumedRecord, HandlerContext, Subscription
from hub.errors import ConfigurationError, PermanentError, SignatureError
from hub.http import HttpClient, describe_url

__all__ = [
    "DEFAULT_TOLERANCE",
    "InvalidSignature",
    "WebhookSender",
    "WebhookSettings",
    "generate_secret",
    "register_handler_types",
    "verify",
    "verify_request",
]

__version__ = "0.1.0"

#: The handler type subscriptions name in ``hub.yaml`` (``handler: {type: standard-webhook, url: ...}``).
TYPE_NAME = "standard-webhook"
#: Seconds a receiver accepts between a message's ``webhook-timestamp`` and its own clock (either way).
DEFAULT_TOLERANCE = 300
#: The window ``standardwebhooks.Webhook.verify`` applies itself (fixed at five minutes in the library).
_LIBRARY_TOLERANCE = 300
#: What each body may be: ``auto`` (an event's envelope, else the record document), ``cloudevents`` (hub events
#: only: any other record is a dead letter), ``record`` (always the record document).
BODIES = ("auto", "cloudevents", "record")
#: Headers the handler sets itself, which ``headers`` may not override.
RESERVED_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length"})
SECRET_PREFIX = "whsec_"
#: The spec asks for secrets of 24 to 64 bytes; shorter ones are refused (longer ones are fine for HMAC).
MIN_SECRET_BYTES = 24
USER_AGENT = f"integration-hub-webhooks/{__version__}"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


# --- secrets -------------------------------------------------------------------------------------------


def generate_secret(size: int = 32) -> str:
    """A new random secret in the Standard Webhooks format, ``whsec_<base64 of size bytes>``."""
    if size < MIN_SECRET_BYTES:
        raise ValueError(f"a secret needs at least {MIN_SECRET_BYTES} bytes")
    return SECRET_PREFIX + base64.b64encode(os.urandom(size)).decode("ascii")


def _secret_problem(secret: Any) -> str | None:
    """Why ``secret`` is no usable ``whsec_<base64>`` secret, or ``None``. Never quotes the secret."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        return f"must be a Standard Webhooks secret: '{SECRET_PREFIX}' followed by base64 (see generate_secret)"
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return f"the part after '{SECRET_PREFIX}' is not valid base64"
    if len(key) < MIN_SECRET_BYTES:
        return f"too short: the key must be at least {MIN_SECRET_BYTES} bytes (it is {len(key)})"
    return None


def _check_secret(secret: Any) -> None:
    problem = _secret_problem(secret)
    if problem:
        raise ValidationError(problem)


def _signers(secrets: str | Iterable[str]) -> list[Webhook]:
    """One ``Webhook`` per distinct secret, in order; ``ValueError`` (not quoting it) for a bad or absent one."""
    listed = [secrets] if isinstance(secrets, str) else list(secrets)
    unique = list(dict.fromkeys(listed))
    if not unique:
        raise ValueError("no webhook secret given")
    for index, secret in enumerate(unique):
        problem = _secret_problem(secret)
        if problem:
            raise ValueError(f"webhook secret #{index + 1}: {problem}")
    return [Webhook(secret) for secret in unique]


# --- settings ------------------------------------------------------------------------------------------


def _check_headers(headers: Mapping[str, str]) -> None:
    for name in headers:
        if not _HEADER_NAME.match(name):
            raise ValidationError(f"{name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValidationError(f"{name!r} is set by the webhook handler itself")


class WebhookSettings(Schema):
    """``subscriptions.<name>.handler`` for ``type: standard-webhook`` (without ``type``)."""

    class Meta:
        unknown = RAISE

    #: Where each record is POSTed. Its path and query are never shown in labels or errors.
    url = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    #: Signs every POST (``whsec_<base64>``); absent (with ``secrets`` empty): sent unsigned.
    secret = fields.String(load_default=None, allow_none=True, validate=_check_secret)
    #: More secrets, for rotation: every secret signs, so the receiver may hold any one of them.
    secrets = fields.List(fields.String(validate=_check_secret), load_default=list, validate=validate.Length(max=10))
    #: Extra headers sent with every POST (an ``Authorization`` the receiver also wants, say).
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict, validate=_check_headers)
    #: Seconds to wait for each read of the answer; ``connect_timeout`` to connect (default: ``timeout``).
    timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=300))
    connect_timeout = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=0.1, max=300))
    #: Which body each POST carries (see :data:`BODIES`).
    body = fields.String(load_default="auto", validate=validate.OneOf(BODIES))


# --- sending -------------------------------------------------------------------------------------------


def _label_url(url: str) -> str:
    """``scheme://host[:port]/…``: enough to recognise the endpoint, without the credentials, path or query a
    webhook URL may carry."""
    parts = urlsplit(url)
    host = describe_url(url)
    if parts.hostname and ":" in parts.hostname:  # IPv6
        host = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
    rest = "…" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{host}/{rest}"


class WebhookSender:
    """The ``webhook`` handler: POSTs each record, signed, to one URL (see the module's description).

    Built by the handler type from ``hub.yaml``; from Python, ``manager.subscribe(topic, name,
    WebhookSender("https://erp.example/hooks", secrets=[secret]))`` works too. Thread-safe (one pooled
    session per thread); :meth:`close` closes the sessions.
    """

    def __init__(
        self,
        url: str,
        *,
        secrets: str | Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
        body: str = "auto",
    ) -> None:
        if body not in BODIES:
            raise ValueError(f"body must be one of {', '.join(BODIES)}")
        listed = [secrets] if isinstance(secrets, str) else list(secrets)
        self.url = url
        self.signers = _signers(listed) if listed else []
        self.body = body
        self.service = f"the webhook at {describe_url(url)}"
        # 404: a wrong URL (or a receiver not deployed yet) is fixed by someone, so it is retried like a 5xx rather
        # than dropping every record; other 4xx refuse this record for good (PermanentError, the default mapping).
        self.client = HttpClient(
            self.service,
            timeout=timeout,
            connect_timeout=connect_timeout,
            headers={"User-Agent": USER_AGENT, **dict(headers or {})},
            status_errors={404: ConfigurationError},
        )

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], context: HandlerContext | None = None) -> WebhookSender:
        """The handler type's factory: ``settings`` as :class:`WebhookSettings` loaded them."""
        secrets = ([settings["secret"]] if settings.get("secret") else []) + list(settings.get("secrets") or [])
        return cls(
            settings["url"],
            secrets=secrets,
            headers=settings.get("headers"),
            timeout=settings.get("timeout", 10.0),
            connect_timeout=settings.get("connect_timeout"),
            body=settings.get("body", "auto"),
        )

    @property
    def label(self) -> str:
        return f"webhook {_label_url(self.url)}"

    def __repr__(self) -> str:
        return f"<WebhookSender {self.label!r}>"

    def message(self, record: ConsumedRecord, subscription: Subscription) -> tuple[str, str, str]:
        """``(webhook-id, body text, content type)`` for ``record``."""
        event = record.event()
        message_id = event.id if event is not None else f"{record.topic}:{record.partition}:{record.offset}"
        if event is not None and self.body != "record":
            document: Any = event.envelope()
            content_type = CLOUDEVENTS_CONTENT_TYPE
        elif self.body == "cloudevents":
            raise PermanentError(
                f"{record.topic}[{record.partition}]@{record.offset} is no hub event, and this webhook sends "
                "CloudEvents envelopes only (body: cloudevents)"
            )
        else:
            document = record.document(subscription)
            content_type = "application/json"
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str)
        return message_id, text, content_type

    def sign(self, message_id: str, sent_at: datetime, text: str) -> str | None:
        """The ``webhook-signature`` value: ``v1,<base64>`` per secret, space-separated (``None`` unsigned)."""
        if not self.signers:
            return None
        return " ".join(signer.sign(message_id, sent_at, text) for signer in self.signers)

    def __call__(self, record: ConsumedRecord, subscription: Subscription) -> None:
        message_id, text, content_type = self.message(record, subscription)
        # Whole seconds: the header carries them, and the signature covers exactly what the header says.
        sent_at = datetime.fromtimestamp(int(time.time()), UTC)
        headers = {
            "Content-Type": content_type,
            "webhook-id": message_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
        }
        signature = self.sign(message_id, sent_at, text)
        if signature:
            headers["webhook-signature"] = signature
        response = self.client.post(self.url, data=text.encode("utf-8"), headers=headers, check=False)
        if response.status_code == 410:
            raise PermanentError(
                f"{self.service} answered HTTP 410 Gone: the endpoint was removed (remove or fix the subscription)",
                provider_code="410",
            )
        error = self.client.error_for(response)
        if error is not None:
            raise error

    def close(self) -> None:
        self.client.close()


@hookimpl
def register_handler_types(register: Any) -> None:
    register(TYPE_NAME, WebhookSender.from_settings, WebhookSettings)


# --- receiving -----------------------------------------------------------------------------------------


class InvalidSignature(SignatureError):
    """A webhook whose signature does not verify: forged, tampered with, unsigned, or outside the tolerance.
    Answer it with a 401 (or 400) and do not act on it. The message never quotes a secret or a signature."""


_SIGNATURE_ENTRY = re.compile(r"^v1,[A-Za-z0-9+/]+={0,2}$")


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | Iterable[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Any:
    """Check a webhook's Standard Webhooks signature and return its parsed JSON body.

    :param body: the request body exactly as received (bytes; a ``str`` is taken as its UTF-8 text).
    :param headers: the request's headers (any mapping; names are matched without case): ``webhook-id``,
        ``webhook-timestamp`` and ``webhook-signature``.
    :param secret: your ``whsec_...`` secret, or several (during a rotation): one signature matching any of
        them is enough.
    :param tolerance: seconds the ``webhook-timestamp`` may lie in the past or the future (replay protection).
    :raises InvalidSignature: a header missing or malformed, the timestamp outside the tolerance, no signature
        matching a secret (forged, or the body, id or timestamp changed after signing).
    :raises ValueError: ``secret`` is no ``whsec_`` secret, or the verified body is not JSON.
    """
    signers = _signers(secret)
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    message_id = lowered.get("webhook-id", "").strip()
    stamp = lowered.get("webhook-timestamp", "").strip()
    entries = [entry for entry in lowered.get("webhook-signature", "").split() if entry]
    if not (message_id and stamp and entries):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature header")
    if not stamp.isdigit():
        raise InvalidSignature("the webhook-timestamp header is not unix seconds")
    sent = int(stamp)
    now = time.time()
    if sent < now - tolerance:
        raise InvalidSignature(f"the webhook-timestamp is more than {tolerance:g} s old (a replay, or a clock off)")
    if sent > now + tolerance:
        raise InvalidSignature(f"the webhook-timestamp is more than {tolerance:g} s in the future (a clock off?)")
    # The library gives up on the first malformed entry (and on other versions' formats): hand it the v1 ones.
    usable = [entry for entry in entries if _SIGNATURE_ENTRY.match(entry)]
    if not usable:
        raise InvalidSignature("the webhook-signature header has no v1 signature")
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidSignature("the body is not UTF-8 text, so it cannot be what was signed") from None
    else:
        text = body
    checked = {"webhook-id": message_id, "webhook-timestamp": stamp, "webhook-signature": " ".join(usable)}
    if not any(_matches(signer, text, checked, sent, now) for signer in signers):
        raise InvalidSignature("no signature matches the secret: forged, or changed after it was signed")
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError("the webhook's signature verified, but its body is not JSON") from None


def _matches(signer: Webhook, text: str, headers: dict[str, str], sent: int, now: float) -> bool:
    if abs(now - sent) < _LIBRARY_TOLERANCE - 1:
        try:
            signer.verify(text, headers, json_parse=False)
        except (WebhookVerificationError, ValueError):
            return False
        return True
    # A wider tolerance than the library's fixed five minutes: the same comparison, on the library's signature.
    expected = base64.b64decode(signer.sign(headers["webhook-id"], datetime.fromtimestamp(sent, UTC), text)[3:])
    return any(
        hmac.compare_digest(expected, base64.b64decode(entry[3:])) for entry in headers["webhook-signature"].split()
    )


#: The largest body :func:`verify_request` reads (webhook bodies are small; anything bigger is refused).
MAX_BODY = 5 * 1024 * 1024


def verify_request(
    environ: dict[str, Any],
    secret: str | Iterable[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_body: int = MAX_BODY,
) -> Any:
    """:func:`verify` for a WSGI request: reads the body from ``environ`` (and puts it back, so the application
    can still read it) and the headers from its ``HTTP_*`` keys. In Flask, ``verify(request.get_data(),
    request.headers, secret)`` does the same.

    :raises InvalidSignature: as :func:`verify`, or the body is larger than ``max_body``.
    """
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise InvalidSignature("the Content-Length header is not a number") from None
    if length > max_body:
        raise InvalidSignature(f"the body is larger than {max_body} bytes")
    stream = environ.get("wsgi.input")
    body = stream.read(length) if (stream is not None and length > 0) else b""
    environ["wsgi.input"] = io.BytesIO(body)
    headers = {
        key[5:].replace("_", "-").lower(): str(value) for key, value in environ.items() if key.startswith("HTTP_")
    }
    return verify(body, headers, secret, tolerance=tolerance)
