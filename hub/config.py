"""Loading and validating ``hub.yaml``.

The file is parsed with PyYAML, ``${VAR}`` / ``${VAR:-default}`` references in string values are replaced
from the environment (after parsing, so a secret's characters never change the YAML's meaning), and the
result is validated by :class:`HubConfigSchema`. Every error names the key's path
(``providers.stripe.api_key: Missing data for required field.``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema
from marshmallow import ValidationError as MarshmallowValidationError

from hub.errors import ConfigError

CONFIG_ENV = "HUB_CONFIG"
#: The source name of inventory levels an operator set by hand (``PUT /inventory/<sku>/<location>``).
OVERRIDE_SOURCE = "override"
DEFAULT_CONFIG_FILE = "hub.yaml"


@dataclass(frozen=True)
class ServiceInfo:
    """A service of the seed API (``email``, ``payment``...): which capability serves it."""

    key: str
    name: str
    type: str
    capability: str
    channel: str | None = None


#: The services the API exposes, by the names the seed API uses. The core knows capabilities and
#: channels, never providers: which providers serve a service comes from hub.yaml.
SERVICES: dict[str, ServiceInfo] = {
    "email": ServiceInfo("email", "Email Service", "communication", "notify", "email"),
    "sms": ServiceInfo("sms", "SMS Service", "communication", "notify", "sms"),
    "chat": ServiceInfo("chat", "Chat Service", "communication", "notify", "chat"),
    "payment": ServiceInfo("payment", "Payment Gateway", "payment", "pay"),
    "kafka": ServiceInfo("kafka", "Event Streaming", "messaging", "publish"),
    "fileStorage": ServiceInfo("fileStorage", "File Storage", "storage", "store"),
    "externalAPI": ServiceInfo("externalAPI", "External API Integration", "integration", "sync"),
}

SERVICE_ALIASES = {
    "payments": "payment",
    "pay": "payment",
    "events": "kafka",
    "publish": "kafka",
    "storage": "fileStorage",
    "files": "fileStorage",
    "store": "fileStorage",
    "sync": "externalAPI",
    "external": "externalAPI",
    "slack": "chat",
}

CHANNEL_SERVICE = {info.channel: key for key, info in SERVICES.items() if info.channel}

DEFAULT_RATE_LIMITS = {"email": "100/minute", "sms": "50/minute", "payment": "200/minute"}


def service_key(name: str) -> str | None:
    """The canonical service key for a name or alias, or None if there is no such service."""
    if name in SERVICES:
        return name
    return SERVICE_ALIASES.get(name) or next((key for key in SERVICES if key.lower() == name.lower()), None)


def _rate_limit_string(value: str) -> None:
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError as error:
        raise MarshmallowValidationError(f"not a rate limit ({error}); write e.g. '100/minute'") from None


class ProviderEntrySchema(Schema):
    """``providers.<name>``: ``type`` plus the provider's own settings (validated by its schema later)."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True)
    enabled = fields.Boolean(load_default=True)
    #: false: ignore the provider type's environment variables (a second SMTP account must not pick up
    #: the first one's SMTP_HOST).
    env = fields.Boolean(load_default=True)


class ServiceSchema(Schema):
    class Meta:
        unknown = RAISE

    providers = fields.List(fields.String(), load_default=list)
    enabled = fields.Boolean(load_default=True)
    #: notify only: skip the rate-limit queue for ``priority: high`` messages.
    high_priority_bypasses_rate_limit = fields.Boolean(load_default=False)


class RateLimitsSchema(Schema):
    class Meta:
        unknown = RAISE

    storage = fields.String(load_default="memory://")
    limits = fields.Dict(keys=fields.String(), values=fields.String(validate=_rate_limit_string), load_default=dict)

    @validates_schema
    def _known_services(self, data: dict[str, Any], **_: Any) -> None:
        unknown = [name for name in data.get("limits", {}) if service_key(name) is None]
        if unknown:
            raise MarshmallowValidationError({"limits": {name: ["unknown service"] for name in unknown}})


