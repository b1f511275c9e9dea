"""Marshmallow schemas of the API: one definition serves validation, serialisation and the OpenAPI
document. Field names are the seed API's camelCase (``data_key``); attributes are snake_case."""

from __future__ import annotations

import re
from datetime import UTC
from decimal import Decimal
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from hub.capabilities import CHANNELS, PAYMENT_STATUSES, currency_exponent

CURRENCY = re.compile(r"^[A-Z]{3}$")
TOPIC = re.compile(r"^(?!\.\.?$)[A-Za-z0-9._-]{1,249}$")  # "." and ".." are no topic names (Kafka's rule)
EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
#: What the amount validators below enforce, for the OpenAPI document (apispec cannot read a @validates method).
#: At most 3 decimal places (KWD, BHD); how many the currency allows (0 for JPY) is checked with the currency.
AMOUNT_RULES = {
    "minimum": 0,
    "exclusiveMinimum": True,
    "maximum": 99999999.999,
    "multipleOf": 0.001,
    "description": "In major units, as a string or number; no more decimal places than the currency's ISO 4217 minor unit (2 for USD, 0 for JPY, 3 for KWD): more is a 422 naming amount.",
}


def check_amount_in(amount: Decimal | None, currency: str, field: str = "amount") -> None:
    """For services: :func:`check_currency_amount` raising the hub's ValidationError (a 422 naming ``field``)."""
    from hub.errors import ValidationError as HubValidationError

    try:
        check_currency_amount(amount, currency, field)
    except ValidationError as error:
        raise HubValidationError(error.messages_dict) from None


