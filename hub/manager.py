"""``IntegrationManager``: every operation of the hub as a Python API. The REST API is a thin layer over it.

It owns the plugin host, the configured providers, the database, the job queue and the resilience
machinery, and it is the only place that calls provider hooks (:meth:`IntegrationManager.call_provider`):
explicitly, on the provider the configuration chose, then the next one on failure.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import mimetypes
import os
import re
import secrets
import statistics
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timedelta
from decimal import Decimal
from os import PathLike
from typing import Any

from huey import crontab
from marshmallow import ValidationError as MarshmallowValidationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.utils import secure_filename

from hub.auth import TokenStore
from hub.capabilities import (
    Event,
    HealthResult,
    Message,
    NotifyResult,
    PaymentRequest,
    Recipient,
    RefundRequest,
    StoredFile,
    SyncRequest,
    WebhookRequest,
    to_dict,
)
from hub.config import CHANNEL_SERVICE, SERVICES, TemplateSchema, load_config, service_key
from hub.delivery import TemplateLibrary, recipient_addresses
from hub.errors import (
    ConfigurationError,
    HubError,
    NoProviderError,
    NotFound,
    PermanentError,
    ProviderError,
    ValidationError,
)
from hub.jobs import JobQueue
from hub.observability import Metrics, redact, redact_text, request_id_var, tenant_var
from hub.plugins import PluginHost, PluginPolicy, TemplateDefinition
from hub.records import (
    AuditEntry,
    Database,
    FileRecord,
    InventorySnapshot,
    ProviderReference,
    RecipientOutcome,
    Record,
    StoredTemplate,
    WebhookEventSeen,
    new_id,
    normalise_database_url,
    utcnow,
)
from hub.registry import ProviderRegistry
from hub.resilience import Breakers, RateLimits, RetryPolicy, allows_failover
from hub.schemas import (
    EventSchema,
    FileUploadSchema,
    NotificationSchema,
    PaymentSchema,
    RefundSchema,
    SyncSchema,
    load,
)

log = logging.getLogger("hub.manager")

ID_PREFIX = {"notification": "ntf", "payment": "pay", "refund": "ref", "file": "fil", "event": "evt", "sync": "syn"}
FINISHED = ("succeeded", "partial", "failed", "dead")
HEALTH_TIMEOUT = 5.0


class ServicesShutDown(HubError):
    status_code = 503

    def __init__(self) -> None:
        super().__init__("Integration services are shut down; POST /api/integrations/initialize to start them")


class IntegrationManager:
    """The hub. ``IntegrationManager()`` reads ``hub.yaml`` (``$HUB_CONFIG``) from the current folder;
    pass a path or an already-validated config dict to choose.

    ``plugins`` registers plugin objects in-process (tests, embedding); ``entry_points=False`` skips
    installed plugins.
    """

    def __init__(
        self,
        config: dict[str, Any] | str | PathLike[str] | None = None,
        *,
        environ: dict[str, str] | None = None,
        plugins: Iterable[tuple[object, str]] = (),
        entry_points: bool = True,
    ) -> None:
        if config is None or isinstance(config, str | PathLike):
            config = load_config(config, environ)
        self.config = config
        self.environ = dict(os.environ) if environ is None else environ
        os.makedirs(config["data_dir"], exist_ok=True)
        self.metrics = Metrics()
        self.host = PluginHost(PluginPolicy.from_settings(config["plugins"], self.environ))
        self.host.load(entry_points=entry_points)
        for plugin, name in plugins:
            self.host.add_plugin(plugin, name)
        self.registry = ProviderRegistry(self.host, config, self.environ)
        self.registry.build_all()
        self.db = Database(normalise_database_url(config["database_url"], config["data_dir"]))
        self.db.create_all()
        self.tokens = TokenStore(self.db)
        breaker = config["circuit_breaker"]
        self.breakers = Breakers(breaker["fail_max"], breaker["reset_timeout"], redis_url=config["redis_url"])
        retry = config["retry"]
        self.retry = RetryPolicy(retry["attempts"], retry["initial_delay"], retry["max_delay"], retry["jitter"])
        self.rate_limits = RateLimits(config, redis_url=config["redis_url"])
        self._template_cache: dict[str, tuple[float, dict[tuple[str, str], Any]]] = {}
        self.templates = TemplateLibrary(self.host.templates, config, stored=self._stored_templates)
        self.jobs = JobQueue(config, self.run_record, self.every_minute)
        self.state = "running"
        self._health_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="hub-health")
        self._lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------------------

    def start_workers(self, workers: int | None = None) -> None:
        """Start background workers in this process and re-queue anything a previous run left."""
        self.recover_unfinished(older_than=0)
        self.jobs.start_workers(self.config["queue"]["workers"] if workers is None else workers)

    def stop_workers(self) -> None:
        self.jobs.stop_workers()

    def initialize(self) -> dict[str, Any]:
        """(Re)start every service: the seed's ``POST /initialize``."""
        self.state = "running"
        report = {}
        for service in SERVICES:
            names = self.registry.service_providers(service)
            available = [name for name in names if self.registry.slots.get(name) and self.registry.slots[name].instance]
            if not names:
                report[service] = {"status": "not_configured"}
            elif available:
                report[service] = {"status": "initialized", "providers": available}
            else:
                report[service] = {"status": "error", "error": "no provider could be started"}
        return report

    def shutdown(self) -> dict[str, Any]:
        """Close every provider and refuse new work until :meth:`initialize`: ``POST /shutdown``."""
        self.state = "shutdown"
        for slot, instance in self.registry.all_instances():
            close = self.host.hook_for(instance, "close")
            if close is not None:
                try:
                    close()
                except Exception as error:
                    log.warning("provider %s failed to close: %s", slot.name, error)
        return {service: {"status": "shutdown"} for service in SERVICES}

    def close(self) -> None:
        self.stop_workers()
        self.shutdown()
        self._health_pool.shutdown(wait=False)
        self.db.engine.dispose()

    def _require_running(self) -> None:
        if self.state != "running":
            raise ServicesShutDown()

    def _tenant(self, tenant_id: str | None) -> str:
        return tenant_id or tenant_var.get() or self.config["default_tenant"]

    # --- calling providers ----------------------------------------------------------------------

    def call_provider(
        self,
        service: str,
        tenant: str,
        hook: str,
        kwargs: dict[str, Any],
        *,
        providers: list[str] | None = None,
        record_id: str | None = None,
    ) -> tuple[str, Any, list[dict[str, Any]]]:
        """Call ``hook`` on the service's providers in priority order until one succeeds.

        Each provider call goes through its circuit breaker and the retry policy; every try is
        audited. Returns ``(provider name, result, attempts)``. A permanent error is raised at once;
        when every provider failed, :class:`NoProviderError` carries the attempts.
        """
        names = providers if providers is not None else self.registry.service_providers(service, tenant)
        if not names:
            raise NoProviderError(f"No provider is configured for {service}")
        capability = SERVICES[service].capability
        attempts: list[dict[str, Any]] = []
        last_error: BaseException | None = None
        for name in names:
            started = time.perf_counter()
            retries: list[str] = []
            try:
                instance = self.registry.instance(name, tenant)
                function = self.host.hook_for(instance, hook)
                if function is None:
                    raise ConfigurationError(f"provider {name!r} does not implement {hook}")
                breaker_name = name if instance is self.registry.slots[name].instance else f"{name}@{tenant}"

                def once(function: Any = function, breaker_name: str = breaker_name) -> Any:
                    return self.breakers.call(breaker_name, function, **kwargs)

                def note_retry(error: BaseException, _attempt: int, retries: list[str] = retries) -> None:
                    retries.append(_describe(error))

                result = self.retry.call(once, on_retry=note_retry)
            except Exception as error:
                latency = (time.perf_counter() - started) * 1000
                description = _describe(error)
                attempts.append(
                    {"provider": name, "outcome": "failed", "error": description, "retries": len(retries), "latencyMs": round(latency, 2), "at": utcnow().isoformat()}
                )
                self._observe(service, capability, name, hook, "error", latency, tenant, record_id, description)
                if not isinstance(error, ProviderError | HubError):
                    log.warning("provider %s raised %s", name, description, exc_info=True)
                last_error = error
                if isinstance(error, HubError) and not isinstance(error, ProviderError):
                    raise
                if not allows_failover(error):
                    raise
                continue
            latency = (time.perf_counter() - started) * 1000
            attempts.append(
                {"provider": name, "outcome": "succeeded", "retries": len(retries), "latencyMs": round(latency, 2), "at": utcnow().isoformat()}
            )
            self._observe(service, capability, name, hook, "success", latency, tenant, record_id, None)
            return name, result, attempts
        if isinstance(last_error, PermanentError):
            raise last_error  # every provider refused (none offers it): trying later will not help
        raise NoProviderError(
            f"All providers for {service} failed: " + "; ".join(f"{a['provider']}: {a['error']}" for a in attempts),
            attempts=attempts,
            cause=last_error,
        )

    def _observe(
        self,
        service: str,
        capability: str,
        provider: str,
        operation: str,
        outcome: str,
        latency_ms: float,
        tenant: str | None,
        record_id: str | None,
        detail: str | None,
    ) -> None:
        self.metrics.provider_calls.labels(service, provider, operation, outcome).inc()
        self.metrics.provider_latency.labels(service, provider, operation).observe(latency_ms / 1000)
        entry = AuditEntry(
            at=utcnow(),
            tenant=tenant,
            request_id=request_id_var.get(),
            capability=capability,
            service=service,
            provider=provider,
            operation=operation,
            outcome=outcome,
            latency_ms=round(latency_ms, 3),
            record_id=record_id,
            detail=redact_text(detail) if detail else None,
        )
        with self.db.session() as session:
            session.add(entry)
        log.info(
            "%s %s via %s: %s in %.1f ms",
            service,
            operation,
            provider,
            outcome,
            latency_ms,
            extra={"provider": provider, "service": service, "outcome": outcome, "latency_ms": round(latency_ms, 2), "record_id": record_id, "tenant": tenant},
        )

    def audit_api_call(self, tenant: str | None, operation: str, outcome: str, latency_ms: float, detail: str | None = None) -> None:
        with self.db.session() as session:
            session.add(
                AuditEntry(
                    at=utcnow(),
                    tenant=tenant,
                    request_id=request_id_var.get(),
                    capability="api",
                    operation=operation[:60],
                    outcome=outcome,
                    latency_ms=round(latency_ms, 3),
                    detail=redact_text(detail) if detail else None,
                )
            )

    # --- records ---------------------------------------------------------------------------------

    def _new_record(self, kind: str, tenant: str, service: str, payload: dict[str, Any], idempotency_key: str | None, status: str) -> Record | None:
        """Insert a record; None if the idempotency key already has one (the caller fetches it)."""
        now = utcnow()
        record = Record(
            id=new_id(ID_PREFIX[kind]),
            tenant=tenant,
            kind=kind,
            service=service,
            status=status,
            payload=payload,
            idempotency_key=idempotency_key,
            request_id=request_id_var.get(),
            attempts=1 if status == "running" else 0,
            attempt_log=[],
            created_at=now,
            updated_at=now,
            lease_until=now + timedelta(seconds=self.config["queue"]["lease_seconds"]) if status == "running" else None,
        )
        try:
            with self.db.session() as session:
                session.add(record)
        except IntegrityError:
            return None
        return record

    def _begin(
        self, kind: str, tenant: str, service: str, payload: dict[str, Any], idempotency_key: str | None, view: Any
    ) -> tuple[Record | None, dict[str, Any] | None]:
        """Open a running record for a synchronous call, or return the earlier answer for the same
        idempotency key (``(None, view)``). The rate limit is counted only for new work."""
        existing = self._existing(tenant, kind, idempotency_key)
        if existing is None:
            self._hit_rate_limit(tenant, service, 1)
            record = self._new_record(kind, tenant, service, payload, idempotency_key, "running")
            if record is not None:
                return record, None
            existing = self._existing(tenant, kind, idempotency_key)  # a concurrent request won
        return None, self._replay(existing, view)

    def _existing(self, tenant: str, kind: str, idempotency_key: str | None) -> Record | None:
        if not idempotency_key:
            return None
        with self.db.session() as session:
            return session.scalar(
                select(Record).where(Record.tenant == tenant, Record.kind == kind, Record.idempotency_key == idempotency_key)
            )

    def _save(self, record_id: str, **changes: Any) -> Record:
        with self.db.session() as session:
            record = session.get(Record, record_id)
            assert record is not None
            for name, value in changes.items():
                setattr(record, name, value)
            record.updated_at = utcnow()
            if changes.get("status") in FINISHED:
                record.finished_at = utcnow()
                record.lease_until = None
                self.metrics.jobs.labels(record.kind, record.status).inc()
            return record

    def get_record(self, record_id: str, tenant: str, kind: str | None = None) -> Record:
        with self.db.session() as session:
            record = session.get(Record, record_id)
        if record is None or record.tenant != tenant or (kind is not None and record.kind != kind):
            raise NotFound(f"No {kind or 'record'} with id {record_id}")
        return record

    def list_records(self, tenant: str, kind: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0) -> list[Record]:
        with self.db.session() as session:
            query = select(Record).where(Record.tenant == tenant)
            if kind:
                query = query.where(Record.kind == kind)
            if status:
                query = query.where(Record.status == status)
            return list(session.scalars(query.order_by(Record.created_at.desc()).limit(limit).offset(offset)))

    def audit_log(self, tenant: str, *, provider: str | None = None, outcome: str | None = None, service: str | None = None, limit: int = 100) -> list[AuditEntry]:
        with self.db.session() as session:
            query = select(AuditEntry).where(AuditEntry.tenant == tenant)
            if provider:
                query = query.where(AuditEntry.provider == provider)
            if outcome:
                query = query.where(AuditEntry.outcome == outcome)
            if service:
                query = query.where(AuditEntry.service == service_key(service))
            return list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))

    # --- background work -------------------------------------------------------------------------

    def run_record(self, record_id: str) -> None:
        """Worker entry point: claim the record, do its work, and settle its status."""
        record = self.db.claim(record_id, self.config["queue"]["lease_seconds"])
        if record is None:
            return  # finished already, or another worker holds it
        token = request_id_var.set(record.request_id or record.id)
        try:
            if record.kind == "notification":
                self._deliver_notification(record, inline=False)
            elif record.kind == "sync":
                self._run_sync(record, inline=False)
            else:
                self._save(record.id, status="failed", error=f"no background handler for {record.kind}")
        except Exception as error:  # the record must never stay "running" because of a bug
            log.exception("job %s failed unexpectedly", record_id)
            self._requeue_or_die(record, _describe(error))
        finally:
            request_id_var.reset(token)

    def _requeue_or_die(self, record: Record, error: str) -> None:
        retry = self.config["retry"]
        with self.db.session() as session:
            attempts = session.get(Record, record.id).attempts  # type: ignore[union-attr]
        if attempts >= retry["job_attempts"]:
            self._save(record.id, status="dead", error=error)
            log.error("job %s is dead after %d attempts: %s", record.id, attempts, error)
            return
        delay = retry["job_delay"] * (2 ** (attempts - 1))
        self._save(record.id, status="queued", error=error, lease_until=utcnow() + timedelta(seconds=delay))
        self.jobs.enqueue(record.id, delay=delay)

    def recover_unfinished(self, older_than: float = 60) -> int:
        """Re-queue accepted-but-unfinished records (a crashed worker's); returns how many."""
        ids = self.db.unfinished(older_than)
        for record_id in ids:
            self.jobs.enqueue(record_id)
        if ids:
            log.info("re-queued %d unfinished job(s)", len(ids))
        return len(ids)

    def every_minute(self) -> None:
        self.recover_unfinished()
        self.run_schedules(utcnow())

    def run_schedules(self, now: datetime) -> list[str]:
        """Create the sync jobs whose cron expression matches ``now``. The idempotency key is the
        schedule and the minute, so several hub processes create each job once."""
        created = []
        minute = now.replace(second=0, microsecond=0)
        for index, schedule in enumerate(self.config["sync_schedules"]):
            minute_, hour, day, month, weekday = schedule["cron"].split()
            if not crontab(minute_, hour, day, month, weekday)(minute.replace(tzinfo=None)):
                continue
            tenant = schedule["tenant"] or self.config["default_tenant"]
            key = f"schedule:{index}:{minute.strftime('%Y%m%d%H%M')}"
            result = self.sync_external_data(
                tenant, schedule["data_type"], schedule["options"], provider=schedule["provider"], asynchronous=True, idempotency_key=key
            )
            created.append(result["jobId"])
        return created

    # --- notify ------------------------------------------------------------------------------------

    def send_notification(
        self,
        type: str,
        recipients: list[dict[str, Any]] | None = None,
        template: str = "custom",
        data: dict[str, Any] | None = None,
        priority: str = "normal",
        fallback_services: list[str] | None = None,
        *,
        tenant_id: str | None = None,
        idempotency_key: str | None = None,
        asynchronous: bool = False,
    ) -> dict[str, Any]:
        """Send (or, for bulk and ``asynchronous``, queue) a notification. Returns the delivery view:
        ``messageId``, ``status``, ``transporter`` and per-recipient results."""
        payload = {
            "type": type,
            "recipients": recipients or [],
            "template": template,
            "data": data or {},
            "priority": priority,
            "fallbackServices": fallback_services or [],
            "async": asynchronous,
        }
        view, _accepted = self.accept_notification(self._tenant(tenant_id), payload, idempotency_key)
        return view

    def accept_notification(self, tenant: str, raw: Any, idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
        """Validate, record and deliver (or queue) a notification. Returns (view, queued)."""
        self._require_running()
        request = load(NotificationSchema(), raw)
        existing = self._existing(tenant, "notification", idempotency_key)
        if existing is not None:
            return self.notification_view(existing), existing.status == "queued"
        channels = [request["type"], *request["fallback_services"]]
        for channel in channels:  # a missing template variable is a 422 before anything is accepted
            self.templates.render(request["template"], channel, request["data"], tenant)
        region = self._region(tenant)
        recipients = request["recipients"] or [{"name": None}]
        reachable = set()
        problems: dict[int, list[str]] = {}
        for channel in channels:
            for address in recipient_addresses(recipients, channel, region):
                if address.address:
                    reachable.add(address.index)
                elif channel == request["type"]:
                    problems[address.index] = [address.error or "unreachable"]
        if not reachable:
            raise ValidationError({"recipients": problems}, "No recipient can be reached on " + " or ".join(channels))
        queued = request["asynchronous"] or len(recipients) > self.config["queue"]["bulk_threshold"]
        service = CHANNEL_SERVICE[request["type"]]
        if not queued and not self._bypasses_rate_limit(service, request["priority"]):
            self._hit_rate_limit(tenant, service, len(reachable))
        payload = {
            "channel": request["type"],
            "fallbackServices": request["fallback_services"],
            "template": request["template"],
            "data": request["data"],
            "priority": request["priority"],
            "region": region,
            "recipients": recipients,
        }
        record = self._new_record("notification", tenant, service, payload, idempotency_key, "queued" if queued else "running")
        if record is None:  # a concurrent request with the same key won
            existing = self._existing(tenant, "notification", idempotency_key)
            assert existing is not None
            return self.notification_view(existing), existing.status == "queued"
        if queued:
            self.jobs.enqueue(record.id)
            return self.notification_view(record), True
        record = self._deliver_notification(record, inline=True)
        return self.notification_view(record), record.status == "queued"

    def _region(self, tenant: str) -> str:
        return (self.config["tenants"].get(tenant, {}).get("default_region") or self.config["default_region"]).upper()

    def _bypasses_rate_limit(self, service: str, priority: str) -> bool:
        return priority == "high" and self.config["services"].get(service, {}).get("high_priority_bypasses_rate_limit", False)

    def _hit_rate_limit(self, tenant: str, service: str, cost: int) -> None:
        try:
            self.rate_limits.hit(tenant, service, cost)
        except HubError:
            self.metrics.rate_limited.labels(service).inc()
            raise

    def _deliver_notification(self, record: Record, *, inline: bool) -> Record:
        """Deliver to every recipient without an outcome yet, channel by channel (primary, then
        fallbacks). Outcomes are written per batch, so a crash resumes where it stopped."""
        payload = record.payload
        tenant = record.tenant
        recipients = payload["recipients"]
        done = self._outcome_indexes(record.id)
        attempt_log = list(record.attempt_log or [])
        batch_size = self.config["queue"]["batch_size"]
        channels = [payload["channel"], *payload["fallbackServices"]]
        last_error: str | None = None
        used_provider: str | None = record.provider
        for position, channel in enumerate(channels):
            pending = [index for index in range(len(recipients)) if index not in done]
            if not pending:
                break
            is_last_channel = position == len(channels) - 1
            service = CHANNEL_SERVICE[channel]
            addresses = recipient_addresses([recipients[i] for i in pending], channel, payload["region"])
            sendable = []
            unreachable = []
            for index, address in zip(pending, addresses, strict=True):
                if address.address:
                    sendable.append((index, address.address))
                elif is_last_channel:
                    unreachable.append(_outcome(record.id, index, recipients[index], channel, None, "failed", error=address.error))
            if unreachable:
                self._save_outcomes(record.id, unreachable, [], attempt_log, used_provider)
                done.update(outcome["idx"] for outcome in unreachable)
            if not sendable:
                continue
            rendered = self.templates.render(payload["template"], channel, payload["data"], tenant)
            for start in range(0, len(sendable), batch_size):
                batch = sendable[start : start + batch_size]
                if not inline and not self._bypasses_rate_limit(service, payload["priority"]):
                    # Bulk sends wait for the rate limit instead of dropping messages.
                    self.rate_limits.wait(tenant, service, len(batch), deadline=time.monotonic() + self.config["queue"]["lease_seconds"] / 2)
                sent_by, error = self._send_batch(record, channel, service, rendered, batch, attempt_log, used_provider)
                used_provider = used_provider or sent_by
                if error is None:
                    done.update(index for index, _ in batch)
                else:
                    done |= self._outcome_indexes(record.id)
                    last_error = error
                    break  # this channel is down: the rest go to the next channel, or wait for a retry
        counts = self._outcome_counts(record.id)
        pending_count = len(recipients) - sum(counts.values())
        summary = {"provider": used_provider, "sent": counts.get("sent", 0) + counts.get("queued", 0), "failed": counts.get("failed", 0), "pending": pending_count}
        if pending_count:
            self._save(record.id, result=summary, attempt_log=attempt_log, provider=used_provider, error=last_error)
            # Every provider of every channel is down: keep the work and try again later.
            self._requeue_or_die(record, last_error or "no provider available")
        elif summary["failed"] == len(recipients):
            first_error = self._first_outcome_error(record.id)
            self._save(record.id, status="failed", result=summary, attempt_log=attempt_log, provider=used_provider, error=first_error)
        else:
            self._save(record.id, status="partial" if summary["failed"] else "succeeded", result=summary, attempt_log=attempt_log, provider=used_provider, error=None)
        return self.get_record(record.id, tenant)

    def _send_batch(
        self,
        record: Record,
        channel: str,
        service: str,
        rendered: Any,
        batch: list[tuple[int, str]],
        attempt_log: list[dict[str, Any]],
        used_provider: str | None,
    ) -> tuple[str | None, str | None]:
        """Send one batch on one channel, failing over provider by provider; recipients a provider
        answered ``retry`` for go to the next provider. Returns (provider used, error if some
        recipients are still unsent)."""
        recipients = record.payload["recipients"]
        providers = self.registry.service_providers(service, record.tenant)
        remaining = batch
        sent_by: str | None = None
        while remaining:
            message = Message(
                id=f"{record.id}-{channel}-{remaining[0][0]}",
                tenant=record.tenant,
                channel=channel,
                recipients=[Recipient(address=address, name=recipients[index].get("name")) for index, address in remaining],
                text=rendered.text,
                subject=rendered.subject,
                html=rendered.html,
                blocks=rendered.blocks,
                template=record.payload["template"],
                priority=record.payload["priority"],
                metadata={"recordId": record.id},
            )
            try:
                provider, outcome, attempts = self.call_provider(service, record.tenant, "notify", {"message": message}, providers=providers, record_id=record.id)
                attempt_log.extend({**attempt, "channel": channel, "recipients": len(remaining)} for attempt in attempts)
                _check_notify_result(outcome, len(remaining), provider)
            except PermanentError as error:
                attempt_log.append({"channel": channel, "outcome": "failed", "error": _describe(error), "recipients": len(remaining)})
                refused = [_outcome(record.id, index, recipients[index], channel, address, "failed", error=_describe(error)) for index, address in remaining]
                self._save_outcomes(record.id, refused, [], attempt_log, used_provider or sent_by)
                return sent_by, None
            except (NoProviderError, ProviderError) as error:
                attempt_log.extend({**attempt, "channel": channel, "recipients": len(remaining)} for attempt in getattr(error, "attempts", []))
                self._save_outcomes(record.id, [], [], attempt_log, used_provider or sent_by)
                return sent_by, _describe(error)
            sent_by = sent_by or provider
            outcomes, references, retry = [], [], []
            for (index, address), result in zip(remaining, outcome.results, strict=True):
                if result.status == "retry":
                    retry.append((index, address))
                    continue
                outcomes.append(_outcome(record.id, index, recipients[index], channel, address, result.status, provider, result.provider_message_id, result.error))
                if result.provider_message_id and result.status != "failed":
                    references.append({"provider": provider, "reference": result.provider_message_id, "record_id": record.id, "recipient_index": index})
            self._save_outcomes(record.id, outcomes, references, attempt_log, used_provider or sent_by)
            remaining = retry
            providers = providers[providers.index(provider) + 1 :] if provider in providers else []
            if remaining and not providers:
                return sent_by, f"{len(remaining)} recipient(s) could not be sent by {provider} and no provider is left"
        return sent_by, None

    def _outcome_indexes(self, record_id: str) -> set[int]:
        with self.db.session() as session:
            return set(session.scalars(select(RecipientOutcome.index).where(RecipientOutcome.record_id == record_id)))

    def _outcome_counts(self, record_id: str) -> dict[str, int]:
        with self.db.session() as session:
            rows = session.execute(
                select(RecipientOutcome.status, func.count()).where(RecipientOutcome.record_id == record_id).group_by(RecipientOutcome.status)
            )
            return {status: count for status, count in rows}

    def _first_outcome_error(self, record_id: str) -> str | None:
        with self.db.session() as session:
            return session.scalar(
                select(RecipientOutcome.error).where(RecipientOutcome.record_id == record_id).order_by(RecipientOutcome.index).limit(1)
            )

    def _save_outcomes(
        self, record_id: str, outcomes: list[dict[str, Any]], references: list[dict[str, Any]], attempt_log: list[dict[str, Any]], provider: str | None
    ) -> None:
        """One transaction per batch: the outcomes, the provider references webhooks will match,
        and the record's progress (its lease extended: a long bulk send is alive while it progresses)."""
        with self.db.session() as session:
            if outcomes:
                # Core executemany, not ORM objects: a bulk send writes thousands of these.
                session.execute(RecipientOutcome.__table__.insert(), outcomes)
            if references:
                session.execute(_insert_ignoring_duplicates(session, ProviderReference.__table__), references)
            session.execute(
                update(Record)
                .where(Record.id == record_id)
                .values(
                    attempt_log=attempt_log,
                    provider=provider,
                    updated_at=utcnow(),
                    lease_until=utcnow() + timedelta(seconds=self.config["queue"]["lease_seconds"]),
                )
            )

    def notification_view(self, record: Record) -> dict[str, Any]:
        with self.db.session() as session:
            outcomes = list(session.scalars(select(RecipientOutcome).where(RecipientOutcome.record_id == record.id).order_by(RecipientOutcome.index)))
        recipients = [outcome.to_dict() for outcome in outcomes]
        failed = sum(1 for outcome in outcomes if outcome.status == "failed")
        result = record.result or {}
        return {
            "success": record.status in ("succeeded", "partial", "queued", "running"),
            "messageId": record.id,
            "id": record.id,
            "status": record.status,
            "transporter": result.get("provider") or record.provider,
            "channel": record.payload.get("channel"),
            "template": record.payload.get("template"),
            "total": len(record.payload.get("recipients", [])),
            "sent": len(outcomes) - failed,
            "failed": failed,
            "pending": len(record.payload.get("recipients", [])) - len(outcomes),
            "recipients": recipients,
            "attempts": record.attempt_log,
            "error": record.error,
            "createdAt": record.created_at.isoformat(),
        }

    # --- templates ---------------------------------------------------------------------------------

    TEMPLATE_CACHE_SECONDS = 2.0

    def _stored_templates(self, tenant: str) -> dict[tuple[str, str], Any]:
        """The tenant's saved templates, cached briefly: a bulk send renders without a query per batch,
        and a change made through another hub process shows within seconds."""
        cached = self._template_cache.get(tenant)
        if cached is not None and time.monotonic() - cached[0] < self.TEMPLATE_CACHE_SECONDS:
            return cached[1]
        with self.db.session() as session:
            rows = session.scalars(select(StoredTemplate).where(StoredTemplate.tenant == tenant))
            found = {(row.name, row.channel): _stored_definition(row) for row in rows}
        self._template_cache[tenant] = (time.monotonic(), found)
        return found

    def save_template(self, tenant: str, name: str, raw: Any) -> dict[str, Any]:
        """Add or replace the tenant's template ``name`` for one channel (``PUT /templates/<name>``)."""
        if not TEMPLATE_NAME.match(name):
            raise ValidationError({"name": ["letters, digits, '_' and '-', at most 100"]})
        try:
            variant = TemplateSchema().load(raw if isinstance(raw, dict) else {})
        except MarshmallowValidationError as error:
            raise ValidationError(error.messages_dict) from None
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
        self.templates.check_syntax(_stored_definition(row))
        with self.db.session() as session:
            session.merge(row)
        self._template_cache.pop(tenant, None)
        return {"name": name, "channel": row.channel, "source": f"tenant:{tenant}"}

    def delete_template(self, tenant: str, name: str, channel: str) -> dict[str, Any]:
        with self.db.session() as session:
            row = session.get(StoredTemplate, (tenant, name, channel))
            if row is None:
                raise NotFound(f"No saved template {name!r} for {channel}")
            session.delete(row)
        self._template_cache.pop(tenant, None)
        return {"name": name, "channel": channel, "deleted": True}

    # --- pay -------------------------------------------------------------------------------------

    def process_payment(
        self,
        amount: Decimal | float | str,
        currency: str,
        gateway: str | None = None,
        order_id: str | None = None,
        payment_method: str | None = None,
        *,
        customer: dict[str, Any] | None = None,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
        tenant_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        raw = {
            "amount": str(amount),
            "currency": currency,
            "gateway": gateway,
            "orderId": order_id,
            "paymentMethod": payment_method,
            "customer": customer or {},
            "description": description,
            "metadata": metadata or {},
        }
        return self.accept_payment(self._tenant(tenant_id), raw, idempotency_key)

    def _gateway_providers(self, gateway: str | None, tenant: str) -> list[str]:
        configured = self.registry.service_providers("payment", tenant)
        if gateway is None:
            return configured
        if gateway in self.registry.slots and self.registry.slots[gateway].capability == "pay":
            return [gateway]
        # Accept the provider type too ("stripe"), as the seed's examples do.
        by_type = [name for name in configured if self.registry.slots.get(name) and self.registry.slots[name].type_name == gateway]
        if by_type:
            return by_type[:1]
        raise ValidationError({"gateway": [f"no payment gateway named {gateway!r}; configured: {', '.join(configured) or 'none'}"]})

    def accept_payment(self, tenant: str, raw: Any, idempotency_key: str | None = None, *, schema: PaymentSchema | None = None) -> dict[str, Any]:
        self._require_running()
        request = load(schema or PaymentSchema(), raw)
        request["currency"] = request["currency"].upper()
        providers = self._gateway_providers(request["gateway"], tenant)
        payload = {**request, "amount": str(request["amount"]), "payment_method": _mask_payment_method(request["payment_method"])}
        record, replayed = self._begin("payment", tenant, "payment", payload, idempotency_key, self.payment_view)
        if record is None:
            return replayed  # type: ignore[return-value]
        payment = PaymentRequest(
            id=record.id,
            tenant=tenant,
            amount=request["amount"],
            currency=request["currency"],
            order_id=request["order_id"],
            payment_method=request["payment_method"],
            customer=request["customer"],
            description=request["description"],
            metadata={**request["metadata"], "hub_payment_id": record.id, "tenant": tenant},
            idempotency_key=idempotency_key or record.id,
        )
        try:
            provider, result, attempts = self.call_provider("payment", tenant, "pay", {"payment": payment}, providers=providers, record_id=record.id)
        except (ProviderError, NoProviderError) as error:
            self._save(record.id, status="failed", error=_describe(error), attempt_log=getattr(error, "attempts", []))
            raise
        status = "succeeded" if result.status == "succeeded" else ("failed" if result.status == "failed" else "running")
        with self.db.session() as session:
            session.merge(ProviderReference(provider=provider, reference=result.transaction_id, record_id=record.id))
        record = self._save(
            record.id,
            status=status if status != "running" else "succeeded",
            provider=provider,
            provider_reference=result.transaction_id,
            result=to_dict(result),
            attempt_log=attempts,
        )
        return self.payment_view(record)

    def payment_view(self, record: Record) -> dict[str, Any]:
        result = record.result or {}
        amount = result.get("amount", record.payload.get("amount"))
        return {
            "success": record.status == "succeeded" and result.get("status") != "failed",
            "paymentId": record.id,
            "transactionId": result.get("transaction_id"),
            "status": result.get("status", record.status),
            "amount": float(Decimal(amount)) if amount is not None else None,
            "currency": result.get("currency", record.payload.get("currency")),
            "gateway": record.provider,
            "orderId": record.payload.get("order_id"),
            "refunds": result.get("refunds", []),
            "error": record.error,
            "createdAt": record.created_at.isoformat(),
        }

    def refund(
        self,
        payment_id: str | None = None,
        amount: Decimal | float | str | None = None,
        reason: str | None = None,
        *,
        transaction_id: str | None = None,
        tenant_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        raw = {"amount": str(amount) if amount is not None else None, "reason": reason, "transactionId": transaction_id}
        return self.accept_refund(self._tenant(tenant_id), payment_id, raw, idempotency_key)

    def accept_refund(self, tenant: str, payment_id: str | None, raw: Any, idempotency_key: str | None = None) -> dict[str, Any]:
        self._require_running()
        request = load(RefundSchema(), raw or {})
        payment = self._find_payment(tenant, payment_id, request["transaction_id"])
        if payment.status != "succeeded":
            raise ValidationError({"paymentId": [f"payment is {payment.status}; only a succeeded payment can be refunded"]})
        payload = {"paymentId": payment.id, "amount": str(request["amount"]) if request["amount"] else None, "reason": request["reason"]}
        record, replayed = self._begin("refund", tenant, "payment", payload, idempotency_key, self.refund_view)
        if record is None:
            return replayed  # type: ignore[return-value]
        refund = RefundRequest(
            id=record.id,
            tenant=tenant,
            transaction_id=payment.provider_reference or "",
            amount=request["amount"],
            currency=payment.payload["currency"],
            reason=request["reason"],
            idempotency_key=idempotency_key or record.id,
        )
        try:
            # A refund goes to the gateway that took the payment, never to another.
            provider, result, attempts = self.call_provider("payment", tenant, "refund", {"refund": refund}, providers=[payment.provider or ""], record_id=record.id)
        except (ProviderError, NoProviderError) as error:
            self._save(record.id, status="failed", error=_describe(error), provider=payment.provider)
            raise
        refund_data = to_dict(result)
        record = self._save(record.id, status="succeeded", provider=provider, provider_reference=result.refund_id, result=refund_data, attempt_log=attempts)
        with self.db.session() as session:
            stored = session.get(Record, payment.id)
            assert stored is not None
            stored_result = dict(stored.result or {})
            stored_result["refunds"] = [*stored_result.get("refunds", []), {"refundId": record.id, **refund_data}]
            stored.result = stored_result
        return self.refund_view(record)

    def _find_payment(self, tenant: str, payment_id: str | None, transaction_id: str | None) -> Record:
        if payment_id:
            return self.get_record(payment_id, tenant, "payment")
        if transaction_id:
            with self.db.session() as session:
                record = session.scalar(
                    select(Record).where(Record.tenant == tenant, Record.kind == "payment", Record.provider_reference == transaction_id)
                )
            if record is not None:
                return record
            raise NotFound(f"No payment with transaction id {transaction_id}")
        raise ValidationError({"paymentId": ["a payment id or transactionId is required"]})

    def refund_view(self, record: Record) -> dict[str, Any]:
        result = record.result or {}
        return {
            "success": record.status == "succeeded",
            "refundId": record.id,
            "paymentId": record.payload.get("paymentId"),
            "providerRefundId": result.get("refund_id"),
            "status": result.get("status", record.status),
            "amount": float(Decimal(result["amount"])) if result.get("amount") is not None else None,
            "currency": result.get("currency"),
            "gateway": record.provider,
            "error": record.error,
        }

    def _replay(self, record: Record | None, view: Any) -> dict[str, Any]:
        assert record is not None
        if record.status == "failed":
            raise ValidationError({"idempotencyKey": [f"the request with this key failed: {record.error}"]}, "This idempotency key's request failed; use a new key to try again")
        return view(record)

    # --- store -------------------------------------------------------------------------------------

    def upload_file(
        self,
        file_name: str,
        data: bytes,
        content_type: str | None = None,
        category: str = "general",
        file_type: str | None = None,
        metadata: dict[str, str] | None = None,
        *,
        tenant_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        raw = {"fileName": file_name, "contentType": content_type, "category": category, "fileType": file_type, "metadata": metadata or {}}
        return self.accept_upload(self._tenant(tenant_id), raw, data, idempotency_key)

    def accept_upload(self, tenant: str, raw: Any, data: bytes | None, idempotency_key: str | None = None) -> dict[str, Any]:
        self._require_running()
        request = load(FileUploadSchema(), raw)
        if data is None:
            if request["content"] is None:
                raise ValidationError({"content": ["file content is required (multipart 'file' or base64 'content')"]})
            try:
                data = base64.b64decode(request["content"], validate=True)
            except ValueError:
                raise ValidationError({"content": ["not valid base64"]}) from None
        limits = self.config["storage_limits"]
        if len(data) > limits["max_file_size"]:
            raise ValidationError({"file": [f"{len(data)} bytes is over the limit of {limits['max_file_size']} bytes"]})
        if not data:
            raise ValidationError({"file": ["the file is empty"]})
        safe_name = secure_filename(request["file_name"]) or "file"
        content_type = (request["content_type"] or mimetypes.guess_type(safe_name)[0] or "application/octet-stream").lower()
        if not _content_type_allowed(content_type, limits["allowed_content_types"]):
            raise ValidationError({"contentType": [f"{content_type} is not accepted; allowed: {', '.join(limits['allowed_content_types'])}"]})
        key = f"{tenant}/{request['category']}/{int(time.time() * 1000)}-{secrets.token_hex(4)}-{safe_name}"
        payload = {"fileName": request["file_name"], "key": key, "size": len(data), "contentType": content_type, "category": request["category"]}
        record, replayed = self._begin("file", tenant, "fileStorage", payload, idempotency_key, lambda done: self.file_view(self.get_file(done.id, tenant)))
        if record is None:
            return replayed  # type: ignore[return-value]
        stored = StoredFile(
            key=key,
            tenant=tenant,
            filename=safe_name,
            content_type=content_type,
            size=len(data),
            checksum=hashlib.sha256(data).hexdigest(),
            category=request["category"],
            metadata={**request["metadata"], "tenant": tenant, "original-name": request["file_name"][:200]},
        )
        try:
            provider, result, attempts = self.call_provider("fileStorage", tenant, "store", {"file": stored, "data": data}, record_id=record.id)
        except (ProviderError, NoProviderError) as error:
            self._save(record.id, status="failed", error=_describe(error), attempt_log=getattr(error, "attempts", []))
            raise
        file_record = FileRecord(
            id=record.id,
            tenant=tenant,
            key=key,
            filename=request["file_name"],
            content_type=content_type,
            size=len(data),
            checksum=stored.checksum,
            category=request["category"],
            file_type=request["file_type"],
            meta=request["metadata"],
            provider=provider,
            url=result.url if result is not None else None,
            created_at=utcnow(),
        )
        with self.db.session() as session:
            session.add(file_record)
        self._save(record.id, status="succeeded", provider=provider, provider_reference=key, result={"key": key, "url": file_record.url}, attempt_log=attempts)
        return self.file_view(file_record)

    def file_view(self, file_record: FileRecord) -> dict[str, Any]:
        return {"success": True, **file_record.to_dict(download_url=f"/api/integrations/files/{file_record.id}/content")}

    def get_file(self, file_id: str, tenant: str) -> FileRecord:
        with self.db.session() as session:
            file_record = session.get(FileRecord, file_id)
        if file_record is None or file_record.tenant != tenant or file_record.deleted_at is not None:
            raise NotFound(f"No file with id {file_id}")
        return file_record

    def list_files(self, tenant: str, category: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[FileRecord], int]:
        with self.db.session() as session:
            query = select(FileRecord).where(FileRecord.tenant == tenant, FileRecord.deleted_at.is_(None))
            if category:
                query = query.where(FileRecord.category == category)
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = list(session.scalars(query.order_by(FileRecord.created_at.desc()).limit(limit).offset(offset)))
        return rows, total

    def download_file(self, file_id: str, tenant: str) -> tuple[FileRecord, bytes]:
        file_record = self.get_file(file_id, tenant)
        _, data, _ = self.call_provider("fileStorage", tenant, "store_read", {"key": file_record.key}, providers=[file_record.provider])
        return file_record, data

    def file_download_url(self, file_id: str, tenant: str) -> str | None:
        file_record = self.get_file(file_id, tenant)
        instance = self.registry.instance(file_record.provider, tenant)
        if self.host.hook_for(instance, "store_url") is None:
            return None
        _, url, _ = self.call_provider(
            "fileStorage", tenant, "store_url", {"key": file_record.key, "expires_in": self.config["storage_limits"]["url_expiry"]}, providers=[file_record.provider]
        )
        return url

    def delete_file(self, file_id: str, tenant: str) -> dict[str, Any]:
        file_record = self.get_file(file_id, tenant)
        _, existed, _ = self.call_provider("fileStorage", tenant, "store_delete", {"key": file_record.key}, providers=[file_record.provider])
        with self.db.session() as session:
            stored = session.get(FileRecord, file_id)
            assert stored is not None
            stored.deleted_at = utcnow()
        return {"success": True, "fileId": file_id, "deleted": True, "existedAtProvider": bool(existed)}

    # --- publish -----------------------------------------------------------------------------------

    def publish_event(
        self,
        topic: str,
        event_type: str,
        data: dict[str, Any],
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        tenant_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        raw = {"topic": topic, "eventType": event_type, "data": data, "key": key, "headers": headers or {}}
        return self.accept_event(self._tenant(tenant_id), raw, idempotency_key)

    def accept_event(self, tenant: str, raw: Any, idempotency_key: str | None = None) -> dict[str, Any]:
        self._require_running()
        request = load(EventSchema(), raw)
        payload = {"topic": request["topic"], "eventType": request["event_type"], "key": request["key"]}
        record, replayed = self._begin("event", tenant, "kafka", payload, idempotency_key, self.event_view)
        if record is None:
            return replayed  # type: ignore[return-value]
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
            provider, result, attempts = self.call_provider("kafka", tenant, "publish", {"event": event}, record_id=record.id)
        except (ProviderError, NoProviderError) as error:
            self._save(record.id, status="failed", error=_describe(error), attempt_log=getattr(error, "attempts", []))
            raise
        record = self._save(record.id, status="succeeded", provider=provider, result=to_dict(result), attempt_log=attempts)
        return self.event_view(record)

    def event_view(self, record: Record) -> dict[str, Any]:
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
        for name in self.registry.service_providers("kafka", tenant):
            instance = self.registry.instance(name, tenant)
            if self.host.hook_for(instance, "consumer_groups") is None:
                continue
            _, found, _ = self.call_provider("kafka", tenant, "consumer_groups", {}, providers=[name])
            groups.extend(
                {**group, "provider": name}
                for group in found or []
                if str(group.get("groupId", "")).startswith((f"{tenant}.", f"{tenant}-"))
            )
        return groups

    # --- sync --------------------------------------------------------------------------------------

    def sync_external_data(
        self,
        tenant_id: str | None,
        data_type: str,
        options: dict[str, Any] | None = None,
        *,
        provider: str | None = None,
        asynchronous: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        raw = {"dataType": data_type, "options": options or {}, "provider": provider, "async": asynchronous}
        view, _queued = self.accept_sync(self._tenant(tenant_id), raw, idempotency_key)
        return view

    def accept_sync(self, tenant: str, raw: Any, idempotency_key: str | None = None, *, schema: SyncSchema | None = None) -> tuple[dict[str, Any], bool]:
        self._require_running()
        request = load(schema or SyncSchema(), raw)
        if request["provider"] and (request["provider"] not in self.registry.slots or self.registry.slots[request["provider"]].capability != "sync"):
            raise ValidationError({"provider": [f"no sync provider named {request['provider']!r}"]})
        existing = self._existing(tenant, "sync", idempotency_key)
        if existing is not None:
            return self.sync_view(existing), existing.status == "queued"
        if not request["asynchronous"]:
            self._hit_rate_limit(tenant, "externalAPI", 1)
        payload = {"dataType": request["data_type"], "options": request["options"], "provider": request["provider"]}
        record = self._new_record("sync", tenant, "externalAPI", payload, idempotency_key, "queued" if request["asynchronous"] else "running")
        if record is None:
            existing = self._existing(tenant, "sync", idempotency_key)
            assert existing is not None
            return self.sync_view(existing), existing.status == "queued"
        if request["asynchronous"]:
            self.jobs.enqueue(record.id)
            return self.sync_view(record), True
        record = self._run_sync(record, inline=True)
        return self.sync_view(record), False

    def _run_sync(self, record: Record, *, inline: bool) -> Record:
        payload = record.payload
        providers = [payload["provider"]] if payload.get("provider") else None
        sync_request = SyncRequest(id=record.id, tenant=record.tenant, data_type=payload["dataType"], options=payload["options"])
        try:
            provider, result, attempts = self.call_provider("externalAPI", record.tenant, "sync", {"request": sync_request}, providers=providers, record_id=record.id)
        except PermanentError as error:
            self._save(record.id, status="failed", error=_describe(error))
            if inline:
                raise
            return self.get_record(record.id, record.tenant)
        except (ProviderError, NoProviderError) as error:
            if inline:
                self._save(record.id, status="failed", error=_describe(error), attempt_log=getattr(error, "attempts", []))
                raise
            self._requeue_or_die(record, _describe(error))
            return self.get_record(record.id, record.tenant)
        snapshot_id = None
        if payload["dataType"] == "inventory":
            snapshot_id = self._snapshot(record.tenant, provider, record.id, result.records)
        summary = {"count": result.count, "records": result.records, "cursor": result.cursor, "snapshotId": snapshot_id, "provider": provider}
        return self._save(record.id, status="succeeded", provider=provider, result=summary, attempt_log=attempts, error=None)

    def sync_view(self, record: Record) -> dict[str, Any]:
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

    def _snapshot(self, tenant: str, provider: str, record_id: str | None, items: list[dict[str, Any]]) -> str:
        snapshot = InventorySnapshot(id=new_id("snp"), tenant=tenant, provider=provider, record_id=record_id, taken_at=utcnow(), item_count=len(items), items=items)
        with self.db.session() as session:
            session.add(snapshot)
        return snapshot.id

    def sync_all_inventory(self, tenant_id: str | None = None) -> dict[str, Any]:
        """Take an inventory snapshot from every sync provider (each is a separate system, so this is
        not failover: all of them are asked). Returns per-provider counts or errors."""
        tenant = self._tenant(tenant_id)
        self._require_running()
        results: dict[str, Any] = {}
        for name in self.registry.service_providers("externalAPI", tenant):
            request = SyncRequest(id=new_id("syn"), tenant=tenant, data_type="inventory")
            try:
                _, result, _ = self.call_provider("externalAPI", tenant, "sync", {"request": request}, providers=[name])
            except (ProviderError, NoProviderError) as error:
                results[name] = {"success": False, "error": _describe(error)}
                continue
            snapshot_id = self._snapshot(tenant, name, None, result.records)
            results[name] = {"success": True, "count": result.count, "snapshotId": snapshot_id}
        return results

    def inventory_snapshots(self, tenant: str, provider: str | None = None, limit: int = 20) -> list[InventorySnapshot]:
        with self.db.session() as session:
            query = select(InventorySnapshot).where(InventorySnapshot.tenant == tenant)
            if provider:
                query = query.where(InventorySnapshot.provider == provider)
            return list(session.scalars(query.order_by(InventorySnapshot.taken_at.desc()).limit(limit)))

    def get_snapshot(self, snapshot_id: str, tenant: str) -> InventorySnapshot:
        with self.db.session() as session:
            snapshot = session.get(InventorySnapshot, snapshot_id)
        if snapshot is None or snapshot.tenant != tenant:
            raise NotFound(f"No inventory snapshot with id {snapshot_id}")
        return snapshot

    def register_integration(self, name: str, provider: object) -> None:
        """Add an already-built provider (seed: ``manager.register_integration("shopify", shopify)``).
        It joins the end of its capability's services' provider lists."""
        with self._lock:
            slot = self.registry.add(name, provider)
            for key, info in SERVICES.items():
                if info.capability == slot.capability and (info.channel is None or info.channel in slot.channels):
                    service = self.config["services"].setdefault(key, {"providers": self.registry.service_providers(key), "enabled": True})
                    if name not in service["providers"]:
                        service["providers"].append(name)

    # --- webhooks ----------------------------------------------------------------------------------

    def handle_webhook(self, provider_name: str, webhook: WebhookRequest, tenant: str | None = None) -> dict[str, Any]:
        slot = self.registry.slots.get(provider_name)
        if slot is None:
            raise NotFound(f"No provider named {provider_name}")
        instance = self.registry.instance(provider_name, tenant)
        function = self.host.hook_for(instance, "handle_webhook")
        if function is None:
            raise NotFound(f"Provider {provider_name} does not accept webhooks")
        started = time.perf_counter()
        events = function(webhook=webhook)
        received = duplicates = updated = 0
        for event in events or []:
            received += 1
            try:
                with self.db.session() as session:
                    session.add(WebhookEventSeen(provider=provider_name, event_id=event.event_id, received_at=utcnow()))
            except IntegrityError:
                duplicates += 1
                continue
            if self._apply_webhook_event(provider_name, event):
                updated += 1
        service = next(
            (key for key, info in SERVICES.items() if info.capability == slot.capability and (info.channel is None or info.channel in slot.channels)),
            "externalAPI",
        )
        self._observe(service, slot.capability or "", provider_name, "webhook", "success", (time.perf_counter() - started) * 1000, tenant, None, f"{received} events")
        return {"received": received, "duplicates": duplicates, "updated": updated}

    def _apply_webhook_event(self, provider_name: str, event: Any) -> bool:
        with self.db.session() as session:
            reference = session.get(ProviderReference, (provider_name, event.reference))
            if reference is None:
                log.info("webhook event %s from %s matches no record", event.event_id, provider_name)
                return False
            record = session.get(Record, reference.record_id)
            if record is None:
                return False
            if record.kind == "notification" and reference.recipient_index is not None:
                outcome = session.get(RecipientOutcome, (record.id, reference.recipient_index))
                if outcome is None:
                    return False
                outcome.delivery_status = event.status
                outcome.delivery_detail = redact({"event": event.type, "eventId": event.event_id, **(event.details or {})})
                outcome.updated_at = utcnow()
                if event.status in ("bounced", "failed", "undelivered", "dropped"):
                    outcome.status = "failed"
                    outcome.error = f"{event.status} (reported by {provider_name})"
            else:
                result = dict(record.result or {})
                result["providerStatus"] = event.status
                result["events"] = [*result.get("events", []), {"eventId": event.event_id, "status": event.status, "type": event.type}]
                record.result = result
            record.updated_at = utcnow()
            return True

    # --- health, status, metrics -------------------------------------------------------------------

    def provider_health(self, names: list[str], tenant: str | None = None) -> dict[str, dict[str, Any]]:
        """Run the providers' health hooks concurrently (each bounded by HEALTH_TIMEOUT)."""
        details: dict[str, dict[str, Any]] = {}
        pending: dict[str, tuple[Any, str]] = {}
        for name in dict.fromkeys(names):
            slot = self.registry.slots.get(name)
            if slot is None:
                details[name] = {"status": "error", "message": "not configured"}
                continue
            try:
                instance = self.registry.instance(name, tenant)
            except ProviderError as error:
                details[name] = {"status": "error", "message": _describe(error), "type": slot.type_name, "circuit": "closed"}
                continue
            breaker_state = self.breakers.state(name)
            function = self.host.hook_for(instance, "health")
            if function is None:
                details[name] = {"status": "success", "message": "Configuration valid", "type": slot.type_name, "circuit": breaker_state}
            else:
                pending[name] = (self._health_pool.submit(function), breaker_state)
        deadline = time.monotonic() + HEALTH_TIMEOUT
        for name, (future, breaker_state) in pending.items():
            try:
                outcome = future.result(timeout=max(0.0, deadline - time.monotonic()))
                if not isinstance(outcome, HealthResult):
                    outcome = HealthResult("error", f"health() returned {type(outcome).__name__}, not HealthResult")
            except FutureTimeout:
                outcome = HealthResult("error", f"health check took longer than {HEALTH_TIMEOUT:.0f}s")
            except Exception as error:
                outcome = HealthResult("error", _describe(error))
            details[name] = {"status": outcome.status, "message": redact_text(outcome.message), "type": self.registry.slots[name].type_name, "circuit": breaker_state}
        for detail in details.values():
            if detail.get("circuit") == "open":
                detail.update(status="error", message=f"circuit open ({detail['message']})")
        return details

    def service_health(self, service: str, tenant: str | None = None, checks: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        key = service_key(service)
        if key is None:
            raise NotFound(f"No service named {service}; services: {', '.join(SERVICES)}")
        names = self.registry.service_providers(key, tenant)
        if self.state != "running":
            return {"serviceName": key, "status": "shutdown", "details": {}}
        if not names:
            return {"serviceName": key, "status": "unhealthy", "error": f"no provider configured for {key}", "details": {}}
        checks = checks if checks is not None else self.provider_health(names, tenant)
        details = {name: checks[name] for name in names}
        healthy = any(detail["status"] == "success" for detail in details.values())
        view = {"serviceName": key, "status": "healthy" if healthy else "unhealthy", "details": details}
        if not healthy:
            view["error"] = "; ".join(f"{name}: {detail['message']}" for name, detail in details.items())
        return view

    def health(self, tenant: str | None = None) -> dict[str, Any]:
        every_provider = [name for key in SERVICES for name in self.registry.service_providers(key, tenant)]
        checks = self.provider_health(every_provider, tenant)
        reports = {key: self.service_health(key, tenant, checks) for key in SERVICES}
        return {key: {k: v for k, v in report.items() if k != "serviceName"} for key, report in reports.items()}

    def status(self, tenant: str | None = None) -> dict[str, Any]:
        health = self.health(tenant)
        services = {}
        counts = {"healthy": 0, "unhealthy": 0, "error": 0}
        for key, report in health.items():
            info = SERVICES[key]
            status = report["status"]
            counts[status if status in counts else "error"] += 1
            services[key] = {"status": report["status"], "name": info.name, "type": info.type}
        return {"total": len(services), **counts, "state": self.state, "services": services}

    def service_info(self, service: str, tenant: str | None = None) -> dict[str, Any]:
        key = service_key(service)
        if key is None:
            raise NotFound(f"No service named {service}; services: {', '.join(SERVICES)}")
        info = SERVICES[key]
        names = self.registry.service_providers(key, tenant)
        providers = []
        dependencies: list[str] = []
        for name in names:
            slot = self.registry.slots.get(name)
            if slot is None:
                continue
            env_settings = getattr(slot.provider_class, "env_settings", {}) if slot.provider_class else {}
            dependencies.extend(variable for variable in env_settings.values() if variable not in dependencies)
            providers.append(
                {
                    "name": name,
                    "type": slot.type_name,
                    "priority": len(providers) + 1,
                    "available": slot.instance is not None,
                    "error": slot.error,
                    "settings": {k: ("[REDACTED]" if k in slot.secret_settings else redact(v, k)) for k, v in slot.resolved.items()},
                    "circuit": self.breakers.state(name),
                }
            )
        configured = self.config["services"].get(key, {})
        status = "shutdown" if self.state != "running" else ("disabled" if not configured.get("enabled", True) else ("active" if any(p["available"] for p in providers) else "inactive"))
        view = {
            "name": info.name,
            "key": key,
            "type": info.type,
            "capability": info.capability,
            "status": status,
            "dependencies": dependencies,
            "providers": providers,
            "rateLimit": self.rate_limits.describe(tenant or self.config["default_tenant"], key),
        }
        if info.channel:
            view["templates"] = self.templates.names(info.channel, tenant)
        return view

    def metrics_summary(self, tenant: str | None = None, window: int = 1000) -> dict[str, Any]:
        """Per service: providers, templates and status, as in the seed; plus per-provider call counts,
        error rate and latency percentiles over the last ``window`` audited calls."""
        summary: dict[str, Any] = {}
        for key, info in SERVICES.items():
            names = self.registry.service_providers(key, tenant)
            entry: dict[str, Any] = {
                "providers": names,
                "status": "active" if self.state == "running" and names else "inactive",
                "stats": {name: self._provider_stats(key, name, window) for name in names},
            }
            if info.channel:
                entry["transporters" if key == "email" else "channels"] = names
                entry["templates"] = self.templates.names(info.channel, tenant)
            summary[key] = entry
        return summary

    def _provider_stats(self, service: str, provider: str, window: int) -> dict[str, Any]:
        with self.db.session() as session:
            rows = session.execute(
                select(AuditEntry.outcome, AuditEntry.latency_ms)
                .where(AuditEntry.service == service, AuditEntry.provider == provider)
                .order_by(AuditEntry.id.desc())
                .limit(window)
            ).all()
        calls = len(rows)
        errors = sum(1 for outcome, _ in rows if outcome != "success")
        latencies = sorted(latency for _, latency in rows if latency is not None)
        stats: dict[str, Any] = {"calls": calls, "errors": errors, "errorRate": round(errors / calls, 4) if calls else 0.0}
        if len(latencies) >= 2:
            cuts = statistics.quantiles(latencies, n=100, method="inclusive")
            stats.update(p50Ms=round(cuts[49], 2), p95Ms=round(cuts[94], 2), p99Ms=round(cuts[98], 2))
        elif latencies:
            stats.update(p50Ms=latencies[0], p95Ms=latencies[0], p99Ms=latencies[0])
        return stats




def _describe(error: BaseException) -> str:
    """An error as one safe line: its class and message, with secrets and personal data masked."""
    if isinstance(error, HubError):
        code = getattr(error, "provider_code", None)
        text = f"{error.message} ({code})" if code else error.message
    else:
        text = f"{type(error).__name__}: {error}"
    return redact_text(text)


def _check_notify_result(outcome: Any, expected: int, provider: str) -> None:
    if not isinstance(outcome, NotifyResult) or len(outcome.results) != expected:
        got = len(outcome.results) if isinstance(outcome, NotifyResult) else type(outcome).__name__
        raise ProviderError(f"provider {provider} broke the notify contract: {got} results for {expected} recipients")


TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


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


def _insert_ignoring_duplicates(session: Any, table: Any) -> Any:
    """An INSERT that skips rows whose key exists: a provider may reuse a message id (a retried send),
    and failing after the message went out would send it again."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        return insert(table).prefix_with("IGNORE")  # MySQL/MariaDB
    return dialect_insert(table).on_conflict_do_nothing()


def _outcome(
    record_id: str,
    index: int,
    recipient: dict[str, Any],
    channel: str,
    address: str | None,
    status: str,
    provider: str | None = None,
    provider_message_id: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A ``RecipientOutcome`` row as a dict: bulk sends insert thousands of these with executemany."""
    return {
        "record_id": record_id,
        "idx": index,  # the column's name (Core executemany, not the ORM)
        "name": recipient.get("name"),
        "channel": channel,
        "address": address,
        "status": status,
        "provider": provider,
        "provider_message_id": provider_message_id,
        "error": error,
        "delivery_status": None,
        "delivery_detail": None,
        "updated_at": utcnow(),
    }


def _mask_payment_method(method: str | None) -> str | None:
    if method and sum(ch.isdigit() for ch in method) >= 12:
        digits = "".join(ch for ch in method if ch.isdigit())
        return f"card ****{digits[-4:]}"
    return method


def _content_type_allowed(content_type: str, allowed: list[str]) -> bool:
    if not allowed:
        return True
    family = content_type.split("/")[0] + "/*"
    return content_type in allowed or family in allowed