class RetrySchema(Schema):
    class Meta:
        unknown = RAISE

    attempts = fields.Integer(load_default=3, validate=validate.Range(min=1, max=20))
    initial_delay = fields.Float(load_default=0.2, validate=validate.Range(min=0))
    max_delay = fields.Float(load_default=5.0, validate=validate.Range(min=0))
    jitter = fields.Float(load_default=0.2, validate=validate.Range(min=0))
    #: A provider's own wait (``Retry-After``, a cost bucket's refill) is honoured exactly, up to this many seconds.
    max_retry_after = fields.Float(load_default=60.0, validate=validate.Range(min=0))
    #: Background jobs: a job that cannot finish (every provider down) is re-queued with capped exponential
    #: backoff (``job_delay`` doubling up to ``job_max_delay`` seconds), like a mail server's queue, and marked
    #: dead only once it has had ``job_attempts`` attempts and ``horizon`` seconds have passed since it
    #: started waiting (a dead notification keeps its unsent recipients: replay it through the API).
    job_attempts = fields.Integer(load_default=5, validate=validate.Range(min=1, max=100))
    job_delay = fields.Float(load_default=5.0, validate=validate.Range(min=0))
    job_max_delay = fields.Float(load_default=300.0, validate=validate.Range(min=0))
    horizon = fields.Float(load_default=4 * 3600.0, validate=validate.Range(min=0))


class BreakerSchema(Schema):
    class Meta:
        unknown = RAISE

    fail_max = fields.Integer(load_default=5, validate=validate.Range(min=1))
    reset_timeout = fields.Float(load_default=30.0, validate=validate.Range(min=0.1))


class BulkheadLimitsSchema(Schema):
    """Concurrent calls to one provider from one process: from job threads and from request threads
    (unset: that kind of thread less one, or no limit below 3 threads; 0: no limit)."""

    class Meta:
        unknown = RAISE

    background = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0, max=1024))
    requests = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0, max=1024))


class BulkheadSchema(BulkheadLimitsSchema):
    """``bulkhead``: per-provider concurrency limits (see :class:`hub.bulkheads.Bulkheads`)."""

    #: Seconds an API request waits for a busy provider's slot before failing over or answering 503.
    max_wait = fields.Float(load_default=0.5, validate=validate.Range(min=0, max=30))
    #: Seconds before a job that found every provider busy is tried again (and the 503's Retry-After).
    retry_after = fields.Float(load_default=1.0, validate=validate.Range(min=0.05, max=300))
    #: Per provider name: its own ``background`` / ``requests`` limits.
    providers = fields.Dict(keys=fields.String(), values=fields.Nested(BulkheadLimitsSchema), load_default=dict)


class CategoryLimitsSchema(Schema):
    """``storage_limits.categories.<category>``: replaces the shared limits for uploads of that category."""

    class Meta:
        unknown = RAISE

    max_file_size = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1))
    allowed_content_types = fields.List(fields.String(), load_default=None, allow_none=True)


class StorageLimitsSchema(Schema):
    class Meta:
        unknown = RAISE

    max_file_size = fields.Integer(load_default=10 * 1024 * 1024, validate=validate.Range(min=1))
    #: Content types (``image/png``) or families (``image/*``) accepted; empty means any.
    allowed_content_types = fields.List(fields.String(), load_default=list)
    #: Per category (``invoices``, ``images``): its own ``max_file_size`` and ``allowed_content_types``.
    categories = fields.Dict(keys=fields.String(), values=fields.Nested(CategoryLimitsSchema), load_default=dict)
    url_expiry = fields.Integer(load_default=3600, validate=validate.Range(min=1))
    #: Signs the hub's own download URLs (for providers without presigned URLs, such as local disk). Unset: a
    #: random key kept in ``data_dir/url-signing.key`` (processes sharing a data dir share it; give every
    #: process the same key, e.g. ``${HUB_URL_SIGNING_KEY}``, when they do not).
    url_signing_key = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=32))
    #: Move files that failover put on a later provider back to the first one (checksum-verified), a batch
    #: every minute; ``hub files migrate`` does it on demand.
    migrate_back = fields.Boolean(load_default=False)


