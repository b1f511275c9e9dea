"""sync: read streams from external systems page by page (a job, inline or in a worker), keep inventory
levels and snapshots, push quantity updates back, and create the scheduled jobs of ``sync_schedules``.

The core pages, not the provider: a run takes the stream's checkpoint (a lease, so two runs never interleave),
asks for a page after the saved cursor, and stores the page, the new cursor and the job's progress in one
transaction, until the provider says there is no more or the run's page/record limit is reached. A run that
fails part-way keeps what it stored; its retry (or the next run) continues after the last stored page.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from huey import crontab

from hub.capabilities import (
    PUSH_MODES,
    PUSH_STATUSES,
    InventoryPush,
    InventoryUpdate,
    PushResult,
    SyncRequest,
    SyncResult,
    parse_timestamp,
    primary_key_of,
)
from hub.errors import HubError, NoProviderError, PermanentError, ProviderError, ValidationError
from hub.records import InventorySnapshot, Record, new_id, utcnow
from hub.resilience import allows_failover
from hub.runtime import CallResult, Runtime, describe
from hub.schemas import InventoryPushSchema, SyncSchema, load
from hub.services.inventory import InventoryService
from hub.services.sync_store import INVENTORY, Snapshot, StreamBusy, StreamKey, StreamLost, SyncStore

if TYPE_CHECKING:
    from hub.services.notify import NotifyService
    from hub.services.publish import PublishService

SERVICE = "externalAPI"
#: Records of a job shown in its view (all of them: ``GET /sync/records``, ``GET /inventory/snapshots/<id>``).
VIEW_RECORDS = 100
MAX_PUSH_UPDATES = 1000
DATA_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@dataclass
class SyncJob:
    """A sync job as the Python API and the REST API both hand it to :meth:`SyncService.start`."""

    data_type: str
    options: dict[str, Any] = field(default_factory=dict)
    provider: str | None = None
    asynchronous: bool = False
    #: Ignore the saved cursor: read the stream from the beginning.
    full_resync: bool = False
    #: ``None``: the ``sync:`` section of hub.yaml decides.
    page_size: int | None = None
    max_pages: int | None = None
    max_records: int | None = None


@dataclass
class PushJob:
    """Quantity updates for one external system, as :meth:`SyncService.start_push` takes them."""

    updates: list[InventoryUpdate | dict[str, Any]]
    provider: str | None = None
    asynchronous: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    """One run over a sync record: where it is and what it has stored (across the record's attempts)."""

    record: Record
    progress: dict[str, Any]
    attempts: list[dict[str, Any]]
    limits: dict[str, int]

    @property
    def payload(self) -> dict[str, Any]:
        return self.record.payload

    def request(self, cursor: str | None) -> SyncRequest:
        payload = self.payload
        return SyncRequest(
            id=self.record.id, tenant=self.record.tenant, data_type=payload["dataType"], options=dict(payload["options"]),
            cursor=cursor, page_size=self.limits["page_size"],
        )


class SyncService:
    def __init__(self, runtime: Runtime, publish: PublishService, notify: NotifyService) -> None:
        self.runtime = runtime
        self.store = SyncStore(runtime.db, runtime.config["queue"]["lease_seconds"])
        self.inventory = InventoryService(runtime, self.store, publish, notify)
        runtime.jobs.register_handler("sync", lambda record: self.run(record, inline=False))
        runtime.jobs.register_handler("inventory_push", lambda record: self.run_push(record, inline=False))
        runtime.jobs.register_periodic(lambda: self.run_schedules(utcnow()))

    @property
    def settings(self) -> dict[str, int]:
        return self.runtime.config["sync"]

    # --- jobs -------------------------------------------------------------------------------------

    def accept(self, tenant: str, raw: Any, idempotency_key: str | None = None, *, schema: SyncSchema | None = None) -> tuple[dict[str, Any], bool]:
        """A sync job from a REST body (``POST /sync``, ``POST /test/sync``)."""
        return self.start(tenant, SyncJob(**load(schema or SyncSchema(), raw)), idempotency_key)

    def start(self, tenant: str, job: SyncJob, idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
        """Accept a sync job: run it now (``asynchronous`` false) or queue it. Returns ``(view, queued)``."""
        runtime = self.runtime
        runtime.require_running()
        self._check_job(job)
        existing = runtime.ledger.existing(tenant, "sync", idempotency_key, claiming=True)
        if existing is not None:
            return self.view(existing), existing.status == "queued"
        if not job.asynchronous:
            runtime.hit_rate_limit(tenant, SERVICE, 1)
        payload = {
            "dataType": job.data_type, "options": job.options, "provider": job.provider, "fullResync": job.full_resync,
            "pageSize": job.page_size, "maxPages": job.max_pages, "maxRecords": job.max_records,
        }
        record = runtime.ledger.new("sync", tenant, SERVICE, payload, idempotency_key, "queued" if job.asynchronous else "running")
        if record is None:
            existing = runtime.ledger.existing(tenant, "sync", idempotency_key)
            assert existing is not None
            return self.view(existing), existing.status == "queued"
        if job.asynchronous:
            runtime.jobs.enqueue(record.id)
            return self.view(record), True
        return self.view(self.run(record, inline=True)), False

    def run(self, record: Record, *, inline: bool) -> Record:
        """Page through the record's stream from its checkpoint; settle the record. Inline, a failure is raised
        (after the record was saved); in a worker it re-queues the record, which resumes where this run stopped."""
        payload = record.payload
        settings = self.settings
        run = _Run(
            record,
            dict(record.result or {}),
            [],
            {
                "page_size": payload.get("pageSize") or settings["page_size"],
                "max_pages": payload.get("maxPages") or settings["max_pages"],
                "max_records": payload.get("maxRecords") or settings["max_records"],
            },
        )
        run.progress.setdefault("startedAt", utcnow().isoformat())
        key: StreamKey | None = None
        try:
            key, call, cursor = self._first_page(run)
            run.progress.setdefault("cursorBefore", cursor)
            pages = records = 0
            while True:
                page = self._checked(call, cursor)
                self._store_page(run, key, page)
                pages, records = pages + 1, records + page.count
                if not page.has_more or pages >= run.limits["max_pages"] or records >= run.limits["max_records"]:
                    break
                cursor = page.cursor
                call = self.runtime.calls.sync(record.tenant, run.request(cursor), providers=[key.provider], record_id=record.id)
                run.attempts += [attempt for attempt in call.attempts if attempt.get("outcome") != "succeeded"]
        except (ProviderError, NoProviderError, StreamBusy, StreamLost) as error:
            return self._failed(run, error, inline)
        finally:
            if key is not None:
                self.store.release_stream(key, record.id)
        run.progress["finishedAt"] = utcnow().isoformat()
        return self.runtime.ledger.save(record.id, status="succeeded", provider=key.provider, result=run.progress, attempt_log=run.attempts, error=None)

    def _first_page(self, run: _Run) -> tuple[StreamKey, CallResult, str | None]:
        """Call the first provider that serves the stream (a resumed job keeps its provider), from its cursor."""
        runtime, record, payload = self.runtime, run.record, run.payload
        resumed = run.progress.get("provider")
        names = [resumed] if resumed else [payload["provider"]] if payload.get("provider") else runtime.registry.service_providers(SERVICE, record.tenant)
        if not names:
            raise NoProviderError(f"No provider is configured for {SERVICE}")
        last_error: BaseException | None = None
        for name in names:
            key = StreamKey(record.tenant, name, payload["dataType"], dict(payload["options"]))
            checkpoint = self.store.take_stream(key, record.id)
            # A full resync starts from the beginning once; its retries go on from what they stored.
            full = bool(payload.get("fullResync")) and not run.progress.get("pages")
            cursor = None if full else checkpoint.cursor
            try:
                call = runtime.calls.sync(record.tenant, run.request(cursor), providers=[name], record_id=record.id)
            except (ProviderError, NoProviderError) as error:
                self.store.release_stream(key, record.id)
                run.attempts += getattr(error, "attempts", None) or [{"provider": name, "outcome": "failed", "error": describe(error), "at": utcnow().isoformat()}]
                if isinstance(error, ProviderError) and not allows_failover(error):
                    raise
                last_error = error
                continue
            run.attempts += call.attempts
            run.progress["provider"] = name
            run.progress.setdefault("full", cursor is None)
            return key, call, cursor
        if isinstance(last_error, PermanentError):
            raise last_error  # no provider offers this stream
        raise NoProviderError(
            f"All providers for {SERVICE} failed: " + "; ".join(f"{a['provider']}: {a.get('error')}" for a in run.attempts if a.get("error")),
            attempts=run.attempts,
            cause=last_error,
        )

    def _checked(self, call: CallResult, cursor: str | None) -> SyncResult:
        page = call.result
        if not isinstance(page, SyncResult) or not isinstance(page.records, list) or not all(isinstance(r, dict) for r in page.records):
            raise PermanentError(f"provider {call.provider} returned {type(page).__name__}, not a SyncResult of dict records")
        if not isinstance(page.deleted, list) or not all(isinstance(r, dict) for r in page.deleted):
            raise PermanentError(f"provider {call.provider} returned deleted={type(page.deleted).__name__}, not a list of dicts")
        if page.has_more and (page.cursor is None or page.cursor == cursor):
            raise PermanentError(f"provider {call.provider} said has_more but did not move its cursor ({page.cursor!r}); stopped to avoid a loop")
        return page

    def _store_page(self, run: _Run, key: StreamKey, page: SyncResult) -> None:
        """The page's records, the checkpoint after it and the job's progress: one transaction."""
        runtime, record, progress = self.runtime, run.record, run.progress
        progress = dict(progress)
        queued: list[str] = []
        with runtime.db.session() as session:
            if key.stream == INVENTORY:
                new_snapshot = "snapshotId" not in progress
                snapshot = InventorySnapshot(
                    id=progress.get("snapshotId") or new_id("snp"), tenant=key.tenant, provider=key.provider,
                    record_id=record.id, taken_at=utcnow(), item_count=0, full=bool(progress.get("full")),
                )
                records = self.inventory.map_records(key.provider, page.records)
                counts = self.store.write_inventory(session, key, record.id, snapshot, records, new_snapshot=new_snapshot)
                if counts.stored and new_snapshot:
                    progress["snapshotId"] = snapshot.id
                queued = self.inventory.after_write(session, key.tenant, key.provider, counts.changes, "sync")
            else:
                counts = self.store.write_records(session, key, record.id, page.records, primary_key_of(key.stream, tuple(page.primary_key)))
            if page.deleted:
                deleted = self.inventory.map_records(key.provider, page.deleted) if key.stream == INVENTORY else page.deleted
                removed, gone = self.store.delete_records(session, key, record.id, deleted, primary_key_of(key.stream, tuple(page.primary_key)))
                progress["deleted"] = progress.get("deleted", 0) + removed
                queued += self.inventory.after_write(session, key.tenant, key.provider, gone, "sync")
            self.store.advance(session, key, record.id, page.cursor, page.has_more, counts.stored)
            progress.update(
                pages=progress.get("pages", 0) + 1,
                count=progress.get("count", 0) + counts.stored,
                skipped=progress.get("skipped", 0) + counts.skipped,
                hasMore=page.has_more,
                cursorAfter=page.cursor,
            )
            runtime.ledger.apply(session, record.id, {"result": progress, "provider": key.provider})
            runtime.ledger.extend_lease(session, record.id)
        run.progress = progress
        for queued_id in queued:
            runtime.jobs.enqueue(queued_id)

    def _failed(self, run: _Run, error: BaseException, inline: bool) -> Record:
        ledger, record = self.runtime.ledger, run.record
        attempts = run.attempts or getattr(error, "attempts", [])
        run.progress["finishedAt"] = utcnow().isoformat()
        if isinstance(error, PermanentError) or inline:
            ledger.save(record.id, status="failed", error=describe(error), result=run.progress, attempt_log=attempts)
            if inline:
                raise error
            return ledger.get(record.id, record.tenant)
        ledger.save(record.id, result=run.progress, attempt_log=attempts)
        ledger.requeue_or_dead(record, describe(error))
        return ledger.get(record.id, record.tenant)

    def _check_job(self, job: SyncJob) -> None:
        problems: dict[str, list[str]] = {}
        if not isinstance(job.data_type, str) or not DATA_TYPE.match(job.data_type):
            problems["dataType"] = ["a stream name: a letter, then up to 63 letters, digits, '_' or '-'"]
        if not isinstance(job.options, dict):
            problems["options"] = ["must be an object"]
        for name, value, top in (("pageSize", job.page_size, 10_000), ("maxPages", job.max_pages, 100_000), ("maxRecords", job.max_records, 10_000_000)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top):
                problems[name] = [f"a whole number from 1 to {top}"]
        slots = self.runtime.registry.slots
        if job.provider and (job.provider not in slots or slots[job.provider].capability != "sync"):
            problems["provider"] = [f"no sync provider named {job.provider!r}"]
        if problems:
            raise ValidationError(problems)

    def view(self, record: Record) -> dict[str, Any]:
        result = record.result or {}
        payload = record.payload
        data_type = payload["dataType"]
        view: dict[str, Any] = {
            "success": record.status == "succeeded",
            "jobId": record.id,
            "status": record.status,
            "dataType": data_type,
            "provider": record.provider,
            "count": result.get("count", 0),
            "pages": result.get("pages", 0),
            "hasMore": result.get("hasMore", False),
            "skipped": result.get("skipped", 0),
            "deleted": result.get("deleted", 0),
            "fullResync": bool(payload.get("fullResync")),
            "error": record.error,
            "startedAt": result.get("startedAt"),
            "finishedAt": result.get("finishedAt"),
            "cursorBefore": result.get("cursorBefore"),
            "cursorAfter": result.get("cursorAfter", result.get("cursorBefore")),
            "errors": [attempt.get("error") for attempt in record.attempt_log or [] if attempt.get("error")],
        }
        if result.get("snapshotId"):
            view["snapshotId"] = result["snapshotId"]
        records = self.store.job_records(record.tenant, data_type, record.id, result.get("snapshotId"), VIEW_RECORDS) if result.get("count") else []
        view.setdefault(data_type, records)  # the seed's shape ({"suppliers": [...]}), unless the name is taken
        return view

    def metrics(self, tenant: str, runs: int = 500) -> list[dict[str, Any]]:
        """Per source and stream, over the last ``runs`` jobs: runs, failures, records, records/s while
        running, errors seen (retried or not) and lag (seconds since the stream was last read to its end)."""
        now = utcnow()
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for record in self.runtime.ledger.list(tenant, "sync", None, runs, 0):
            result = record.result or {}
            provider = record.provider or result.get("provider") or record.payload.get("provider")
            if not provider:
                continue
            row = rows.setdefault(
                (provider, record.payload["dataType"]),
                {"provider": provider, "dataType": record.payload["dataType"], "runs": 0, "succeeded": 0, "failed": 0, "records": 0, "errors": 0, "seconds": 0.0, "lastRunAt": None},
            )
            row["runs"] += 1
            row["succeeded"] += record.status == "succeeded"
            row["failed"] += record.status in ("failed", "dead")
            row["records"] += result.get("count", 0)
            row["errors"] += sum(1 for attempt in record.attempt_log or [] if attempt.get("error"))
            started, finished = parse_timestamp(result.get("startedAt")), parse_timestamp(result.get("finishedAt"))
            if started and finished:
                row["seconds"] += max(0.0, (finished - started).total_seconds())
            row["lastRunAt"] = max(filter(None, [row["lastRunAt"], record.created_at.isoformat()]))
        completed = {(c.provider, c.stream): c.completed_at for c in self.store.checkpoints(tenant) if c.completed_at}
        for (provider, stream), row in rows.items():
            row["recordsPerSecond"] = round(row["records"] / row["seconds"], 1) if row["seconds"] else None
            row["seconds"] = round(row["seconds"], 3)
            done = completed.get((provider, stream))
            row["lagSeconds"] = round((now - done).total_seconds(), 3) if done else None
        return sorted(rows.values(), key=lambda row: (row["provider"], row["dataType"]))

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
            job = SyncJob(
                schedule["data_type"], dict(schedule["options"]), schedule["provider"], asynchronous=True,
                full_resync=schedule.get("full_resync", False),
            )
            view, _ = self.start(tenant, job, key)
            created.append(view["jobId"])
        return created

    # --- inventory ------------------------------------------------------------------------------

    def sync_all_inventory(self, tenant: str, *, full_resync: bool = False) -> dict[str, Any]:
        """Sync inventory from every sync provider now (each is a separate system, so this is not failover:
        all of them are asked), one job each. Returns per-provider counts or errors."""
        runtime = self.runtime
        runtime.require_running()
        results: dict[str, Any] = {}
        for name in runtime.registry.service_providers(SERVICE, tenant):
            # A snapshot is a whole read: the sync: page/record limits, meant to bound one job, do not cut it.
            payload = {"dataType": INVENTORY, "options": {}, "provider": name, "fullResync": full_resync, "maxPages": 100_000, "maxRecords": 10_000_000}
            record = runtime.ledger.new("sync", tenant, SERVICE, payload, None, "running")
            assert record is not None
            try:
                result = self.run(record, inline=True).result or {}
            except (ProviderError, NoProviderError, HubError) as error:
                results[name] = {"success": False, "error": describe(error), "jobId": record.id}
                continue
            results[name] = {"success": True, "count": result.get("count", 0), "snapshotId": result.get("snapshotId"), "jobId": record.id}
        return results

    def apply_webhook_event(self, session: Any, record: Record, reference: Any, provider_name: str, event: Any) -> bool:
        """A sync source's webhook about a job: kept on the job (sources rarely send them)."""
        result = dict(record.result or {})
        result["providerStatus"] = event.status
        result["events"] = [*result.get("events", []), {"eventId": event.event_id, "status": event.status, "type": event.type}]
        record.result = result
        return True

    def snapshots(self, tenant: str, provider: str | None = None, limit: int = 20) -> list[InventorySnapshot]:
        return self.store.snapshots(tenant, provider, limit)

    def snapshot(self, snapshot_id: str, tenant: str) -> Snapshot:
        return self.store.snapshot(snapshot_id, tenant)

    # --- push -----------------------------------------------------------------------------------

    def accept_push(self, tenant: str, raw: Any, idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
        """Quantity updates from a REST body (``POST /inventory/updates``)."""
        return self.start_push(tenant, PushJob(**load(InventoryPushSchema(), raw)), idempotency_key)

    def start_push(self, tenant: str, job: PushJob, idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
        """Accept quantity updates for one provider: send them now or queue them. Returns ``(view, queued)``."""
        runtime = self.runtime
        runtime.require_running()
        updates = _checked_updates(job.updates)
        existing = runtime.ledger.existing(tenant, "inventory_push", idempotency_key, claiming=True)
        if existing is not None:
            return self.push_view(existing), existing.status == "queued"
        provider = self._push_provider(tenant, job.provider)
        if not job.asynchronous:
            runtime.hit_rate_limit(tenant, SERVICE, 1)
        payload = {"provider": provider, "updates": updates, "metadata": dict(job.metadata or {})}
        status = "queued" if job.asynchronous else "running"
        record = runtime.ledger.new("inventory_push", tenant, SERVICE, payload, idempotency_key, status, record_id=new_id("psh"))
        if record is None:
            existing = runtime.ledger.existing(tenant, "inventory_push", idempotency_key)
            assert existing is not None
            return self.push_view(existing), existing.status == "queued"
        if job.asynchronous:
            runtime.jobs.enqueue(record.id)
            return self.push_view(record), True
        record = self.run_push(record, inline=True)
        return self.push_view(record), record.status == "queued"

    def run_push(self, record: Record, *, inline: bool) -> Record:
        """Send the updates not yet sent (pending or ``retry``); record the levels the sent ones left."""
        runtime, payload = self.runtime, record.payload
        items = [dict(item) for item in (record.result or {}).get("items") or [{"status": "pending"} for _ in payload["updates"]]]
        todo = [index for index, item in enumerate(items) if item["status"] in ("pending", "retry")]
        push = InventoryPush(
            id=record.id,
            tenant=record.tenant,
            updates=[self._to_source(payload["provider"], payload["updates"][index], f"{record.id}:{index}") for index in todo],
            metadata=dict(payload["metadata"]),
        )
        try:
            call = runtime.calls.sync_push(record.tenant, push, provider=payload["provider"], record_id=record.id)
        except PermanentError as error:
            for index in todo:
                items[index] = {"status": "failed", "error": describe(error)}
            return self._settle_push(record, items, [], getattr(error, "attempts", []), inline, error=describe(error))
        except (ProviderError, NoProviderError) as error:
            for index in todo:
                items[index] = {"status": "retry", "error": describe(error)}
            return self._settle_push(record, items, [], getattr(error, "attempts", []), inline, error=describe(error))
        outcomes = call.result.results if isinstance(call.result, PushResult) else None
        sent = []
        for position, index in enumerate(todo):
            update = payload["updates"][index]
            if outcomes is None or len(outcomes) != len(todo):
                # Not knowing which were applied, sending again could apply an adjustment twice.
                items[index] = {"status": "failed", "error": f"provider {call.provider} broke the contract: not one result per update"}
                continue
            outcome = outcomes[position]
            status = outcome.status if outcome.status in PUSH_STATUSES else "failed"
            items[index] = {"status": status, "level": outcome.quantity, "error": outcome.error}
            if status == "sent":
                location = self.inventory.hub_location(payload["provider"], self.inventory.source_location(payload["provider"], update["location"]))
                sent.append({**update, "location": location, "level": outcome.quantity})
        return self._settle_push(record, items, sent, call.attempts, inline)

    def _settle_push(self, record: Record, items: list[dict[str, Any]], sent: list[dict[str, Any]], attempts: list[dict[str, Any]], inline: bool, error: str | None = None) -> Record:
        runtime = self.runtime
        statuses = [item["status"] for item in items]
        waiting = statuses.count("retry")
        if waiting:
            status = "queued"
        elif statuses.count("sent") == len(statuses):
            status = "succeeded"
        else:
            status = "partial" if "sent" in statuses else "failed"
        changes: dict[str, Any] = {"result": {"items": items}, "provider": record.payload["provider"], "attempt_log": attempts, "error": error}
        if not waiting:
            changes["status"] = status
        provider = record.payload["provider"]
        with runtime.db.session() as session:
            written = self.store.write_pushed(session, record.tenant, provider, record.id, sent)
            queued = self.inventory.after_write(session, record.tenant, provider, written, "push")
            saved = runtime.ledger.apply(session, record.id, changes)
        for queued_id in queued:
            runtime.jobs.enqueue(queued_id)
        if waiting:
            # Only the ``retry`` updates go again, later (inline, the API answers 202).
            runtime.ledger.requeue_or_dead(saved, error or f"{waiting} update(s) to retry")
            saved = runtime.ledger.get(record.id, record.tenant)
        return saved

    def _to_source(self, provider: str, update: dict[str, Any], update_id: str) -> InventoryUpdate:
        """An update as the source names its location (``inventory.sources.<provider>.locations``)."""
        return InventoryUpdate(**{**update, "location": self.inventory.source_location(provider, update["location"])}, id=update_id)

    def _push_provider(self, tenant: str, wanted: str | None) -> str:
        runtime = self.runtime
        slots = runtime.registry.slots
        if wanted:
            if wanted not in slots or slots[wanted].capability != "sync":
                raise ValidationError({"provider": [f"no sync provider named {wanted!r}"]})
            if runtime.hook_for(wanted, tenant, "sync_push") is None:
                raise ValidationError({"provider": [f"sync provider {wanted!r} cannot push updates (no sync_push hook)"]})
            return wanted
        for name in runtime.registry.service_providers(SERVICE, tenant):
            if runtime.hook_for(name, tenant, "sync_push") is not None:
                return name
        raise ValidationError({"provider": ["no sync provider of this tenant can push updates (none implements sync_push)"]})

    def push_view(self, record: Record) -> dict[str, Any]:
        updates = record.payload["updates"]
        items = (record.result or {}).get("items") or [{"status": "pending"} for _ in updates]
        results = [
            {"sku": update["sku"], "location": update["location"], "mode": update["mode"], "quantity": update["quantity"],
             "status": item["status"], "level": item.get("level"), "error": item.get("error")}
            for update, item in zip(updates, items, strict=True)
        ]
        counts = {status: sum(1 for item in items if item["status"] == status) for status in ("sent", "failed", "retry", "pending")}
        return {
            "success": record.status == "succeeded",
            "jobId": record.id,
            "status": record.status,
            "provider": record.provider or record.payload["provider"],
            **counts,
            "results": results,
            "error": record.error,
        }


def _checked_updates(updates: Any) -> list[dict[str, Any]]:
    """Updates as plain dicts (``sku``, ``location``, ``quantity``, ``mode``, ``reason``), or a 422 naming each bad one."""
    if not isinstance(updates, list) or not 1 <= len(updates) <= MAX_PUSH_UPDATES:
        raise ValidationError({"updates": [f"between 1 and {MAX_PUSH_UPDATES} updates"]})
    checked, problems = [], {}
    for index, update in enumerate(updates):
        item = {"sku": update.sku, "location": update.location, "quantity": update.quantity, "mode": update.mode, "reason": update.reason} if isinstance(update, InventoryUpdate) else dict(update)
        item.setdefault("mode", "set")
        item.setdefault("reason", None)
        wrong = []
        for name in ("sku", "location"):
            if not isinstance(item.get(name), str) or not 1 <= len(item[name]) <= 255:
                wrong.append(f"{name}: 1 to 255 characters")
        quantity = item.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int | float) or not math.isfinite(quantity):
            wrong.append("quantity: a number")
        if item["mode"] not in PUSH_MODES:
            wrong.append(f"mode: one of {', '.join(PUSH_MODES)}")
        unknown = set(item) - {"sku", "location", "quantity", "mode", "reason"}
        if unknown:
            wrong.append(f"unknown fields {sorted(unknown)}")
        if wrong:
            problems[str(index)] = wrong
        checked.append(item)
    if problems:
        raise ValidationError({"updates": problems})
    return checked
