"""sync: fetch records from external systems (a job, inline or in a worker), keep inventory snapshots,
and create the scheduled sync jobs of ``sync_schedules``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from huey import crontab
from sqlalchemy import select

from hub.capabilities import SyncRequest
from hub.errors import NoProviderError, NotFound, PermanentError, ProviderError, ValidationError
from hub.records import InventorySnapshot, Record, new_id, utcnow
from hub.runtime import Runtime, describe
from hub.schemas import SyncSchema, load


class SyncService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        runtime.jobs.register_handler("sync", lambda record: self.run(record, inline=False))
        runtime.jobs.register_periodic(lambda: self.run_schedules(utcnow()))

    def accept(self, tenant: str, raw: Any, idempotency_key: str | None = None, *, schema: SyncSchema | None = None) -> tuple[dict[str, Any], bool]:
        runtime = self.runtime
        runtime.require_running()
        request = load(schema or SyncSchema(), raw)
        slots = runtime.registry.slots
        if request["provider"] and (request["provider"] not in slots or slots[request["provider"]].capability != "sync"):
            raise ValidationError({"provider": [f"no sync provider named {request['provider']!r}"]})
        existing = runtime.ledger.existing(tenant, "sync", idempotency_key)
        if existing is not None:
            return self.view(existing), existing.status == "queued"
        if not request["asynchronous"]:
            runtime.hit_rate_limit(tenant, "externalAPI", 1)
        payload = {"dataType": request["data_type"], "options": request["options"], "provider": request["provider"]}
        record = runtime.ledger.new("sync", tenant, "externalAPI", payload, idempotency_key, "queued" if request["asynchronous"] else "running")
        if record is None:
            existing = runtime.ledger.existing(tenant, "sync", idempotency_key)
            assert existing is not None
            return self.view(existing), existing.status == "queued"
        if request["asynchronous"]:
            runtime.jobs.enqueue(record.id)
            return self.view(record), True
        record = self.run(record, inline=True)
        return self.view(record), False

    def run(self, record: Record, *, inline: bool) -> Record:
        runtime = self.runtime
        payload = record.payload
        providers = [payload["provider"]] if payload.get("provider") else None
        sync_request = SyncRequest(id=record.id, tenant=record.tenant, data_type=payload["dataType"], options=payload["options"])
        try:
            call = runtime.calls.sync(record.tenant, sync_request, providers=providers, record_id=record.id)
        except PermanentError as error:
            runtime.ledger.save(record.id, status="failed", error=describe(error))
            if inline:
                raise
            return runtime.ledger.get(record.id, record.tenant)
        except (ProviderError, NoProviderError) as error:
            if inline:
                runtime.ledger.save(record.id, status="failed", error=describe(error), attempt_log=getattr(error, "attempts", []))
                raise
            runtime.ledger.requeue_or_dead(record, describe(error))
            return runtime.ledger.get(record.id, record.tenant)
        result = call.result
        snapshot_id = None
        if payload["dataType"] == "inventory":
            snapshot_id = self._snapshot(record.tenant, call.provider, record.id, result.records)
        summary = {"count": result.count, "records": result.records, "cursor": result.cursor, "snapshotId": snapshot_id, "provider": call.provider}
        return runtime.ledger.save(record.id, status="succeeded", provider=call.provider, result=summary, attempt_log=call.attempts, error=None)

    def view(self, record: Record) -> dict[str, Any]:
        result = record.result or {}
        data_type = record.payload["dataType"]
        view = {
            "success": record.status == "succeeded",
            "jobId": record.id,
            "status": record.status,
            "dataType": data_type,
            "provider": record.provider,
            "count": result.get("count", 0),
            data_type: result.get("records", []),
            "error": record.error,
        }
        if result.get("snapshotId"):
            view["snapshotId"] = result["snapshotId"]
        return view

    # --- schedules ------------------------------------------------------------------------------

    def run_schedules(self, now: datetime) -> list[str]:
        """Create the sync jobs whose cron expression matches ``now``. The idempotency key is the
        schedule and the minute, so several hub processes create each job once."""
        created = []
        minute = now.replace(second=0, microsecond=0)
        config = self.runtime.config
        for index, schedule in enumerate(config["sync_schedules"]):
            minute_, hour, day, month, weekday = schedule["cron"].split()
            if not crontab(minute_, hour, day, month, weekday)(minute.replace(tzinfo=None)):
                continue
            tenant = schedule["tenant"] or config["default_tenant"]
            key = f"schedule:{index}:{minute.strftime('%Y%m%d%H%M')}"
            raw = {"dataType": schedule["data_type"], "options": schedule["options"], "provider": schedule["provider"], "async": True}
            view, _ = self.accept(tenant, raw, key)
            created.append(view["jobId"])
        return created

    # --- inventory ------------------------------------------------------------------------------

    def _snapshot(self, tenant: str, provider: str, record_id: str | None, items: list[dict[str, Any]]) -> str:
        snapshot = InventorySnapshot(id=new_id("snp"), tenant=tenant, provider=provider, record_id=record_id, taken_at=utcnow(), item_count=len(items), items=items)
        with self.runtime.db.session() as session:
            session.add(snapshot)
        return snapshot.id

    def sync_all_inventory(self, tenant: str) -> dict[str, Any]:
        """Take an inventory snapshot from every sync provider (each is a separate system, so this is
        not failover: all of them are asked). Returns per-provider counts or errors."""
        runtime = self.runtime
        runtime.require_running()
        results: dict[str, Any] = {}
        for name in runtime.registry.service_providers("externalAPI", tenant):
            request = SyncRequest(id=new_id("syn"), tenant=tenant, data_type="inventory")
            try:
                call = runtime.calls.sync(tenant, request, providers=[name])
            except (ProviderError, NoProviderError) as error:
                results[name] = {"success": False, "error": describe(error)}
                continue
            snapshot_id = self._snapshot(tenant, name, None, call.result.records)
            results[name] = {"success": True, "count": call.result.count, "snapshotId": snapshot_id}
        return results

    def snapshots(self, tenant: str, provider: str | None = None, limit: int = 20) -> list[InventorySnapshot]:
        with self.runtime.db.session() as session:
            query = select(InventorySnapshot).where(InventorySnapshot.tenant == tenant)
            if provider:
                query = query.where(InventorySnapshot.provider == provider)
            return list(session.scalars(query.order_by(InventorySnapshot.taken_at.desc()).limit(limit)))

    def snapshot(self, snapshot_id: str, tenant: str) -> InventorySnapshot:
        with self.runtime.db.session() as session:
            snapshot = session.get(InventorySnapshot, snapshot_id)
        if snapshot is None or snapshot.tenant != tenant:
            raise NotFound(f"No inventory snapshot with id {snapshot_id}")
        return snapshot

    def apply_webhook_event(self, session: Any, record: Record, reference: Any, provider_name: str, event: Any) -> bool:
        result = dict(record.result or {})
        result["providerStatus"] = event.status
        result["events"] = [*result.get("events", []), {"eventId": event.event_id, "status": event.status, "type": event.type}]
        record.result = result
        return True
