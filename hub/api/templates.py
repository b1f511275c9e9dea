"""Templates: list, save, delete and preview the tenant's notification templates."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from hub.api.middleware import json_body, manager, ok
from hub.errors import ValidationError
from hub.schemas import check_text

blueprint = Blueprint("templates", __name__)


@blueprint.get("/templates")
def list_templates() -> Any:
    """Every template the tenant can use (built-in, plugin, hub.yaml or its own), per channel."""
    return ok({"items": manager().templates.describe(g.tenant)})


@blueprint.put("/templates/<name>")
def save_template(name: str) -> Any:
    """Add or replace the tenant's own template ``name`` for one channel."""
    return ok(manager().templates.save(g.tenant, name, json_body()))


@blueprint.delete("/templates/<name>/<channel>")
def delete_template(name: str, channel: str) -> Any:
    """Remove the tenant's own template; the built-in or configured one applies again."""
    return ok(manager().templates.delete(g.tenant, name, channel))


@blueprint.post("/templates/<name>/preview")
def preview_template(name: str) -> Any:
    """Render a template with ``data`` for ``channel`` without sending anything."""
    body = json_body()
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ValidationError({"body": ["must be a JSON object"]}, "Request body must be a JSON object")
    check_text(body)
    channel = body.get("channel", "email")
    if channel not in ("email", "sms", "chat"):
        raise ValidationError({"channel": ["one of email, sms, chat"]})
    if not isinstance(body.get("data", {}), dict):
        raise ValidationError({"data": ["must be an object"]})
    rendered = manager().templates.render(name, channel, body.get("data", {}), g.tenant)
    return ok({"subject": rendered.subject, "text": rendered.text, "html": rendered.html, "blocks": rendered.blocks})