def check_currency_amount(amount: Decimal | None, currency: str, field: str = "amount") -> None:
    """Refuse (naming ``field``) an amount with more decimal places than ``currency``'s minor unit has."""
    if amount is None:
        return
    try:
        places = currency_exponent(currency)
    except ValueError as error:
        raise ValidationError({"currency": [str(error)]}) from None
    if -amount.as_tuple().exponent > places:  # type: ignore[operator]
        allowed = "no decimal places" if places == 0 else f"at most {places} decimal places"
        raise ValidationError({field: [f"{currency.upper()} amounts have {allowed} (ISO 4217 minor unit)"]})


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class JsonBoolean(fields.Boolean):
    """``true`` or ``false`` only: the document says boolean, so 0, 1 and "yes" are refused, not read as one."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class RecipientSchema(StrictSchema):
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    email = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=320))
    phone = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=40))
    #: Chat destination (a Slack channel) for chat notifications.
    channel = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    #: ISO 3166 region used to read a phone number written without its country code.
    region = fields.String(load_default=None, allow_none=True, validate=validate.Length(equal=2))


class NotificationSchema(StrictSchema):
    type = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    recipients = fields.List(fields.Nested(RecipientSchema), load_default=list, validate=validate.Length(max=100_000))
    template = fields.String(load_default="custom", validate=validate.Length(min=1, max=100))
    data = fields.Dict(keys=fields.String(), load_default=dict)
    priority = fields.String(load_default="normal", validate=validate.OneOf(["low", "normal", "high"]))
    fallback_services = fields.List(
        fields.String(validate=validate.OneOf(CHANNELS)), data_key="fallbackServices", load_default=list
    )
    #: Force background delivery (202) even for a small send.
    asynchronous = JsonBoolean(data_key="async", load_default=False)

    @validates_schema
    def _recipients_needed(self, data: dict[str, Any], **_: Any) -> None:
        if data["type"] != "chat" and not data["recipients"]:
            raise ValidationError({"recipients": ["at least one recipient is required"]})
        if data["type"] in data["fallback_services"]:
            raise ValidationError({"fallbackServices": ["must not repeat the primary type"]})


class PaymentSchema(StrictSchema):
    amount = fields.Decimal(required=True, as_string=True, metadata=AMOUNT_RULES)
    currency = fields.String(
        required=True,
        validate=validate.Regexp(r"^[A-Za-z]{3}$", error="a three-letter ISO 4217 code, e.g. USD"),
        metadata={"description": "ISO 4217 code, any case (USD, jpy) of a currency with a minor unit (not a metal such as XAU)"},
    )
    gateway = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))
    order_id = fields.String(data_key="orderId", load_default=None, allow_none=True, validate=validate.Length(max=200))
    payment_method = fields.String(
        data_key="paymentMethod", load_default=None, allow_none=True, validate=validate.Length(max=255)
    )
    customer = fields.Dict(load_default=dict)
    description = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1000))
    metadata = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    #: False: authorise only (status requires_capture); POST /payments/<id>/capture takes the money later.
    capture = JsonBoolean(load_default=True)

    @validates("amount")
    def _amount(self, value: Decimal, **_: Any) -> None:
        if not value.is_finite() or value <= 0:
            raise ValidationError("must be greater than 0")
        if value.as_tuple().exponent < -3:  # type: ignore[operator]
            raise ValidationError("at most 3 decimal places")
        if value > Decimal("99999999.999"):
            raise ValidationError("too large")

    @validates("currency")
    def _currency(self, value: str, **_: Any) -> None:
        if not CURRENCY.match(value.upper()):
            raise ValidationError("a three-letter ISO 4217 code, e.g. USD")
        try:
            currency_exponent(value)
        except ValueError as error:
            raise ValidationError(str(error)) from None

    @validates_schema
    def _amount_in_currency(self, data: dict[str, Any], **_: Any) -> None:
        if "amount" in data and "currency" in data:
            check_currency_amount(data["amount"], data["currency"])


class TestPaymentSchema(PaymentSchema):
    order_id = fields.String(data_key="orderId", load_default="test_order", validate=validate.Length(max=200))


class PaymentListSchema(Schema):
    """``GET /payments`` filters (the query string); ``limit`` and ``offset`` are the page."""

    class Meta:
        unknown = EXCLUDE

    status = fields.String(load_default=None, validate=validate.OneOf(PAYMENT_STATUSES))
    gateway = fields.String(load_default=None, validate=validate.Length(min=1, max=100))
    order_id = fields.String(data_key="orderId", load_default=None, validate=validate.Length(min=1, max=200))
    #: ISO 8601; a time without an offset is UTC. ``createdTo`` is exclusive.
    created_from = fields.AwareDateTime(data_key="createdFrom", load_default=None, default_timezone=UTC)
    created_to = fields.AwareDateTime(data_key="createdTo", load_default=None, default_timezone=UTC)

    @validates_schema
    def _range(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("created_from") and data.get("created_to") and data["created_to"] <= data["created_from"]:
            raise ValidationError({"createdTo": ["must be after createdFrom"]})


class RefundSchema(StrictSchema):
    amount = fields.Decimal(load_default=None, allow_none=True, as_string=True, metadata=AMOUNT_RULES)
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))
    #: Refund by the provider's transaction id instead of the payment's id in the URL.
    transaction_id = fields.String(
        data_key="transactionId", load_default=None, allow_none=True, validate=validate.Length(max=255)
    )

    @validates("amount")
    def _amount(self, value: Decimal | None, **_: Any) -> None:
        if value is not None and (not value.is_finite() or value <= 0 or value.as_tuple().exponent < -3):  # type: ignore[operator]
            raise ValidationError("a positive amount with at most 3 decimal places")


class CaptureSchema(StrictSchema):
    #: Omitted: the whole authorised amount; less: a partial capture (the rest is released).
    amount = fields.Decimal(load_default=None, allow_none=True, as_string=True, metadata=AMOUNT_RULES)

    @validates("amount")
    def _amount(self, value: Decimal | None, **_: Any) -> None:
        if value is not None and (not value.is_finite() or value <= 0 or value.as_tuple().exponent < -3):  # type: ignore[operator]
            raise ValidationError("a positive amount with at most 3 decimal places")


class CancelSchema(StrictSchema):
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class EventSchema(StrictSchema):
    topic = fields.String(required=True, validate=validate.Regexp(TOPIC, error="letters, digits, '.', '_' or '-'"))
    event_type = fields.String(
        data_key="eventType",
        required=True,
        validate=validate.Regexp(EVENT_TYPE, error="dotted lower-case name such as inventory.stock.updated"),
    )
    data = fields.Dict(keys=fields.String(), required=True)
    key = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1000))
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    #: The version of the event type's schema the data follows; the newest when omitted (GET /events/schemas).
    schema_version = fields.Integer(data_key="schemaVersion", load_default=None, allow_none=True, validate=validate.Range(min=1))
    #: CloudEvents ``subject`` (what the event is about); the key when omitted.
    subject = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class EventTypeSchemaSchema(StrictSchema):
    """``PUT /events/schemas/<type>/<version>``: a tenant's own JSON Schema for that event type's data."""

    schema = fields.Dict(required=True)
    breaking = JsonBoolean(load_default=False)


class EventBatchSchema(StrictSchema):
    """``POST /events/batch``: up to 500 events, published in one round trip where the broker can."""

    events = fields.List(fields.Nested(EventSchema), required=True, validate=validate.Length(min=1, max=500))


class TopicSchema(StrictSchema):
    """``POST /events/topics``: a topic to create (``None``: the provider's defaults)."""

    topic = fields.String(required=True, validate=validate.Regexp(TOPIC, error="letters, digits, '.', '_' or '-'"))
    partitions = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=10000))
    replication_factor = fields.Integer(data_key="replicationFactor", load_default=None, allow_none=True, validate=validate.Range(min=1, max=32))
    retention_ms = fields.Integer(data_key="retentionMs", load_default=None, allow_none=True, validate=validate.Range(min=-1))
    #: The publish provider to create it on (default: the tenant's first that can).
    provider = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))


