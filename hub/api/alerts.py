"""Operations alert incidents: hub-wide (a provider's circuit serves every tenant), so for admin tokens only."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from hub.api.middleware import manager, ok, paging, require_admin
from hub.errors import ValidationError

blueprint = Blueprint("alerts", __name__)


@blueprint.get("/alerts")
@require_admin
def list_alerts() -> Any:
    """Alert incidents, newest first (``?status=open|resolved|all``): what opened, when, and when it was over."""
    limit, _ = paging()
    status = request.args.get("status", "open")
    if status not in ("open", "resolved", "all"):
        raise ValidationError({"status": ["one of open, resolved, all"]})
    return ok({"items": manager().alerts.incidents(None if status == "all" else status, limit)})
