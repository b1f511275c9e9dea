"""Events: publish (one or a batch), consumer groups and offset resets, subscriptions and dead letters, get."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request

from hub.api.middleware import idempotency_key, idempotent, json_body, manager, ok, paging
from hub.schemas import EventTypeSchemaSchema, load

blueprint = Blueprint("events", __name__)


@blueprint.post("/events")
@idempotent
def publish_event() -> Any:
    """Publish an event; the tenant is added to its envelope and headers."""
    return ok(manager().publish.accept(g.tenant, json_body(), idempotency_key()), 201)


@blueprint.post("/events/batch")
@idempotent
def publish_events() -> Any:
    """Publish up to 500 events in one round trip; each event's outcome is in the answer."""
    return ok(manager().publish.accept_batch(g.tenant, json_body(), idempotency_key()), 201)


@blueprint.get("/events/schemas")
def list_event_schemas() -> Any:
    """Every event type with a schema the tenant's events are checked against (its own first), by version."""
    return ok({"items": manager().publish.schemas.listing(g.tenant)})


@blueprint.get("/events/schemas/<event_type>/<int:version>")
def get_event_schema(event_type: str, version: int) -> Any:
    """One version of an event type's JSON Schema (what an event's ``dataschema`` names)."""
    return ok(manager().publish.schemas.describe(g.tenant, event_type, version))


@blueprint.put("/events/schemas/<event_type>/<int:version>")
def register_event_schema(event_type: str, version: int) -> Any:
    """Register the tenant's own version of an event type's schema: 422 when it is not backward compatible with
    the version before (unless ``breaking``: true), or is not a valid JSON Schema."""
    request_body = load(EventTypeSchemaSchema(), json_body())
    entry = manager().publish.schemas.register_for_tenant(g.tenant, event_type, version, request_body["schema"], breaking=request_body["breaking"])
    return ok(entry.view(with_schema=True), 201)


@blueprint.get("/events/consumer-groups")
def consumer_groups() -> Any:
    """The tenant's consumer groups (ids starting with ``<tenant>.`` or ``<tenant>-``), with members and lag."""
    return ok({"groups": manager().publish.consumer_groups(g.tenant)})


@blueprint.delete("/events/consumer-groups/<group>")
def delete_consumer_group(group: str) -> Any:
    """Delete one of the tenant's consumer groups and its committed offsets (409 while it has members outside the
    hub; the hub's subscriptions of it are paused and stay paused)."""
    return ok(manager().publish.delete_consumer_group(g.tenant, group, request.args.get("provider")))


@blueprint.get("/events/topics")
def list_topics() -> Any:
    """The topics of the tenant's broker (``?provider=`` for another)."""
    return ok(manager().publish.topics(g.tenant, request.args.get("provider")))


@blueprint.post("/events/topics")
def create_topic() -> Any:
    """Create a topic with its partitions, replication and retention (``created: false`` when it existed)."""
    return ok(manager().publish.create_topic(g.tenant, json_body()), 201)


@blueprint.post("/events/consumer-groups/<group>/reset")
@idempotent(with_record=False)
def reset_offsets(group: str) -> Any:
    """Move a consumer group's committed offsets in one topic (the hub's subscription of it is paused meanwhile)."""
    return ok(manager().publish.reset_offsets(g.tenant, group, json_body()))


@blueprint.get("/events/subscriptions")
def list_subscriptions() -> Any:
    """The tenant's subscriptions: where each runs, its status, last error and dead letters."""
    return ok({"subscriptions": manager().publish.subscriptions(g.tenant)})


@blueprint.post("/events/subscriptions")
def create_subscription() -> Any:
    """Define a subscription (hub.yaml's shape plus ``name``): topics, a filter and a handler (an action, a
    webhook); every hub process picks it up within seconds. A bad setting is a 422 naming it."""
    return ok(manager().publish.create_subscription(g.tenant, json_body()), 201)


@blueprint.delete("/events/subscriptions/<name>")
def delete_subscription(name: str) -> Any:
    """Remove a subscription defined through the API (409 for one from hub.yaml)."""
    return ok(manager().publish.delete_subscription(g.tenant, name))


@blueprint.get("/events/subscriptions/<name>")
def get_subscription(name: str) -> Any:
    return ok(manager().publish.subscription(g.tenant, name))


@blueprint.post("/events/subscriptions/<name>/pause")
def pause_subscription(name: str) -> Any:
    """Stop consuming, in whichever hub process runs it, until resumed."""
    return ok(manager().publish.pause(g.tenant, name, paused=True))


@blueprint.post("/events/subscriptions/<name>/resume")
def resume_subscription(name: str) -> Any:
    return ok(manager().publish.pause(g.tenant, name, paused=False))


@blueprint.get("/events/dead-letters")
def dead_letters() -> Any:
    """Records whose handler kept failing (``?subscription=&limit=``), newest first."""
    limit, _ = paging()
    return ok({"items": manager().publish.dead_letters(g.tenant, request.args.get("subscription"), limit)})


@blueprint.post("/events/dead-letters/<letter_id>/replay")
def replay_dead_letter(letter_id: str) -> Any:
    """Hand one dead letter to its subscription's handler again: ``delivered`` (the dead letter is removed) or
    ``failed`` with the new error (kept, one attempt more)."""
    return ok(manager().publish.replay_dead_letter(g.tenant, letter_id))


@blueprint.get("/events/<record_id>")
def get_event(record_id: str) -> Any:
    """An event (``evt_…``) or a batch (``eve_…``) by id."""
    hub = manager()
    record = hub.get_record(record_id, g.tenant)
    if record.kind == "event_batch":
        return ok(hub.publish.batch_view(record))
    return ok(hub.publish.view(hub.get_record(record_id, g.tenant, "event")))