class OffsetResetSchema(StrictSchema):
    """``POST /events/consumer-groups/<group>/reset``: where to move the group's committed offsets in ``topic``."""

    topic = fields.String(required=True, validate=validate.Regexp(TOPIC, error="letters, digits, '.', '_' or '-'"))
    to = fields.String(required=True, validate=validate.OneOf(["earliest", "latest", "timestamp", "explicit"]))
    #: With ``to: timestamp``: the first offset written at or after this time (ISO 8601; UTC if no zone).
    timestamp = fields.DateTime(load_default=None, allow_none=True)
    #: With ``to: explicit``: partition -> next offset to consume.
    offsets = fields.Dict(
        keys=fields.String(validate=validate.Regexp(r"^\d{1,6}$", error="a partition number")),
        values=fields.Integer(validate=validate.Range(min=0)),
        load_default=dict,
    )
    #: The provider to reset on (default: the one the tenant's subscription of the group consumes from).
    provider = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))

    @validates_schema
    def _target(self, data: dict[str, Any], **_: Any) -> None:
        if data["to"] == "timestamp" and data.get("timestamp") is None:
            raise ValidationError({"timestamp": ["required with to: timestamp"]})
        if data["to"] == "explicit" and not data.get("offsets"):
            raise ValidationError({"offsets": ["required with to: explicit (partition -> offset)"]})


class FileUploadSchema(StrictSchema):
    """JSON upload (``content`` base64, for small files); multipart uploads use the same fields as form
    fields, raw-body uploads as query parameters (``fileName`` also as the ``X-File-Name`` header)."""

    file_name = fields.String(data_key="fileName", required=True, validate=validate.Length(min=1, max=255))
    content = fields.String(load_default=None, allow_none=True)
    content_type = fields.String(
        data_key="contentType", load_default=None, allow_none=True, validate=validate.Length(max=255)
    )
    category = fields.String(load_default="general", validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,100}$"))
    file_type = fields.String(data_key="fileType", load_default=None, allow_none=True, validate=validate.Length(max=50))
    metadata = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


