"""Events: publish, consumer groups, get."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from hub.api.middleware import idempotency_key, idempotent, json_body, manager, ok

blueprint = Blueprint("events", __name__)


@blueprint.post("/events")
@idempotent
def publish_event() -> Any:
    """Publish an event; the tenant is added to its envelope and headers."""
    return ok(manager().publish.accept(g.tenant, json_body(), idempotency_key()), 201)


@blueprint.get("/events/consumer-groups")
def consumer_groups() -> Any:
    """The tenant's consumer groups (ids starting with ``<tenant>.`` or ``<tenant>-``)."""
    return ok({"groups": manager().publish.consumer_groups(g.tenant)})


@blueprint.get("/events/<record_id>")
def get_event(record_id: str) -> Any:
    hub = manager()
    return ok(hub.publish.view(hub.get_record(record_id, g.tenant, "event")))
