"""Incoming provider webhooks: verify (the provider's ``handle_webhook``), deduplicate by event id, and
hand each event to the service that owns the record it refers to."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.exc import IntegrityError

from hub.capabilities import INVENTORY_LEVEL_EVENT, WebhookEvent, WebhookRequest
from hub.config import SERVICES
from hub.errors import NotFound, SignatureError
from hub.records import ProviderReference, Record, WebhookEventSeen, utcnow
from hub.runtime import Runtime

if TYPE_CHECKING:
    from hub.services.inventory import InventoryService

log = logging.getLogger("hub.webhooks")


class WebhookTarget(Protocol):
    def apply_webhook_event(self, session: Any, record: Record, reference: ProviderReference, provider_name: str, event: WebhookEvent) -> bool: ...


class WebhookService:
    def __init__(self, runtime: Runtime, owners: dict[str, WebhookTarget], inventory: InventoryService | None = None) -> None:
        self.runtime = runtime
        #: record kind -> the service that applies events about such records
        self.owners = owners
        #: Sets the levels sync sources report (``INVENTORY_LEVEL_EVENT``), which belong to no record.
        self.inventory = inventory

    def handle(self, provider_name: str, webhook: WebhookRequest, tenant: str | None = None) -> dict[str, Any]:
        runtime = self.runtime
        slot = runtime.registry.slots.get(provider_name)
        if slot is None:
            raise NotFound(f"No provider named {provider_name}")
        function = runtime.hook_for(provider_name, tenant, "handle_webhook")
        if function is None:
            raise NotFound(f"Provider {provider_name} does not accept webhooks")
        started = time.perf_counter()
        try:
            events = function(webhook=webhook)
        except SignatureError:
            # Mid-rotation the provider may still sign with the previous secret: accepted for its grace period.
            previous = runtime.credentials.previous_instance(tenant, provider_name) if tenant else None
            fallback = runtime.host.hook_for(previous, "handle_webhook") if previous is not None else None
            if fallback is None:
                raise
            events = fallback(webhook=webhook)
        received = duplicates = updated = 0
        for event in events or []:
            received += 1
            try:
                with runtime.db.session() as session:
                    session.add(WebhookEventSeen(provider=provider_name, event_id=event.event_id, received_at=utcnow()))
            except IntegrityError:
                duplicates += 1
                continue
            if event.type == INVENTORY_LEVEL_EVENT and slot.capability == "sync" and self.inventory is not None:
                applied = self.inventory.apply_webhook_level(tenant or runtime.config["default_tenant"], provider_name, event)
            else:
                applied = self._apply(provider_name, event)
            if applied:
                updated += 1
        service = next(
            (key for key, info in SERVICES.items() if info.capability == slot.capability and (info.channel is None or info.channel in slot.channels)),
            "externalAPI",
        )
        runtime.pipeline.observe(service, slot.capability or "", provider_name, "webhook", "success", (time.perf_counter() - started) * 1000, tenant, None, f"{received} events")
        return {"received": received, "duplicates": duplicates, "updated": updated}

    def _apply(self, provider_name: str, event: WebhookEvent) -> bool:
        with self.runtime.db.session() as session:
            reference = session.get(ProviderReference, (provider_name, event.reference))
            if reference is None:
                log.info("webhook event %s from %s matches no record", event.event_id, provider_name)
                return False
            record = session.get(Record, reference.record_id)
            if record is None:
                return False
            owner = self.owners.get(record.kind)
            if owner is None or not owner.apply_webhook_event(session, record, reference, provider_name, event):
                return False
            record.updated_at = utcnow()
            return True
