"""Sync jobs and inventory snapshots."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request

from hub.api.middleware import idempotency_key, idempotent, json_body, list_records, manager, ok, paging

blueprint = Blueprint("sync", __name__)


@blueprint.post("/sync")
@idempotent
def create_sync_job() -> Any:
    """Start a sync job (202; ``async: false`` runs it now and answers 200)."""
    view, queued = manager().sync.accept(g.tenant, json_body(), idempotency_key())
    return ok(view, 202 if queued else 200)


@blueprint.get("/sync")
def list_sync_jobs() -> Any:
    return list_records("sync", manager().sync.view)


@blueprint.get("/sync/<record_id>")
def get_sync_job(record_id: str) -> Any:
    hub = manager()
    return ok(hub.sync.view(hub.get_record(record_id, g.tenant, "sync")))


@blueprint.post("/inventory/sync")
@idempotent(with_record=False)
def sync_inventory() -> Any:
    """Snapshot inventory from every sync provider."""
    return ok(manager().sync.sync_all_inventory(g.tenant))


@blueprint.get("/inventory/snapshots")
def list_snapshots() -> Any:
    limit, _ = paging()
    snapshots = manager().sync.snapshots(g.tenant, request.args.get("provider"), limit)
    return ok({"items": [snapshot.to_dict(with_items=False) for snapshot in snapshots]})


@blueprint.get("/inventory/snapshots/<snapshot_id>")
def get_snapshot(snapshot_id: str) -> Any:
    return ok(manager().sync.snapshot(snapshot_id, g.tenant).to_dict())
