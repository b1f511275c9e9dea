"""A tenant's own provider credentials: stored encrypted, never returned (only which settings are set)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from hub.api.middleware import json_body, manager, ok
from hub.schemas import CredentialsSchema, load

blueprint = Blueprint("credentials", __name__)


def _who() -> str:
    token = g.token
    return f"token:{token.name or token.prefix}"


@blueprint.get("/credentials")
def list_credentials() -> Any:
    """The providers the tenant stored its own settings for: names of the settings and versions, no values."""
    return ok({"items": manager().runtime.credentials.list(g.tenant)})


@blueprint.put("/credentials/<provider>")
def put_credentials(provider: str) -> Any:
    """Store the tenant's settings for one provider (an API key, a webhook secret): encrypted, audited, in effect
    within seconds in every process; the previous version still verifies webhooks for ``graceSeconds``."""
    body = load(CredentialsSchema(), json_body())
    return ok(manager().runtime.credentials.put(g.tenant, provider, body["settings"], _who(), body["grace_seconds"]))


@blueprint.delete("/credentials/<provider>")
def delete_credentials(provider: str) -> Any:
    """Forget the tenant's stored settings for one provider (hub.yaml's apply again)."""
    manager().runtime.credentials.delete(g.tenant, provider, _who())
    return ok({"provider": provider, "deleted": True})
