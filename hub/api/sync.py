"""Sync jobs, synced records and checkpoints; inventory levels, history, snapshots and pushed updates."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request

from hub.api.middleware import idempotency_key, idempotent, json_body, list_records, manager, ok, paging
from hub.errors import ValidationError
from hub.schemas import (
    DiscrepancyListSchema,
    InventoryHistorySchema,
    InventoryOverrideSchema,
    InventorySyncSchema,
    load,
)
from hub.services.inventory import Override

blueprint = Blueprint("sync", __name__)


@blueprint.post("/sync")
@idempotent
def create_sync_job() -> Any:
    """Start a sync job (202; ``async: false`` runs it now and answers 200)."""
    view, queued = manager().sync.accept(g.tenant, json_body(), idempotency_key())
    return ok(view, 202 if queued else 200)


@blueprint.get("/sync")
def list_sync_jobs() -> Any:
    """The tenant's sync jobs, newest first."""
    return list_records("sync", manager().sync.view)


@blueprint.get("/sync/checkpoints")
def list_sync_checkpoints() -> Any:
    """Where each stream's next sync starts (``?provider=&dataType=``)."""
    checkpoints = manager().sync.store.checkpoints(g.tenant, request.args.get("provider"), request.args.get("dataType"))
    return ok({"items": [checkpoint.to_dict() for checkpoint in checkpoints]})


@blueprint.get("/sync/metrics")
def get_sync_metrics() -> Any:
    """Per source and stream: runs, failures, records, records/s, errors and lag (seconds since read to its end)."""
    return ok({"items": manager().sync.metrics(g.tenant)})


@blueprint.get("/sync/records")
def list_synced_records() -> Any:
    """Stored records of one stream by primary key (``?dataType=suppliers&provider=&limit=&offset=``)."""
    data_type = request.args.get("dataType")
    if not data_type:
        raise ValidationError({"dataType": ["required: the stream to list"]})
    limit, offset = paging()
    rows = manager().sync.store.records(g.tenant, data_type, request.args.get("provider"), limit, offset)
    items = [{"provider": row.provider, "key": row.key, "record": row.data, "jobId": row.record_id, "syncedAt": row.synced_at.isoformat()} for row in rows]
    return ok({"items": items, "limit": limit, "offset": offset})


@blueprint.get("/sync/<record_id>")
def get_sync_job(record_id: str) -> Any:
    hub = manager()
    return ok(hub.sync.view(hub.get_record(record_id, g.tenant, "sync")))


@blueprint.post("/inventory/sync")
@idempotent(with_record=False)
def sync_inventory() -> Any:
    """Sync inventory from every sync provider now (``fullResync: true`` ignores the saved cursors)."""
    body = load(InventorySyncSchema(), json_body() or {})
    return ok(manager().sync.sync_all_inventory(g.tenant, full_resync=body["full_resync"]))


@blueprint.post("/inventory/updates")
@idempotent
def push_inventory_updates() -> Any:
    """Send quantity updates to a sync provider (200; 202 when queued: ``async: true`` or updates to retry)."""
    view, queued = manager().sync.accept_push(g.tenant, json_body(), idempotency_key())
    return ok(view, 202 if queued else 200)


@blueprint.get("/inventory/updates")
def list_inventory_updates() -> Any:
    """The tenant's pushed updates, newest first."""
    return list_records("inventory_push", manager().sync.push_view)


@blueprint.get("/inventory/updates/<record_id>")
def get_inventory_update(record_id: str) -> Any:
    hub = manager()
    return ok(hub.sync.push_view(hub.get_record(record_id, g.tenant, "inventory_push")))


@blueprint.get("/inventory/levels")
def list_inventory_levels() -> Any:
    """Current levels per SKU, location and provider (``?provider=&sku=&location=&limit=&offset=``)."""
    limit, offset = paging()
    args = request.args
    sync = manager().sync
    levels = sync.store.levels(g.tenant, provider=args.get("provider"), sku=args.get("sku"), location=args.get("location"), limit=limit, offset=offset)
    return ok({"items": sync.inventory.level_views(g.tenant, levels), "limit": limit, "offset": offset})


@blueprint.get("/inventory/history")
def list_inventory_history() -> Any:
    """Observed levels, newest first: sync rows and pushed updates (``?provider=&sku=&location=&limit=``)."""
    limit, _ = paging()
    args = request.args
    changes = manager().sync.store.history(g.tenant, provider=args.get("provider"), sku=args.get("sku"), location=args.get("location"), limit=limit)
    return ok({"items": [change.to_dict() for change in changes]})


@blueprint.get("/inventory/discrepancies")
def list_inventory_discrepancies() -> Any:
    """Where two sources disagree about a SKU at a location (``?status=open|resolved|all&sku=``), newest first."""
    limit, offset = paging()
    query = load(DiscrepancyListSchema(), request.args.to_dict())
    status = None if query["status"] == "all" else query["status"]
    items = manager().sync.inventory.discrepancies(g.tenant, status=status, sku=query["sku"], limit=limit, offset=offset)
    return ok({"items": items, "limit": limit, "offset": offset})


@blueprint.get("/inventory/low-stock")
def list_low_stock() -> Any:
    """SKUs and locations at or below their threshold now (each alerted once when it crossed)."""
    limit, offset = paging()
    return ok({"items": manager().sync.inventory.low_stock(g.tenant, limit, offset), "limit": limit, "offset": offset})


@blueprint.put("/inventory/<sku>/<location>")
@idempotent(with_record=False)
def override_inventory_level(sku: str, location: str) -> Any:
    """Set a level by hand, recorded with who (the token) and why, and pushed to the sources that accept writes."""
    body = load(InventoryOverrideSchema(), json_body())
    token = g.token
    by = f"token:{token.name or token.prefix}"
    return ok(manager().sync.inventory.override(g.tenant, Override(sku, location, body["quantity"], body["reason"], by, body["push"])))


@blueprint.get("/inventory/<sku>/history")
def get_inventory_history(sku: str) -> Any:
    """Every change of one SKU's levels, oldest first, with its origin (``?from=&to=&location=&provider=&limit=``)."""
    limit, _ = paging()
    query = load(InventoryHistorySchema(), request.args.to_dict())
    items = manager().sync.inventory.history(g.tenant, sku, location=query["location"], provider=query["provider"], since=query["since"], until=query["until"], limit=limit)
    return ok({"sku": sku, "items": items})


@blueprint.get("/inventory/snapshots")
def list_snapshots() -> Any:
    """Inventory snapshots (one per inventory sync run that stored rows), newest first."""
    limit, _ = paging()
    snapshots = manager().sync.snapshots(g.tenant, request.args.get("provider"), limit)
    return ok({"items": [snapshot.to_dict() for snapshot in snapshots]})


@blueprint.get("/inventory/snapshots/<snapshot_id>")
def get_snapshot(snapshot_id: str) -> Any:
    """One snapshot with its items: the rows its run stored."""
    return ok(manager().sync.snapshot(snapshot_id, g.tenant).to_dict())