class QueueSchema(Schema):
    class Meta:
        unknown = RAISE

    #: ``sqlite`` (default, a file in the data dir), ``redis`` (scaled out) or ``memory`` (tests).
    backend = fields.String(load_default="sqlite", validate=validate.OneOf(["sqlite", "redis", "memory"]))
    url = fields.String(load_default=None, allow_none=True)
    #: Worker threads started inside ``hub serve``; 0 runs no worker there (use ``hub worker``).
    workers = fields.Integer(load_default=4, validate=validate.Range(min=0, max=64))
    #: Notifications with more recipients than this are accepted with 202 and sent by workers.
    bulk_threshold = fields.Integer(load_default=20, validate=validate.Range(min=1))
    #: Recipients per provider call. Background sends write each call's outcomes as soon as it returns, so after a
    #: crash at most one call's recipients (the ones in flight) can be sent twice: smaller bounds the repeats of
    #: a one-by-one sender (SMTP), larger saves requests to an API that takes many recipients at once.
    batch_size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=10000))
    #: Seconds a worker holds a claimed job before another worker may take it over; renewed every third of
    #: it while the job runs, so a short lease only shortens the wait after a crash.
    lease_seconds = fields.Integer(load_default=30, validate=validate.Range(min=2))


class PaymentSettingsSchema(Schema):
    """``payments``: what the hub does around the gateways."""

    class Meta:
        unknown = RAISE

    #: Topic the hub publishes ``payment.<status>`` events to (through the publish capability) when a gateway's
    #: webhook moves a payment (``payment.succeeded``, ``payment.refunded``, ``payment.disputed``...);
    #: ``null`` publishes none.
    events_topic = fields.String(
        load_default="payments", allow_none=True, validate=validate.Regexp(r"^[A-Za-z0-9._-]{1,249}$")
    )


class PrometheusSchema(Schema):
    """``metrics.prometheus``: who may read ``GET /metrics`` (provider and request counts of every tenant)."""

    class Meta:
        unknown = RAISE

    #: false: ``GET /metrics`` answers 404.
    enabled = fields.Boolean(load_default=True)
    #: A scrape token: ``Authorization: Bearer <token>`` is then enough (an admin API token still works).
    #: Unset: only an admin API token (``hub token create --admin``) reads the metrics.
    token = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=16))
    #: true: no token at all, for a hub whose port only the scraper can reach.
    public = fields.Boolean(load_default=False)


class MetricsSchema(Schema):
    class Meta:
        unknown = RAISE

    prometheus = fields.Nested(PrometheusSchema, load_default=lambda: PrometheusSchema().load({}))


class RetentionSchema(Schema):
    """``retention``: how long personal data stays readable in finished records (GDPR: storage limitation)."""

    class Meta:
        unknown = RAISE

    #: Days after a notification finished before its recipients' addresses (emails, phone numbers, names)
    #: are masked in the record and its outcomes; null keeps them.
    recipient_days = fields.Float(load_default=30, allow_none=True, validate=validate.Range(min=0))


class EventSchemaEntrySchema(Schema):
    """``event_schemas.<event type>[]``: one version of the JSON Schema of that type's ``data``."""

    class Meta:
        unknown = RAISE

    version = fields.Integer(required=True, validate=validate.Range(min=1))
    schema = fields.Dict(required=True)
    #: Registered even though events valid under the version before may be refused by it.
    breaking = fields.Boolean(load_default=False)


class TemplateSchema(Schema):
    class Meta:
        unknown = RAISE

    channel = fields.String(required=True, validate=validate.OneOf(["email", "sms", "chat"]))
    subject = fields.String(load_default=None, allow_none=True)
    text = fields.String(required=True)
    html = fields.String(load_default=None, allow_none=True)
    blocks = fields.String(load_default=None, allow_none=True)
    required = fields.List(fields.String(), load_default=list)


class ScheduleSchema(Schema):
    class Meta:
        unknown = RAISE

    #: What ``hub sync run <name>`` calls it; the data type when omitted.
    name = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"))
    data_type = fields.String(required=True)
    cron = fields.String(required=True)
    tenant = fields.String(load_default=None, allow_none=True)
    provider = fields.String(load_default=None, allow_none=True)
    options = fields.Dict(load_default=dict)
    #: Read the stream from the beginning each time (a nightly full resync beside incremental runs).
    full_resync = fields.Boolean(load_default=False)

    @validates_schema
    def _cron(self, data: dict[str, Any], **_: Any) -> None:
        if len(data["cron"].split()) != 5:
            raise MarshmallowValidationError({"cron": ["five fields: minute hour day month weekday"]})