class DirectUploadSchema(StrictSchema):
    """``POST /files/uploads``: ask for a URL to upload a file straight to the storage provider."""

    file_name = fields.String(data_key="fileName", required=True, validate=validate.Length(min=1, max=255))
    content_type = fields.String(
        data_key="contentType", load_default=None, allow_none=True, validate=validate.Length(max=255)
    )
    #: Bytes the client will send; checked against ``storage_limits.max_file_size`` now and when it completes.
    size = fields.Integer(required=True, validate=validate.Range(min=1))
    category = fields.String(load_default="general", validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,100}$"))
    file_type = fields.String(data_key="fileType", load_default=None, allow_none=True, validate=validate.Length(max=50))
    metadata = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


class TestFileSchema(StrictSchema):
    file_name = fields.String(
        data_key="fileName", load_default="test-document.txt", validate=validate.Length(min=1, max=255)
    )
    file_type = fields.String(data_key="fileType", load_default="document")
    category = fields.String(load_default="test", validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,100}$"))


class SyncSchema(StrictSchema):
    data_type = fields.String(
        data_key="dataType", required=True, validate=validate.Regexp(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    )
    options = fields.Dict(keys=fields.String(), load_default=dict)
    provider = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))
    asynchronous = JsonBoolean(data_key="async", load_default=True)
    #: Ignore the saved cursor and read the stream from the beginning.
    full_resync = JsonBoolean(data_key="fullResync", load_default=False)
    #: Records per page asked of the provider, and the run's limits; hub.yaml's ``sync:`` section by default.
    page_size = fields.Integer(
        data_key="pageSize", load_default=None, allow_none=True, validate=validate.Range(min=1, max=10_000)
    )
    max_pages = fields.Integer(
        data_key="maxPages", load_default=None, allow_none=True, validate=validate.Range(min=1, max=100_000)
    )
    max_records = fields.Integer(
        data_key="maxRecords", load_default=None, allow_none=True, validate=validate.Range(min=1, max=10_000_000)
    )


class TestSyncSchema(SyncSchema):
    asynchronous = JsonBoolean(data_key="async", load_default=False)


class InventorySyncSchema(StrictSchema):
    full_resync = JsonBoolean(data_key="fullResync", load_default=False)


class Quantity(fields.Number):
    """A number kept as the caller wrote it: ``5`` stays an integer, ``2.5`` a float."""

    num_type = float

    def _format_num(self, value: Any) -> int | float:
        if isinstance(value, bool):
            raise ValidationError("a number, not a boolean")
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValidationError("a finite number")
        return int(number) if number.is_integer() else number


class InventoryUpdateSchema(StrictSchema):
    sku = fields.String(required=True, validate=validate.Length(min=1, max=255))
    location = fields.String(required=True, validate=validate.Length(min=1, max=255))
    #: The new level (``mode: set``) or the change, negative to take away (``mode: adjust``).
    quantity = Quantity(required=True)
    mode = fields.String(load_default="set", validate=validate.OneOf(["set", "adjust"]))
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


class InventoryPushSchema(StrictSchema):
    #: The sync provider to send the updates to; the first of the tenant's that can push by default.
    provider = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))
    updates = fields.List(
        fields.Nested(InventoryUpdateSchema), required=True, validate=validate.Length(min=1, max=1000)
    )
    asynchronous = JsonBoolean(data_key="async", load_default=False)
    metadata = fields.Dict(keys=fields.String(), load_default=dict)


class InventoryOverrideSchema(StrictSchema):
    """``PUT /inventory/<sku>/<location>``: a level set by hand."""

    quantity = Quantity(required=True, validate=validate.Range(min=0, error="a level of 0 or more"))
    #: Why: kept in the history and the audit trail with who set it.
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))
    #: Push it to the sources that accept writes (``inventory.sources.<name>.writable``).
    push = JsonBoolean(load_default=True)


