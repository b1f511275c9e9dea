"""publish: validate an event, record it, publish it to the first broker that takes it, and show the
tenant's consumer groups."""

from __future__ import annotations

from typing import Any

from hub.capabilities import Event, to_dict
from hub.errors import NoProviderError, ProviderError
from hub.records import Record
from hub.runtime import Runtime, describe
from hub.schemas import EventSchema, load


class PublishService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def accept(self, tenant: str, raw: Any, idempotency_key: str | None = None) -> dict[str, Any]:
        runtime = self.runtime
        runtime.require_running()
        request = load(EventSchema(), raw)
        payload = {"topic": request["topic"], "eventType": request["event_type"], "key": request["key"]}
        record, replayed = runtime.ledger.begin("event", tenant, "kafka", payload, idempotency_key, self.view, before=lambda: runtime.hit_rate_limit(tenant, "kafka"))
        if record is None:
            return replayed
        event = Event(
            id=record.id,
            tenant=tenant,
            topic=request["topic"],
            event_type=request["event_type"],
            data=request["data"],
            key=request["key"],
            headers={**request["headers"], "tenant": tenant, "event-type": request["event_type"]},
        )
        try:
            call = runtime.calls.publish(tenant, event, record_id=record.id)
        except (ProviderError, NoProviderError) as error:
            runtime.ledger.save(record.id, status="failed", error=describe(error), attempt_log=getattr(error, "attempts", []))
            raise
        record = runtime.ledger.save(record.id, status="succeeded", provider=call.provider, result=to_dict(call.result), attempt_log=call.attempts)
        return self.view(record)

    def view(self, record: Record) -> dict[str, Any]:
        result = record.result or {}
        return {
            "success": record.status == "succeeded",
            "eventId": record.id,
            "topic": record.payload.get("topic"),
            "eventType": record.payload.get("eventType"),
            "partition": result.get("partition"),
            "offset": result.get("offset"),
            "provider": record.provider,
            "status": record.status,
        }

    def consumer_groups(self, tenant: str) -> list[dict[str, Any]]:
        """Consumer groups of the tenant (groups whose id starts with ``<tenant>.`` or ``<tenant>-``)."""
        groups: list[dict[str, Any]] = []
        for name in self.runtime.registry.service_providers("kafka", tenant):
            if self.runtime.hook_for(name, tenant, "consumer_groups") is None:
                continue
            found = self.runtime.calls.consumer_groups(tenant, provider=name).result
            groups.extend({**group, "provider": name} for group in found or [] if str(group.get("groupId", "")).startswith((f"{tenant}.", f"{tenant}-")))
        return groups