class SyncSettingsSchema(Schema):
    """``sync:``: how the core pages through a stream."""

    class Meta:
        unknown = RAISE

    #: Records asked of the provider per page.
    page_size = fields.Integer(load_default=500, validate=validate.Range(min=1, max=10_000))
    #: A run stops after this many pages or records (the next run goes on from its checkpoint).
    max_pages = fields.Integer(load_default=100, validate=validate.Range(min=1))
    max_records = fields.Integer(load_default=50_000, validate=validate.Range(min=1))


class InventorySourceSchema(Schema):
    """``inventory.sources.<provider>``: how one sync source's inventory maps onto the hub's."""

    class Meta:
        unknown = RAISE

    #: The source's location id -> the hub's location name (``gid://shopify/Location/1: WAREHOUSE-A``), so
    #: sources that name one place differently are compared and pushed to as one location.
    locations = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=255)), values=fields.String(validate=validate.Length(min=1, max=255)), load_default=dict)
    #: Whether manual overrides are pushed to it; ``null``: when it implements ``sync_push``.
    writable = fields.Boolean(load_default=None, allow_none=True)


class StockThresholdSchema(Schema):
    class Meta:
        unknown = RAISE

    sku = fields.String(required=True, validate=validate.Length(min=1, max=255))
    #: ``null`` or ``"*"``: every location.
    location = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=255))
    threshold = fields.Float(required=True, validate=validate.Range(min=0))
    #: ``null``: every tenant.
    tenant = fields.String(load_default=None, allow_none=True)


class StockAlertTargetSchema(Schema):
    class Meta:
        unknown = RAISE

    channel = fields.String(required=True, validate=validate.OneOf(["email", "sms", "chat"]))
    #: Notification recipients (``[{email: ops@example.com}]``); a chat webhook needs none.
    recipients = fields.List(fields.Dict(), load_default=list)
    template = fields.String(load_default="low_stock_alert")
    priority = fields.String(load_default="high", validate=validate.OneOf(["low", "normal", "high"]))


class LowStockSchema(Schema):
    class Meta:
        unknown = RAISE

    #: The threshold of SKUs no entry names; ``null``: no alert for them.
    default_threshold = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=0))
    #: Most specific first wins: SKU and location, then SKU at every location (``sku: "*"`` for every SKU).
    thresholds = fields.List(fields.Nested(StockThresholdSchema), load_default=list)
    #: Where ``low_stock_alert`` goes when a level falls to or below its threshold (once per crossing).
    notify = fields.List(fields.Nested(StockAlertTargetSchema), load_default=list)


class InventorySettingsSchema(Schema):
    """``inventory:``: the hub's own inventory store over what sync sources report."""

    class Meta:
        unknown = RAISE

    sources = fields.Dict(keys=fields.String(), values=fields.Nested(InventorySourceSchema), load_default=dict)
    #: Seconds after a source's last successful inventory sync before its levels are marked stale; null = never.
    stale_after = fields.Integer(load_default=3600, allow_none=True, validate=validate.Range(min=1))
    #: Two sources differing by more than this at one SKU and location are a discrepancy.
    discrepancy_tolerance = fields.Float(load_default=0, validate=validate.Range(min=0))
    #: Where ``inventory.stock.updated`` and ``inventory.level.discrepancy`` events go; null = none.
    events_topic = fields.String(load_default="inventory-events", allow_none=True, validate=validate.Length(min=1, max=249))
    low_stock = fields.Nested(LowStockSchema, load_default=lambda: LowStockSchema().load({}))


