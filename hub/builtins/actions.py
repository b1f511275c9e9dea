"""Subscription actions: handler types a subscription in ``hub.yaml`` can name to act on the events it consumes --
send a notification (``notify``), publish to another topic (``publish``) or start a sync job (``sync``).

Registered through :func:`~hub.hookspecs.register_handler_types`, as a plugin would. Each action is idempotent per
event: it passes ``sub:<subscription>:<event id>`` as its idempotency key, so a redelivered event (at-least-once)
answers from the first run instead of notifying or publishing twice. Records that are not hub events (another
producer's messages) are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import Schema, fields, validate

from hub import hookimpl
from hub.capabilities import CHANNELS, ConsumedRecord, Event, HandlerContext, Subscription
from hub.errors import PermanentError, ValidationError
from hub.services.event_filters import MISSING, field_value


class NotifySettings(Schema):
    #: ``email``, ``sms`` or ``chat``.
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    template = fields.String(required=True)
    #: Fixed recipients (``[{email: ...}]``) ...
    recipients = fields.List(fields.Dict(), load_default=list)
    #: ... or a field of the event's data holding them (``data.contacts``), or both.
    recipients_field = fields.String(load_default=None, allow_none=True)
    #: Template fields taken from the event's data under another name (``{current_stock: newQuantity}``).
    data_map = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    #: Merged over the event's data for the template (``{threshold: 10}``).
    data = fields.Dict(load_default=dict)
    priority = fields.String(load_default="normal", validate=validate.OneOf(["low", "normal", "high"]))


class PublishSettings(Schema):
    topic = fields.String(required=True, validate=validate.Length(min=1, max=249))
    #: The new event's type; the consumed event's type when omitted.
    event_type = fields.String(load_default=None, allow_none=True)


class SyncSettings(Schema):
    data_type = fields.String(required=True)
    provider = fields.String(load_default=None, allow_none=True)
    #: Event data fields passed as the sync's options (``{supplierId: supplier_id}``: option <- data field).
    options_from = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


def _key(context: HandlerContext, event: Event) -> str:
    return f"sub:{context.subscription}:{event.id}"


def _field(data: dict[str, Any], path: str) -> Any:
    value = field_value(data, path)
    return None if value is MISSING else value


def _action(label: str, run: Callable[[Event], Any]) -> Callable[..., Any]:
    """The handler of an action: ``run(event)`` for each hub event (other producers' records are skipped); what
    the hub refuses now it refuses on every retry, so a refusal is a dead letter at once, with the reason."""

    def handle(record: ConsumedRecord, subscription: Subscription) -> Any:
        event = record.event()
        if event is None:
            return None
        try:
            return run(event)
        except ValidationError as error:
            raise PermanentError(f"the action was refused: {error.message} {error.errors}") from None

    handle.label = label  # type: ignore[attr-defined]
    return handle


def notify_action(settings: dict[str, Any], context: HandlerContext) -> Callable[..., Any]:
    def notify(event: Event) -> Any:
        recipients = list(settings["recipients"])
        if settings["recipients_field"]:
            found = _field(event.data, settings["recipients_field"])
            recipients += found if isinstance(found, list) else [found] if isinstance(found, dict) else []
        data = {**event.data, **{name: _field(event.data, path) for name, path in settings["data_map"].items()}, **settings["data"]}
        return context.hub().send_notification(
            settings["channel"],
            recipients,
            template=settings["template"],
            data=data,
            priority=settings["priority"],
            tenant_id=context.tenant,
            idempotency_key=_key(context, event),
        )

    return _action(f"notify {settings['channel']} {settings['template']}", notify)


def publish_action(settings: dict[str, Any], context: HandlerContext) -> Callable[..., Any]:
    def publish(event: Event) -> Any:
        return context.hub().publish_event(
            settings["topic"],
            settings["event_type"] or event.event_type,
            event.data,
            key=event.key,
            tenant_id=context.tenant,
            idempotency_key=_key(context, event),
        )

    return _action(f"publish {settings['topic']}", publish)


def sync_action(settings: dict[str, Any], context: HandlerContext) -> Callable[..., Any]:
    def sync(event: Event) -> Any:
        options = {option: _field(event.data, field) for option, field in settings["options_from"].items()}
        return context.hub().sync_external_data(
            context.tenant,
            settings["data_type"],
            {key: value for key, value in options.items() if value is not None},
            provider=settings["provider"],
            asynchronous=True,
            idempotency_key=_key(context, event),
        )

    return _action(f"sync {settings['data_type']}", sync)


@hookimpl
def register_handler_types(register: Callable[..., None]) -> None:
    register("notify", notify_action, NotifySettings)
    register("publish", publish_action, PublishSettings)
    register("sync", sync_action, SyncSettings)
