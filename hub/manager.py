"""``IntegrationManager``: the hub as a Python library, a thin facade over the capability services.

Its methods take Python arguments and return the same views the REST API answers with. The work is done by
the services in :mod:`hub.services`, on the shared :class:`hub.runtime.Runtime`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from os import PathLike
from typing import Any, BinaryIO

from hub.capabilities import InventoryUpdate, Subscription
from hub.config import service_key
from hub.records import AuditEntry, InventorySnapshot, Record
from hub.runtime import Runtime, ServicesShutDown
from hub.services.alerts import AlertService
from hub.services.health import HealthService
from hub.services.inventory import Override
from hub.services.notify import NotificationRequest, NotifyService
from hub.services.pay import PayService
from hub.services.publish import PublishService
from hub.services.store import Download, StoreService
from hub.services.sync import PushJob, SyncJob, SyncService
from hub.services.sync_store import Snapshot
from hub.services.webhooks import WebhookService

__all__ = ["IntegrationManager", "ServicesShutDown"]


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
        self.runtime = runtime = Runtime(config, environ=environ, plugins=plugins, entry_points=entry_points)
        self.notify = NotifyService(runtime)
        self.publish = PublishService(runtime)
        self.publish.manager = self
        self.pay = PayService(runtime, events=self.publish)
        self.store = StoreService(runtime)
        self.sync = SyncService(runtime, self.publish, self.notify)
        self.health_service = HealthService(runtime, self.notify.templates)
        self.alerts = AlertService(runtime, self.notify)
        self.webhooks = WebhookService(
            runtime, {"notification": self.notify, "payment": self.pay, "refund": self.pay, "sync": self.sync}, inventory=self.sync.inventory
        )

    # The runtime's parts, for embedding code and tests.
    config = property(lambda self: self.runtime.config)
    environ = property(lambda self: self.runtime.environ)
    db = property(lambda self: self.runtime.db)
    tokens = property(lambda self: self.runtime.tokens)
    registry = property(lambda self: self.runtime.registry)
    host = property(lambda self: self.runtime.host)
    breakers = property(lambda self: self.runtime.breakers)
    rate_limits = property(lambda self: self.runtime.rate_limits)
    jobs = property(lambda self: self.runtime.jobs)
    metrics = property(lambda self: self.runtime.metrics)
    templates = property(lambda self: self.notify.templates)
    state = property(lambda self: self.runtime.state)

    # --- lifecycle ------------------------------------------------------------------------------

    def start_workers(self, workers: int | None = None) -> None:
        self.runtime.start_workers(workers)

    def stop_workers(self) -> None:
        self.runtime.jobs.stop_workers()

    def initialize(self) -> dict[str, Any]:
        return self.health_service.initialize()

    def shutdown(self) -> dict[str, Any]:
        return self.health_service.shutdown()

    def close(self) -> None:
        self.runtime.close()  # workers stop first: no handler is in use once they have
        self.publish.close_handlers()
        self.health_service.pool.shutdown(wait=False)

    def run_record(self, record_id: str) -> None:
        """Run one queued record now, in this thread (what a worker does)."""
        self.runtime.run_record(record_id)

    def recover_unfinished(self, older_than: float = 60) -> int:
        return self.runtime.ledger.recover_unfinished(older_than)

    def run_schedules(self, now: datetime) -> list[str]:
        return self.sync.run_schedules(now)

    # --- notify ---------------------------------------------------------------------------------

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
        request = NotificationRequest(type, list(recipients or []), template, dict(data or {}), priority, list(fallback_services or []), asynchronous)
        view, _queued = self.notify.send(self.runtime.tenant(tenant_id), request, idempotency_key)
        return view

    # --- pay ------------------------------------------------------------------------------------

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
        capture: bool = True,
    ) -> dict[str, Any]:
        """Charge a payment (``capture=False``: authorise only, then :meth:`capture_payment`). Returns the
        payment's view; ``status`` ``processing`` means the outcome is not known yet (looked up later)."""
        raw = {"amount": str(amount), "currency": currency, "gateway": gateway, "orderId": order_id, "paymentMethod": payment_method}
        raw.update(customer=customer or {}, description=description, metadata=metadata or {}, capture=capture)
        return self.pay.accept(self.runtime.tenant(tenant_id), raw, idempotency_key)

    def capture_payment(self, payment_id: str, amount: Decimal | float | str | None = None, *, tenant_id: str | None = None) -> dict[str, Any]:
        """Take all (``amount=None``) or part of an authorised payment; the rest is released."""
        return self.pay.capture(self.runtime.tenant(tenant_id), payment_id, {"amount": None if amount is None else str(amount)})

    def cancel_payment(self, payment_id: str, reason: str | None = None, *, tenant_id: str | None = None) -> dict[str, Any]:
        """Cancel a payment that has taken no money (an authorisation, one requiring action)."""
        return self.pay.cancel(self.runtime.tenant(tenant_id), payment_id, {"reason": reason})

    def payment_status(self, payment_id: str, *, refresh: bool = False, tenant_id: str | None = None) -> dict[str, Any]:
        """A payment's view; ``refresh`` asks its gateway for the status first."""
        return self.pay.get(self.runtime.tenant(tenant_id), payment_id, refresh=refresh)

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
        return self.pay.accept_refund(self.runtime.tenant(tenant_id), payment_id, raw, idempotency_key)

    # --- store ----------------------------------------------------------------------------------

    def upload_file(
        self,
        file_name: str,
        data: bytes | BinaryIO,
        content_type: str | None = None,
        category: str = "general",
        file_type: str | None = None,
        metadata: dict[str, str] | None = None,
        *,
        size: int | None = None,
        tenant_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Store ``data``: bytes, or a binary file object read in chunks (never whole) and left open.
        ``size`` is its length when known (checked: a shorter or longer stream fails the upload)."""
        raw = {"fileName": file_name, "contentType": content_type, "category": category, "fileType": file_type, "metadata": metadata or {}}
        return self.store.accept_upload(self.runtime.tenant(tenant_id), raw, data, idempotency_key, size=size)

    def download_file(self, file_id: str, *, byte_range: tuple[int, int] | None = None, tenant_id: str | None = None) -> Download:
        """Open a file (or the inclusive ``byte_range``) for reading: ``with hub.download_file(id) as download:
        shutil.copyfileobj(download.stream, target)``; ``download.file`` is its record."""
        return self.store.download(file_id, self.runtime.tenant(tenant_id), byte_range)

    # --- publish --------------------------------------------------------------------------------

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
        return self.publish.accept(self.runtime.tenant(tenant_id), raw, idempotency_key)

    def publish_events(self, events: list[dict[str, Any]], *, tenant_id: str | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        """Publish a batch; each item is ``{"topic", "eventType", "data", "key"?, "headers"?}``."""
        return self.publish.accept_batch(self.runtime.tenant(tenant_id), {"events": events}, idempotency_key)

    def subscribe(self, topic: str | list[str], group: str, handler: Callable[..., Any] | str, *, tenant_id: str | None = None, **options: Any) -> Subscription:
        """Consume ``topic`` as consumer ``group`` (tenant-prefixed if it is not), calling ``handler(record,
        subscription)`` for each record, at-least-once, in whichever hub process holds the subscription's lease.
        ``options``: ``name``, ``start``, ``provider``, ``batch_size``, ``max_attempts``, ``backoff``,
        ``dead_letter_topic``, ``lease_seconds`` (see ``subscriptions:`` in hub.yaml)."""
        topics = [topic] if isinstance(topic, str) else list(topic)
        return self.publish.subscribe(self.runtime.tenant(tenant_id), topics, group, handler, **options)

    def unsubscribe(self, name: str) -> bool:
        return self.publish.remove_subscription(name)

    def consumer_groups(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        return self.publish.consumer_groups(self.runtime.tenant(tenant_id))

    def reset_offsets(self, group: str, topic: str, to: str, *, timestamp: datetime | None = None, offsets: dict[int, int] | None = None, tenant_id: str | None = None) -> dict[str, Any]:
        raw = {"topic": topic, "to": to, "timestamp": timestamp.isoformat() if timestamp else None, "offsets": {str(p): o for p, o in (offsets or {}).items()}}
        return self.publish.reset_offsets(self.runtime.tenant(tenant_id), group, raw)

    # --- sync -----------------------------------------------------------------------------------

    def sync_external_data(
        self,
        tenant_id: str | None,
        data_type: str,
        options: dict[str, Any] | None = None,
        *,
        provider: str | None = None,
        asynchronous: bool = False,
        idempotency_key: str | None = None,
        full_resync: bool = False,
        page_size: int | None = None,
        max_pages: int | None = None,
        max_records: int | None = None,
    ) -> dict[str, Any]:
        """Sync one stream (``data_type``) page by page from its saved cursor (``full_resync``: from the
        beginning); returns the job view (queued when ``asynchronous``)."""
        job = SyncJob(data_type, dict(options or {}), provider, asynchronous, full_resync, page_size, max_pages, max_records)
        view, _queued = self.sync.start(self.runtime.tenant(tenant_id), job, idempotency_key)
        return view

    def sync_all_inventory(self, tenant_id: str | None = None, *, full_resync: bool = False) -> dict[str, Any]:
        """Sync inventory from every sync provider now: ``{provider: {success, count, snapshotId, jobId}}``."""
        return self.sync.sync_all_inventory(self.runtime.tenant(tenant_id), full_resync=full_resync)

    def push_inventory(
        self,
        updates: list[InventoryUpdate | dict[str, Any]],
        *,
        provider: str | None = None,
        tenant_id: str | None = None,
        asynchronous: bool = False,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Set or adjust quantities in one external system (``InventoryUpdate`` or ``{"sku", "location",
        "quantity", "mode"}``); returns the push view with one result per update."""
        job = PushJob(list(updates), provider, asynchronous, dict(metadata or {}))
        view, _queued = self.sync.start_push(self.runtime.tenant(tenant_id), job, idempotency_key)
        return view

    def inventory_levels(
        self, tenant_id: str | None = None, *, provider: str | None = None, sku: str | None = None, location: str | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        """Current levels per SKU, location and source, each with ``ageSeconds`` and ``stale``."""
        tenant = self.runtime.tenant(tenant_id)
        levels = self.sync.store.levels(tenant, provider=provider, sku=sku, location=location, limit=limit)
        return self.sync.inventory.level_views(tenant, levels)

    def override_inventory(
        self, sku: str, location: str, quantity: float, *, reason: str, by: str = "python", push: bool = True, tenant_id: str | None = None
    ) -> dict[str, Any]:
        """Set a level by hand (recorded with ``by`` and ``reason``) and push it to every source that
        accepts writes; returns the override with the queued push jobs."""
        return self.sync.inventory.override(self.runtime.tenant(tenant_id), Override(sku, location, quantity, reason, by, push))

    def inventory_history(
        self, sku: str, *, location: str | None = None, provider: str | None = None, since: datetime | None = None,
        until: datetime | None = None, limit: int = 500, tenant_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every change of ``sku``'s levels, oldest first, with its origin (sync, push, webhook, override)."""
        return self.sync.inventory.history(self.runtime.tenant(tenant_id), sku, location=location, provider=provider, since=since, until=until, limit=limit)

    def inventory_discrepancies(self, tenant_id: str | None = None, *, status: str | None = "open", sku: str | None = None) -> list[dict[str, Any]]:
        """Where two sources disagree about a SKU at a location (``status``: open, resolved or None for both)."""
        return self.sync.inventory.discrepancies(self.runtime.tenant(tenant_id), status=status, sku=sku)

    def inventory_snapshots(self, tenant: str, provider: str | None = None, limit: int = 20) -> list[InventorySnapshot]:
        return self.sync.snapshots(tenant, provider, limit)

    def get_snapshot(self, snapshot_id: str, tenant: str) -> Snapshot:
        """A snapshot with ``items`` (the rows its run stored)."""
        return self.sync.snapshot(snapshot_id, tenant)

    # --- providers, records, audit, health --------------------------------------------------------

    def register_integration(self, name: str, provider: object) -> None:
        """Add an already-built provider (seed: ``manager.register_integration("shopify", shopify)``).
        It joins the end of its capability's services' provider lists."""
        self.runtime.register_integration(name, provider)

    def get_record(self, record_id: str, tenant: str, kind: str | None = None) -> Record:
        return self.runtime.ledger.get(record_id, tenant, kind)

    def list_records(self, tenant: str, kind: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0, **filters: Any) -> list[Record]:
        """A page of the tenant's records, newest first; ``filters``: ``provider``, ``created_from``,
        ``created_to`` (datetimes) and ``payload_equals`` (see :meth:`RecordLedger.list`)."""
        return self.runtime.ledger.list(tenant, kind, status, limit, offset, **filters)

    def audit_log(self, tenant: str, *, provider: str | None = None, outcome: str | None = None, service: str | None = None, limit: int = 100) -> list[AuditEntry]:
        return self.runtime.audit.query(tenant, provider=provider, outcome=outcome, service=service_key(service) if service else None, limit=limit)

    def health(self, tenant: str | None = None) -> dict[str, Any]:
        return self.health_service.health(tenant)

    def service_health(self, service: str, tenant: str | None = None) -> dict[str, Any]:
        return self.health_service.service_health(service, tenant)

    def status(self, tenant: str | None = None) -> dict[str, Any]:
        return self.health_service.status(tenant)

    def service_info(self, service: str, tenant: str | None = None) -> dict[str, Any]:
        return self.health_service.service_info(service, tenant)

    def metrics_summary(self, tenant: str | None = None) -> dict[str, Any]:
        return self.health_service.metrics_summary(tenant)