class OpsAlertsSchema(Schema):
    """``alerts:``: operations alerts through notify, one per incident and one on recovery."""

    class Meta:
        unknown = RAISE

    #: Where alerts go (``[{channel: chat}, {channel: email, recipients: [...]}]``); empty: logged only.
    notify = fields.List(fields.Nested(StockAlertTargetSchema), load_default=list)
    #: Whose notification providers and templates send them.
    tenant = fields.String(load_default=None, allow_none=True)
    #: Seconds of the audit trail the rates and counts look at.
    window = fields.Integer(load_default=300, validate=validate.Range(min=10))
    #: A provider whose share of failed calls in the window reaches this (with ``min_calls``) is degraded.
    error_rate = fields.Float(load_default=0.5, validate=validate.Range(min=0, max=1))
    min_calls = fields.Integer(load_default=10, validate=validate.Range(min=1))
    #: A provider whose 95th-percentile latency in the window passes this many milliseconds; null = off.
    latency_p95_ms = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=1))
    #: Refused tokens / forged webhook signatures in the window that make a security incident.
    refused_tokens = fields.Integer(load_default=50, validate=validate.Range(min=1))
    forged_signatures = fields.Integer(load_default=10, validate=validate.Range(min=1))


class TenantSchema(Schema):
    class Meta:
        unknown = RAISE

    #: provider name -> settings that replace the shared ones for this tenant.
    providers = fields.Dict(keys=fields.String(), values=fields.Dict(), load_default=dict)
    services = fields.Dict(keys=fields.String(), values=fields.Nested(ServiceSchema), load_default=dict)
    rate_limits = fields.Dict(
        keys=fields.String(), values=fields.String(validate=_rate_limit_string), load_default=dict
    )
    templates = fields.Dict(keys=fields.String(), values=fields.List(fields.Nested(TemplateSchema)), load_default=dict)
    default_region = fields.String(load_default=None, allow_none=True, validate=validate.Length(equal=2))


class PluginsSchema(Schema):
    class Meta:
        unknown = RAISE

    allow = fields.List(fields.String(), load_default=None, allow_none=True)
    block = fields.List(fields.String(), load_default=list)
    strict = fields.Boolean(load_default=False)


class ServerSchema(Schema):
    class Meta:
        unknown = RAISE

    host = fields.String(load_default="127.0.0.1")
    port = fields.Integer(load_default=8000, validate=validate.Range(min=0, max=65535))
    workers = fields.Integer(load_default=1, validate=validate.Range(min=1, max=64))
    #: On SIGTERM, seconds ``hub serve`` and ``hub worker`` let in-flight requests and running jobs finish
    #: before they exit anyway (a job cut short stays leased and is taken over when its lease ends).
    graceful_timeout = fields.Integer(load_default=30, validate=validate.Range(min=0, max=3600))  # gunicorn takes whole seconds
    #: Seconds ``GET /readyz`` waits for the database and the job queue before it answers 503.
    readiness_timeout = fields.Float(load_default=2.0, validate=validate.Range(min=0.1, max=60))


# --- subscriptions (publish) ---------------------------------------------------------------------

#: Kafka's topic rule, as the API's (hub.schemas.TOPIC); a subscription's name is a lease name too.
_TOPIC = validate.Regexp(r"^[A-Za-z0-9._-]{1,249}$", error="letters, digits, '.', '_' or '-'")
_SUBSCRIPTION_NAME = validate.Regexp(r"^[A-Za-z0-9._-]{1,100}$", error="1-100 letters, digits, '.', '_' or '-'")


class SubscriptionHandlerSchema(Schema):
    """``subscriptions.<name>.handler``: ``{type: webhook, url: ...}`` POSTs each record as JSON;
    ``{type: callable, name: ...}`` calls a handler a plugin registered with ``register_handlers``; any other
    ``type`` is a handler type a plugin registered with ``register_handler_types``, its other keys that type's
    settings (checked by its schema when the subscription is built)."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True, validate=validate.Length(min=1, max=100))
    # No defaults: keys a handler did not set stay out, so a plugin's handler type gets exactly its settings.
    url = fields.Url(allow_none=True, require_tld=False, schemes={"http", "https"})
    headers = fields.Dict(keys=fields.String(), values=fields.String())
    #: Seconds (10 by default).
    timeout = fields.Float(validate=validate.Range(min=0.1, max=300))
    #: Signs each POST (``X-Hub-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">``).
    secret = fields.String(allow_none=True)
    name = fields.String(allow_none=True)

    @validates_schema
    def _complete(self, data: dict[str, Any], **_: Any) -> None:
        if data["type"] not in ("webhook", "callable"):
            return
        needed = "url" if data["type"] == "webhook" else "name"
        if not data.get(needed):
            raise MarshmallowValidationError({needed: [f"required for a {data['type']} handler"]})


class SubscriptionBackoffSchema(Schema):
    class Meta:
        unknown = RAISE

    initial = fields.Float(load_default=1.0, validate=validate.Range(min=0))
    max = fields.Float(load_default=60.0, validate=validate.Range(min=0))


class ConditionSchema(Schema):
    """One condition on a consumed event's data: ``{field: newQuantity, op: lt, value: 10}``."""

    class Meta:
        unknown = RAISE

    #: A dotted path in the event's data (``items.0.sku``; a leading ``data.`` is allowed).
    field = fields.String(required=True, validate=validate.Length(min=1, max=200))
    op = fields.String(load_default="eq", validate=validate.OneOf(["eq", "ne", "lt", "lte", "gt", "gte", "in", "exists"]))
    value = fields.Raw(load_default=None, allow_none=True)


