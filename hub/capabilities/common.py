"""What every provider shares: the capabilities, the :class:`Provider` base class and its context, health
results, webhooks, and :func:`to_dict`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from marshmallow import Schema
from requests.structures import CaseInsensitiveDict

#: The five capabilities a provider can offer; each is one or more hooks in :mod:`hub.hookspecs`.
CAPABILITIES = ("notify", "pay", "store", "publish", "sync")

#: Notification channels. A ``notify`` provider says which of these it can deliver.
CHANNELS = ("email", "sms", "chat")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Provider:
    """Convenient base for provider classes (optional: any class with the same attributes works).

    The core builds one instance per configured provider (``providers.<name>`` in ``hub.yaml``) and,
    when a tenant overrides its settings, one more per such tenant. Subclasses set the class attributes
    and implement the capability's hooks as methods decorated with ``@hookimpl``.
    """

    #: The provider type users write as ``type:`` in hub.yaml (``"smtp"``, ``"stripe"``).
    type_name: ClassVar[str] = ""
    #: One of :data:`CAPABILITIES`.
    capability: ClassVar[str] = ""
    #: For ``notify`` providers: the channels it delivers (subset of :data:`CHANNELS`).
    channels: ClassVar[tuple[str, ...]] = ()
    #: The marshmallow schema of its settings; unknown keys are refused at start-up.
    settings_schema: ClassVar[type[Schema] | None] = None
    #: Setting name -> environment variable read when the setting is absent from hub.yaml.
    env_settings: ClassVar[dict[str, str]] = {}
    #: Setting names whose values are secrets: masked in logs, records and ``GET /services``.
    secret_settings: ClassVar[tuple[str, ...]] = ()
    #: One line for ``GET /plugins`` and the docs.
    description: ClassVar[str] = ""

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        #: The configured name (``providers.<name>``), unique in the hub.
        self.name = name
        self.settings = settings
        self.context = context
        self.log = logging.getLogger(f"hub.provider.{name}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


@dataclass
class ProviderContext:
    """What the core hands a provider when building it."""

    #: The tenant whose settings override this instance, or ``None`` for the shared instance.
    tenant: str | None
    #: ``"development"`` or ``"production"``: test-only providers refuse to run in production.
    mode: str
    #: Folder for the provider's local state (the hub's data directory).
    data_dir: str


# --- health and webhooks ----------------------------------------------------------------------


@dataclass
class HealthResult:
    #: ``"success"`` or ``"error"``, as in the API's health details.
    status: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "success"


@dataclass
class WebhookRequest:
    """An HTTP request a provider sent to ``POST /api/integrations/webhooks/<provider>``."""

    url: str
    #: Looked up case-insensitively (``headers["x-twilio-signature"]`` finds ``X-Twilio-Signature``), as
    #: HTTP header names are; iterating gives the names as sent.
    headers: Mapping[str, str]
    body: bytes
    form: dict[str, str]
    query: dict[str, str]

    def __post_init__(self) -> None:
        if not isinstance(self.headers, CaseInsensitiveDict):
            self.headers = CaseInsensitiveDict(dict(self.headers))


@dataclass
class WebhookEvent:
    """One delivery/payment status change found in a webhook.

    ``reference`` is the provider id the hub recorded (``provider_message_id`` or ``transaction_id``);
    ``status`` is the hub's word for it: ``delivered``, ``bounced``, ``failed``... for a delivery, one of
    :data:`PAYMENT_STATUSES` for a payment (keep the provider's own word in ``details["raw_status"]``, and
    the refunded total in ``details["amount_refunded"]`` when the event says it).
    """

    event_id: str
    reference: str
    status: str
    type: str = ""
    recipient: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def parse_timestamp(value: Any) -> datetime | None:
    """An ISO 8601 / RFC 3339 string (``Z`` or an offset; none means UTC) as an aware datetime, else ``None``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def to_dict(value: Any) -> Any:
    """Plain-JSON form of the dataclasses above (Decimal -> str, datetime -> ISO 8601)."""
    if hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    if isinstance(value, dict):
        return {key: to_dict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_dict(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
