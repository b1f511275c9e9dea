"""Notification templates: the library (built-in, plugin, hub.yaml) plus each tenant's own saved ones."""

from __future__ import annotations

import re
import time
from typing import Any

from marshmallow import ValidationError as MarshmallowValidationError
from sqlalchemy import select

from hub.config import TemplateSchema
from hub.delivery import Rendered, TemplateLibrary
from hub.errors import NotFound, ValidationError
from hub.plugins import TemplateDefinition
from hub.records import StoredTemplate, utcnow
from hub.runtime import Runtime
from hub.schemas import check_text

TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
#: The longest source of one part of a tenant's template, and the most variables it may declare.
MAX_TEMPLATE_CHARS = 100_000
MAX_REQUIRED = 100


class TemplateService:
    #: A tenant's saved templates are cached this long: a bulk send renders without a query per batch,
    #: and a change made through another hub process shows at once with Redis (hub.runtime.invalidation), else
    #: within this.
    CACHE_SECONDS = 2.0

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._cache: dict[str, tuple[float, dict[tuple[str, str], TemplateDefinition]]] = {}
        runtime.invalidations.on("templates", self._forget)
        self.library = TemplateLibrary(runtime.host.templates, runtime.config, stored=self._stored)

    def render(self, name: str, channel: str, data: dict[str, Any], tenant: str | None) -> Rendered:
        return self.library.render(name, channel, data, tenant)

    def names(self, channel: str | None = None, tenant: str | None = None) -> list[str]:
        return self.library.names(channel, tenant)

    def describe(self, tenant: str) -> list[dict[str, Any]]:
        return self.library.describe(tenant)

    def check_syntax(self, definition: TemplateDefinition) -> None:
        self.library.check_syntax(definition)

    def _forget(self, tenant: str) -> None:
        if tenant in ("", "*"):
            self._cache.clear()
        else:
            self._cache.pop(tenant, None)

    def _stored(self, tenant: str) -> dict[tuple[str, str], TemplateDefinition]:
        cached = self._cache.get(tenant)
        if cached is not None and time.monotonic() - cached[0] < self.CACHE_SECONDS:
            return cached[1]
        with self.runtime.db.session() as session:
            rows = session.scalars(select(StoredTemplate).where(StoredTemplate.tenant == tenant))
            found = {(row.name, row.channel): _stored_definition(row) for row in rows}
        self._cache[tenant] = (time.monotonic(), found)
        return found

    def save(self, tenant: str, name: str, raw: Any) -> dict[str, Any]:
        """Add or replace the tenant's template ``name`` for one channel (``PUT /templates/<name>``)."""
        if not TEMPLATE_NAME.match(name):
            raise ValidationError({"name": ["letters, digits, '_' and '-', at most 100"]})
        if not isinstance(raw, dict):
            raise ValidationError({"body": ["must be a JSON object"]}, "Request body must be a JSON object")
        check_text(raw)  # a NUL or a lone surrogate could not be stored, nor sent in a header or a body
        try:
            variant = TemplateSchema().load(raw)
        except MarshmallowValidationError as error:
            raise ValidationError(error.messages_dict) from None
        too_long = {part: [f"at most {MAX_TEMPLATE_CHARS:,} characters"] for part in ("subject", "text", "html", "blocks") if len(variant[part] or "") > MAX_TEMPLATE_CHARS}
        if len(variant["required"]) > MAX_REQUIRED or any(len(name) > 100 for name in variant["required"]):
            too_long["required"] = [f"at most {MAX_REQUIRED} names of at most 100 characters"]
        if too_long:
            raise ValidationError(too_long)
        row = StoredTemplate(
            tenant=tenant,
            name=name,
            channel=variant["channel"],
            subject=variant["subject"],
            text=variant["text"],
            html=variant["html"],
            blocks=variant["blocks"],
            required=variant["required"],
            updated_at=utcnow(),
        )
        definition = _stored_definition(row)
        self.check_syntax(definition)
        self.library.check_renders(definition)  # {{ 1/0 }} would fail every send: refused now, not then
        with self.runtime.db.session() as session:
            session.merge(row)
        self.runtime.invalidations.changed("templates", tenant)
        return {"name": name, "channel": row.channel, "source": f"tenant:{tenant}"}

    def delete(self, tenant: str, name: str, channel: str) -> dict[str, Any]:
        with self.runtime.db.session() as session:
            row = session.get(StoredTemplate, (tenant, name, channel))
            if row is None:
                raise NotFound(f"No saved template {name!r} for {channel}")
            session.delete(row)
        self.runtime.invalidations.changed("templates", tenant)
        return {"name": name, "channel": channel, "deleted": True}


def _stored_definition(row: StoredTemplate) -> TemplateDefinition:
    return TemplateDefinition(
        name=row.name,
        channel=row.channel,
        text=row.text,
        subject=row.subject,
        html=row.html,
        blocks=row.blocks,
        required=tuple(row.required or ()),
        source=f"tenant:{row.tenant}",
    )