class CrossingSchema(Schema):
    """A value going below a threshold, once per crossing: the event's previous value was at or above it."""

    class Meta:
        unknown = RAISE

    field = fields.String(required=True)
    #: The data field with the value before the change (``oldQuantity``).
    previous = fields.String(required=True)
    threshold = fields.Float(load_default=None, allow_none=True)
    #: Or a data field holding the threshold (``reorderPoint``).
    threshold_field = fields.String(load_default=None, allow_none=True)

    @validates_schema
    def _one_threshold(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("threshold") is None) == (data.get("threshold_field") is None):
            raise MarshmallowValidationError({"threshold": ["give threshold or threshold_field (one of them)"]})


class SubscriptionFilterSchema(Schema):
    """``subscriptions.<name>.filter``: which consumed events the handler gets; the others are skipped (committed)."""

    class Meta:
        unknown = RAISE

    #: Event types, shell-style patterns allowed (``sales.order.*``); empty: any.
    event_types = fields.List(fields.String(), load_default=list)
    #: Every condition must hold.
    where = fields.List(fields.Nested(ConditionSchema), load_default=list)
    crosses_below = fields.Nested(CrossingSchema, load_default=None, allow_none=True)


class SubscriptionSchema(Schema):
    """``subscriptions.<name>``: a long-running consumer, run by one hub process at a time (a lease)."""

    class Meta:
        unknown = RAISE

    #: Whose events these are (default: ``default_tenant``); the group id must carry its prefix.
    tenant = fields.String(load_default=None, allow_none=True)
    topics = fields.List(fields.String(validate=_TOPIC), required=True, validate=validate.Length(min=1))
    #: The consumer group id (default ``<tenant>.<name>``); must start with ``<tenant>.`` or ``<tenant>-``.
    group = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=255))
    #: The publish provider to consume from (default: the tenant's first ``kafka`` provider offering consume).
    provider = fields.String(load_default=None, allow_none=True)
    start = fields.String(load_default="earliest", validate=validate.OneOf(["earliest", "latest"]))
    handler = fields.Nested(SubscriptionHandlerSchema, required=True)
    filter = fields.Nested(SubscriptionFilterSchema, load_default=None, allow_none=True)
    batch_size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    #: Tries per record before it becomes a dead letter (a PermanentError from the handler: at once).
    max_attempts = fields.Integer(load_default=5, validate=validate.Range(min=1, max=100))
    backoff = fields.Nested(SubscriptionBackoffSchema, load_default=lambda: SubscriptionBackoffSchema().load({}))
    #: Also publish dead letters to this topic (on the tenant's kafka providers).
    dead_letter_topic = fields.String(load_default=None, allow_none=True, validate=_TOPIC)
    #: Seconds a dead process keeps the subscription before another process takes over.
    lease_seconds = fields.Float(load_default=10.0, validate=validate.Range(min=1, max=300))
    enabled = fields.Boolean(load_default=True)


class SubscriptionRequestSchema(SubscriptionSchema):
    """``POST /events/subscriptions``: a subscription as hub.yaml holds it, with its ``name``."""

    name = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9._-]{1,100}$"))


class TenantUrlsSchema(Schema):
    class Meta:
        unknown = RAISE

    #: null: refused in production mode, allowed in development (hub/http/targets.py).
    allow_private = fields.Boolean(load_default=None, allow_none=True)
    allow = fields.List(fields.String(validate=validate.Length(min=1)), load_default=list)