class InventoryHistorySchema(Schema):
    """``GET /inventory/<sku>/history`` filters: ``from`` inclusive, ``to`` exclusive (ISO 8601, UTC by default)."""

    class Meta:
        unknown = EXCLUDE

    since = fields.AwareDateTime(data_key="from", load_default=None, default_timezone=UTC)
    until = fields.AwareDateTime(data_key="to", load_default=None, default_timezone=UTC)
    location = fields.String(load_default=None, validate=validate.Length(min=1, max=255))
    provider = fields.String(load_default=None, validate=validate.Length(min=1, max=100))

    @validates_schema
    def _range(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("since") and data.get("until") and data["until"] <= data["since"]:
            raise ValidationError({"to": ["must be after from"]})


class DiscrepancyListSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    status = fields.String(load_default="open", validate=validate.OneOf(["open", "resolved", "all"]))
    sku = fields.String(load_default=None, validate=validate.Length(min=1, max=255))


class CredentialsSchema(StrictSchema):
    """``PUT /credentials/<provider>``: the provider's settings for this tenant (validated by building it)."""

    settings = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=100)), required=True, validate=validate.Length(min=1, max=50))
    #: How long webhooks signed with the previous secret still verify (a day by default; 0: at once).
    grace_seconds = fields.Integer(data_key="graceSeconds", load_default=86400, validate=validate.Range(min=0, max=30 * 86400))


class ErrorSchema(Schema):
    success = fields.Boolean(dump_default=False)
    message = fields.String()
    error = fields.Raw()
    errors = fields.Dict()
    #: A provider's own code for the refusal (a card decline's reason).
    code = fields.String()
    #: The providers tried, in order, with each one's outcome.
    attempts = fields.List(fields.Dict())


class EnvelopeSchema(Schema):
    success = fields.Boolean(dump_default=True)
    data = fields.Raw()


#: JSON deeper than this is refused before validation: no request schema nests more than a few levels, and
#: walking (or storing, or rendering) a 5,000-level document would only cost stack.
MAX_DEPTH = 32


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored or sent as text (None when it can): a NUL (PostgreSQL refuses it, C
    libraries and file systems cut at it) or a lone surrogate (JSON's ``"\\ud800"``: not encodable as
    UTF-8, so a database, a file name or an SMTP header would fail on it)."""
    if "\x00" in text:
        return "must not contain a NUL character"
    if text.isascii():  # the common case, without an encoding
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it holds a lone surrogate)"
    return None


def text_errors(value: Any, depth: int = 0) -> Any:
    """The problems of every string in ``value`` (keys too, at any depth), shaped like marshmallow's
    errors (``{"recipients": {0: {"name": [...]}}}``), or None when there are none."""
    if isinstance(value, str):
        problem = text_problem(value)
        return [problem] if problem else None
    if isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            return [f"nested too deeply (at most {MAX_DEPTH} levels)"]
        errors: dict[Any, Any] = {}
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and (problem := text_problem(key)):
                errors[key.encode("utf-8", "backslashreplace").decode("ascii", "replace")] = [f"key {problem}"]
                continue
            found = text_errors(item, depth + 1)
            if found:
                errors[key] = found
        return errors or None
    return None


def check_text(payload: Any, message: str = "The request holds text the hub cannot store or send") -> None:
    """Refuse (422, naming each field) input no provider or database could take: see :func:`text_problem`.
    Run on every request body before its schema, so one check covers every field of every schema."""
    from hub.errors import ValidationError as HubValidationError

    errors = text_errors(payload)
    if errors:
        raise HubValidationError(errors if isinstance(errors, dict) else {"body": errors}, message)


def load(schema: Schema, payload: Any) -> dict[str, Any]:
    """Validate ``payload``; raise the hub's ValidationError whose fields name every bad key."""
    from hub.errors import ValidationError as HubValidationError

    if payload is None:
        raise HubValidationError({"body": ["a JSON object is required"]}, "Request body must be a JSON object")
    if not isinstance(payload, dict):
        raise HubValidationError({"body": ["must be a JSON object"]}, "Request body must be a JSON object")
    check_text(payload)
    try:
        return schema.load(payload)
    except ValidationError as error:
        raise HubValidationError(error.messages_dict) from None
