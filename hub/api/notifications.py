"""Notifications: send, list, get."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from hub.api.middleware import idempotency_key, idempotent, json_body, list_records, manager, ok

blueprint = Blueprint("notifications", __name__)


@blueprint.post("/notifications")
@idempotent
def create_notification() -> Any:
    """Send a notification (200) or, for bulk sends and ``async: true``, accept it (202)."""
    view, queued = manager().notify.accept(g.tenant, json_body(), idempotency_key())
    return ok(view, 202 if queued else 200)


@blueprint.get("/notifications")
def list_notifications() -> Any:
    return list_records("notification", manager().notify.view)


@blueprint.get("/notifications/<record_id>")
def get_notification(record_id: str) -> Any:
    hub = manager()
    return ok(hub.notify.view(hub.get_record(record_id, g.tenant, "notification")))