class HubConfigSchema(Schema):
    class Meta:
        unknown = RAISE

    mode = fields.String(load_default="development", validate=validate.OneOf(["development", "production"]))
    data_dir = fields.String(load_default="var")
    database_url = fields.String(load_default=None, allow_none=True)
    redis_url = fields.String(load_default=None, allow_none=True)
    default_tenant = fields.String(load_default="default")
    default_region = fields.String(load_default="US", validate=validate.Length(equal=2))
    server = fields.Nested(ServerSchema, load_default=lambda: ServerSchema().load({}))
    plugins = fields.Nested(PluginsSchema, load_default=lambda: PluginsSchema().load({}))
    providers = fields.Dict(keys=fields.String(), values=fields.Nested(ProviderEntrySchema), load_default=dict)
    services = fields.Dict(keys=fields.String(), values=fields.Nested(ServiceSchema), load_default=dict)
    rate_limits = fields.Nested(RateLimitsSchema, load_default=lambda: RateLimitsSchema().load({}))
    retry = fields.Nested(RetrySchema, load_default=lambda: RetrySchema().load({}))
    circuit_breaker = fields.Nested(BreakerSchema, load_default=lambda: BreakerSchema().load({}))
    bulkhead = fields.Nested(BulkheadSchema, load_default=lambda: BulkheadSchema().load({}))
    storage_limits = fields.Nested(StorageLimitsSchema, load_default=lambda: StorageLimitsSchema().load({}))
    queue = fields.Nested(QueueSchema, load_default=lambda: QueueSchema().load({}))
    payments = fields.Nested(PaymentSettingsSchema, load_default=lambda: PaymentSettingsSchema().load({}))
    metrics = fields.Nested(MetricsSchema, load_default=lambda: MetricsSchema().load({}))
    retention = fields.Nested(RetentionSchema, load_default=lambda: RetentionSchema().load({}))
    templates = fields.Dict(keys=fields.String(), values=fields.List(fields.Nested(TemplateSchema)), load_default=dict)
    event_schemas = fields.Dict(keys=fields.String(), values=fields.List(fields.Nested(EventSchemaEntrySchema)), load_default=dict)
    tenants = fields.Dict(keys=fields.String(), values=fields.Nested(TenantSchema), load_default=dict)
    sync_schedules = fields.List(fields.Nested(ScheduleSchema), load_default=list)
    sync = fields.Nested(SyncSettingsSchema, load_default=lambda: SyncSettingsSchema().load({}))
    inventory = fields.Nested(InventorySettingsSchema, load_default=lambda: InventorySettingsSchema().load({}))
    alerts = fields.Nested(OpsAlertsSchema, load_default=lambda: OpsAlertsSchema().load({}))
    tenant_urls = fields.Nested(TenantUrlsSchema, load_default=lambda: TenantUrlsSchema().load({}))
    subscriptions = fields.Dict(
        keys=fields.String(validate=_SUBSCRIPTION_NAME), values=fields.Nested(SubscriptionSchema), load_default=dict
    )

    @validates_schema
    def _subscriptions_refer_to_providers(self, data: dict[str, Any], **_: Any) -> None:
        providers = data.get("providers", {})
        unknown = {
            name: {"provider": [f"no provider named {entry['provider']!r} under providers:"]}
            for name, entry in data.get("subscriptions", {}).items()
            if entry.get("provider") and entry["provider"] not in providers
        }
        if unknown:
            raise MarshmallowValidationError({"subscriptions": unknown})

    @validates_schema
    def _services_refer_to_providers(self, data: dict[str, Any], **_: Any) -> None:
        errors: dict[str, Any] = {}
        providers = data.get("providers", {})
        for name, service in data.get("services", {}).items():
            if service_key(name) is None:
                errors.setdefault("services", {})[name] = [f"unknown service; one of {', '.join(SERVICES)}"]
                continue
            for index, provider in enumerate(service["providers"]):
                if provider not in providers:
                    errors.setdefault("services", {}).setdefault(name, {}).setdefault("providers", {})[index] = [
                        f"no provider named {provider!r} under providers:"
                    ]
        for provider in data.get("bulkhead", {}).get("providers", {}):
            if provider not in providers:
                errors.setdefault("bulkhead", {}).setdefault("providers", {})[provider] = ["no provider of that name under providers:"]
        for provider in data.get("inventory", {}).get("sources", {}):
            if provider not in providers:
                errors.setdefault("inventory", {}).setdefault("sources", {})[provider] = ["no provider of that name under providers:"]
        if OVERRIDE_SOURCE in providers:
            errors.setdefault("providers", {})[OVERRIDE_SOURCE] = [f"{OVERRIDE_SOURCE!r} is reserved: it names manual inventory overrides"]
        for tenant, tenant_config in data.get("tenants", {}).items():
            for provider in tenant_config.get("providers", {}):
                if provider not in providers:
                    errors.setdefault("tenants", {}).setdefault(tenant, {}).setdefault("providers", {})[provider] = [
                        "no provider of that name under providers:"
                    ]
        if errors:
            raise MarshmallowValidationError(errors)


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def interpolate(value: Any, environ: dict[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of ``value``."""
    if isinstance(value, dict):
        return {key: interpolate(item, environ, f"{path}.{key}" if path else str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environ, f"{path}.{index}") for index, item in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ and environ[name] != "":
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(path, f"environment variable {name} is not set")

    replaced = _ENV_REFERENCE.sub(replace, value)
    # A value that was only a reference to an unset-but-defaulted-to-empty variable means "not set".
    return None if replaced == "" and _ENV_REFERENCE.fullmatch(value) else replaced


def first_error(messages: Any, prefix: str = "") -> tuple[str, str]:
    """The first (path, reason) pair in a marshmallow error dict."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            key_path = f"{prefix}.{key}" if prefix else str(key)
            if key in ("_schema", "value"):  # "value": marshmallow's marker for a Dict's value errors
                key_path = prefix or "(root)"
            return first_error(value, key_path)
    if isinstance(messages, list) and messages:
        if isinstance(messages[0], dict | list):
            return first_error(messages[0], prefix)
        return prefix or "(root)", str(messages[0])
    return prefix or "(root)", str(messages)


def validate_config(raw: dict[str, Any] | None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Interpolate and validate a parsed hub.yaml; raises :class:`ConfigError` naming the key path."""
    environ = dict(os.environ) if environ is None else environ
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError("(root)", "hub.yaml must be a mapping")
    interpolated = interpolate(raw, environ)
    try:
        config = HubConfigSchema().load(interpolated)
    except ValidationError as error:
        path, reason = first_error(error.messages)
        raise ConfigError(path, reason) from None
    # Environment variables the seed documents win over the file for the process-wide URLs.
    config["database_url"] = environ.get("DATABASE_URL") or config["database_url"]
    config["redis_url"] = environ.get("REDIS_URL") or config["redis_url"]
    if environ.get("HUB_MODE"):
        if environ["HUB_MODE"] not in ("development", "production"):
            raise ConfigError("HUB_MODE", "must be development or production")
        config["mode"] = environ["HUB_MODE"]
    config["services"] = {service_key(name): value for name, value in config["services"].items()}
    for tenant_name, tenant in config["tenants"].items():
        bad = [name for name in tenant["services"] if service_key(name) is None]
        if bad:
            raise ConfigError(f"tenants.{tenant_name}.services.{bad[0]}", "unknown service")
        tenant["services"] = {service_key(name): value for name, value in tenant["services"].items()}
    return config


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    return Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_FILE)


def load_config(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Read and validate hub.yaml (``$HUB_CONFIG``, else ``./hub.yaml``; missing file = all defaults).

    Relative ``data_dir`` and sqlite paths are taken relative to the file's folder, so the CLI and the
    server agree whatever the working directory.
    """
    file = config_path(path)
    if file.exists():
        try:
            raw = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark else "(file)"
            raise ConfigError(where, f"not valid YAML: {getattr(error, 'problem', error)}") from None
        base = file.resolve().parent
    else:
        if path is not None:
            raise ConfigError(str(file), "file not found")
        raw, base = {}, Path.cwd()
    config = validate_config(raw, environ)
    config["data_dir"] = str((base / config["data_dir"]).resolve())
    config["config_file"] = str(file.resolve()) if file.exists() else None
    return config
